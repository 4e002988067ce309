//! Rendezvous (highest-random-weight) hashing: which live checkers check an instance.

use crate::balance::stable_hash;
use crate::instance::{InstanceId, ServiceName};

/// The weight of `checker` for the instance `service`/`id`: the same in every process.
pub(crate) fn weight(checker: &InstanceId, service: &ServiceName, id: &InstanceId) -> u64 {
    stable_hash(&(checker.as_str(), service.as_str(), id.as_str()))
}

/// Whether `me` is one of the `replicas` checkers of highest weight for the instance among
/// `live` (which must hold `me`, sorted, without duplicates). Ties, which a 64-bit hash makes
/// vanishingly rare, go to the smaller checker id.
pub(crate) fn is_owner(
    me: &InstanceId,
    live: &[InstanceId],
    replicas: usize,
    service: &ServiceName,
    id: &InstanceId,
) -> bool {
    if live.len() <= replicas {
        return true;
    }
    let mine = weight(me, service, id);
    // Count the checkers that beat `me`; `me` owns the instance if fewer than `replicas` do.
    let mut above = 0;
    for other in live {
        if other == me {
            continue;
        }
        let w = weight(other, service, id);
        if w > mine || (w == mine && other < me) {
            above += 1;
            if above >= replicas {
                return false;
            }
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: usize) -> Vec<InstanceId> {
        let mut v: Vec<InstanceId> = (0..n)
            .map(|i| format!("checker-{i}").parse().unwrap())
            .collect();
        v.sort();
        v
    }

    fn owners(
        live: &[InstanceId],
        replicas: usize,
        service: &ServiceName,
        id: &InstanceId,
    ) -> Vec<InstanceId> {
        live.iter()
            .filter(|c| is_owner(c, live, replicas, service, id))
            .cloned()
            .collect()
    }

    #[test]
    fn every_instance_has_exactly_replicas_owners() {
        let service: ServiceName = "orders".parse().unwrap();
        for n in 1..6 {
            let live = ids(n);
            for replicas in 1..4 {
                for i in 0..200 {
                    let id: InstanceId = format!("orders-{i}").parse().unwrap();
                    assert_eq!(
                        owners(&live, replicas, &service, &id).len(),
                        replicas.min(n)
                    );
                }
            }
        }
    }

    #[test]
    fn a_joining_checker_moves_about_one_in_n() {
        let service: ServiceName = "orders".parse().unwrap();
        let before = ids(4);
        let after = ids(5);
        let (mut moved, total) = (0, 10_000);
        for i in 0..total {
            let id: InstanceId = format!("orders-{i}").parse().unwrap();
            let a = owners(&before, 1, &service, &id);
            let b = owners(&after, 1, &service, &id);
            if a != b {
                // Only ever to the newcomer.
                assert_eq!(b[0].as_str(), "checker-4");
                moved += 1;
            }
        }
        // 1/5 of 10,000 is 2,000; allow a wide statistical margin.
        assert!((1_700..2_300).contains(&moved), "moved {moved}");
    }
}
