//! Stable hashing and request-key extraction for the consistent hashers.

use std::hash::{Hash, Hasher};

/// A 64-bit hash that is the same in every process and every run (FNV-1a over the bytes,
/// finished with the splitmix64 mixer), so that every client maps a key to the same
/// endpoint.
pub fn stable_hash<T: Hash + ?Sized>(value: &T) -> u64 {
    let mut h = StableHasher::default();
    value.hash(&mut h);
    h.finish()
}

/// [`stable_hash`] of raw bytes (no length prefix).
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
