//! Stable hashing and request-key extraction for the consistent hashers.

use std::hash::{Hash, Hasher};

/// A 64-bit hash that does not depend on the process, the run or the machine: 64-bit FNV-1a
/// over the bytes that `value`'s [`Hash`] implementation writes, finished with the
/// splitmix64 mixer. The consistent hashers place endpoints with it, so that every client
/// maps a key to the same endpoint.
///
/// Integers are written little-endian at a fixed width (`usize` and `isize` as 8 bytes),
/// so they hash the same on every machine. Strings hash as their UTF-8 bytes followed by
/// the byte `0xff`, which is how the standard library's `Hash for str` writes them (it
/// has since Rust 1.0, but does not promise it); for a guarantee that does not depend on
/// it, hash the bytes with [`hash_bytes`], as [`Header`] does. A type whose `Hash`
/// implementation writes something else (pointers, a `HashMap`'s random state) is not
/// stable across processes. tower-mesh's own keys ([`InstanceId`](crate::instance::InstanceId),
/// integers, strings) are.
pub fn stable_hash<T: Hash + ?Sized>(value: &T) -> u64 {
    let mut h = StableHasher::default();
    value.hash(&mut h);
    h.finish()
}

/// 64-bit FNV-1a of raw bytes (no length prefix), finished with the splitmix64 mixer: the
/// same value everywhere, for any bytes.
pub fn hash_bytes(bytes: &[u8]) -> u64 {
    let mut h = StableHasher::default();
    h.write(bytes);
    h.finish()
}

/// The lookup table, 2 bytes a slot while endpoint indices fit (halves its cache footprint).
#[derive(Debug, Clone)]
pub(crate) enum Table {
    Small(Vec<u16>),
    Large(Vec<u32>),
}

impl Table {
    /// A table of endpoint indices below `endpoints`, narrowed to `u16` when they fit.
    pub(crate) fn new(table: Vec<u32>, endpoints: usize) -> Self {
        if endpoints <= usize::from(u16::MAX) {
            Table::Small(table.into_iter().map(|i| i as u16).collect())
        } else {
            Table::Large(table)
        }
    }

    #[inline]
    pub(crate) fn len(&self) -> usize {
        match self {
            Table::Small(t) => t.len(),
            Table::Large(t) => t.len(),
        }
    }

    #[inline]
    pub(crate) fn get(&self, c: usize) -> usize {
        match self {
            Table::Small(t) => t[c] as usize,
            Table::Large(t) => t[c] as usize,
        }
    }
}

pub(crate) fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[derive(Debug)]
struct StableHasher(u64);

impl Default for StableHasher {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for StableHasher {
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    // Fixed width, little-endian: the defaults write native-endian bytes of the platform's
    // width, which differ between machines.
    fn write_u16(&mut self, i: u16) {
        self.write(&i.to_le_bytes());
    }

    fn write_u32(&mut self, i: u32) {
        self.write(&i.to_le_bytes());
    }

    fn write_u64(&mut self, i: u64) {
        self.write(&i.to_le_bytes());
    }

    fn write_u128(&mut self, i: u128) {
        self.write(&i.to_le_bytes());
    }

    fn write_usize(&mut self, i: usize) {
        self.write(&(i as u64).to_le_bytes());
    }

    fn write_isize(&mut self, i: isize) {
        self.write(&(i as i64).to_le_bytes());
    }

    fn finish(&self) -> u64 {
        mix64(self.0)
    }
}

/// Takes the hash key from a request for [`RingHash`](super::RingHash) and
/// [`Maglev`](super::Maglev). `None` means the request has no key; the hasher's fallback
/// strategy picks instead.
///
/// Implemented for closures `Fn(&Req) -> Option<u64>` and for [`Header`].
pub trait HashKey<Req> {
    /// The request's key hash, if it has one.
    fn hash_key(&self, req: &Req) -> Option<u64>;
}

impl<F, Req> HashKey<Req> for F
where
    F: Fn(&Req) -> Option<u64>,
{
    fn hash_key(&self, req: &Req) -> Option<u64> {
        self(req)
    }
}

/// Hashes the value of one HTTP request header (for example `x-user-id`).
#[derive(Debug, Clone)]
pub struct Header(http::HeaderName);

impl Header {
    /// Key requests by the value of header `name`.
    pub fn new(name: http::HeaderName) -> Self {
        Self(name)
    }
}

impl<B> HashKey<http::Request<B>> for Header {
    fn hash_key(&self, req: &http::Request<B>) -> Option<u64> {
        req.headers().get(&self.0).map(|v| hash_bytes(v.as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_across_calls() {
        assert_eq!(stable_hash("orders-1"), stable_hash("orders-1"));
        assert_ne!(stable_hash("orders-1"), stable_hash("orders-2"));
        assert_eq!(hash_bytes(b"abc"), hash_bytes(b"abc"));
    }

    /// Known values: a change here moves every client's keys (and must not happen
    /// silently).
    #[test]
    fn fixed_values() {
        assert_eq!(hash_bytes(b""), mix64(0xcbf2_9ce4_8422_2325));
        // Integers are little-endian at a fixed width, whatever the platform.
        assert_eq!(stable_hash(&7u32), hash_bytes(&7u32.to_le_bytes()));
        assert_eq!(stable_hash(&7usize), hash_bytes(&7u64.to_le_bytes()));
        assert_eq!(stable_hash(&-1isize), hash_bytes(&(-1i64).to_le_bytes()));
        // A string is its bytes and 0xff.
        assert_eq!(stable_hash("orders-1"), hash_bytes(b"orders-1\xff"));
    }

    #[test]
    fn header_key() {
        let k = Header::new(http::HeaderName::from_static("x-user"));
        let req = http::Request::builder()
            .header("x-user", "42")
            .body(())
            .unwrap();
        assert_eq!(k.hash_key(&req), Some(hash_bytes(b"42")));
        let req = http::Request::new(());
        assert_eq!(k.hash_key(&req), None);
    }
}
