use std::hash::Hash;

use crate::balance::{Endpoints, Pick};

/// Round robin: every usable endpoint in turn, skipping those that are not ready.
///
/// O(1) per pick while endpoints are ready; ignores weights.
#[derive(Debug, Clone, Default)]
pub struct RoundRobin {
    next: usize,
}

impl RoundRobin {
    /// A round robin starting at the first endpoint.
    pub fn new() -> Self {
        Self::default()
    }
}

impl<Req> Pick<Req> for RoundRobin {
    fn rebuild<K: Hash>(&mut self, endpoints: &Endpoints<K>) {
        if self.next >= endpoints.len() {
            self.next = 0;
        }
    }

    #[inline]
    fn pick<K>(&mut self, endpoints: &Endpoints<K>, _req: &Req) -> usize {
        let n = endpoints.len();
        loop {
            let i = self.next;
            self.next = if i + 1 >= n { 0 } else { i + 1 };
            if endpoints.is_usable(i) {
                return i;
            }
        }
    }
}
