//! The interval rules, as pure functions of one interval's counts: Envoy's success-rate and
//! failure-percentage outlier detection (`source/common/upstream/outlier_detection_impl.cc`),
//! as gRFC A50 specifies them for gRPC (population standard deviation; "below" and "above"
//! are strict).

use super::config::Policy;
use super::report::Reason;

/// One endpoint's completed calls in an interval.
#[derive(Debug, Clone)]
pub(crate) struct Volume<K> {
    pub(crate) key: K,
    pub(crate) successes: u64,
    pub(crate) failures: u64,
}

impl<K> Volume<K> {
    fn requests(&self) -> u64 {
        self.successes + self.failures
    }
}

/// The outliers the interval rules find in `volumes`, with each rule's enforcing percentage:
/// the success-rate rule's first, then the failure-percentage rule's (an endpoint found by
/// both is ejected once, for the first).
pub(crate) fn outliers<K: Clone>(policy: &Policy, volumes: &[Volume<K>]) -> Vec<(K, Reason, u32)> {
    let mut found = Vec::new();
    if let Some(rule) = &policy.success_rate {
        let eligible: Vec<&Volume<K>> = volumes
            .iter()
            .filter(|v| v.requests() >= u64::from(rule.base.request_volume))
            .collect();
        if eligible.len() >= rule.base.minimum_hosts as usize {
            let rate = |v: &Volume<K>| v.successes as f64 * 100.0 / v.requests() as f64;
            let n = eligible.len() as f64;
            let mean = eligible.iter().map(|v| rate(v)).sum::<f64>() / n;
            let variance = eligible
                .iter()
                .map(|v| (rate(v) - mean).powi(2))
                .sum::<f64>()
                / n;
            let threshold = mean - variance.sqrt() * rule.stdev_factor;
            for v in eligible {
                let success_rate = rate(v);
                if success_rate < threshold {
                    found.push((
                        v.key.clone(),
                        Reason::SuccessRate {
                            success_rate,
                            threshold,
                            requests: v.requests(),
                        },
                        rule.base.enforcing,
                    ));
                }
            }
        }
    }
    if let Some(rule) = &policy.failure_percentage {
        let eligible: Vec<&Volume<K>> = volumes
            .iter()
            .filter(|v| v.requests() >= u64::from(rule.base.request_volume))
            .collect();
        if eligible.len() >= rule.base.minimum_hosts as usize {
            for v in eligible {
                let failure_percent = v.failures as f64 * 100.0 / v.requests() as f64;
                if failure_percent > f64::from(rule.threshold) {
                    found.push((
                        v.key.clone(),
                        Reason::FailurePercentage {
                            failure_percent,
                            threshold: rule.threshold,
                            requests: v.requests(),
                        },
                        rule.base.enforcing,
                    ));
                }
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn volumes(counts: &[(u64, u64)]) -> Vec<Volume<usize>> {
        counts
            .iter()
            .enumerate()
            .map(|(key, &(successes, failures))| Volume {
                key,
                successes,
                failures,
            })
            .collect()
    }

    fn policy() -> Policy {
        Policy {
            failure_percentage: None,
            ..Policy::default()
        }
    }

    #[test]
    fn success_rate_below_mean_minus_factor_stdevs() {
        // Rates 100, 100, 100, 100, 50: mean 90, population stdev 20, threshold 90 - 1.9 × 20 = 52.
        let v = volumes(&[(100, 0), (100, 0), (100, 0), (100, 0), (50, 50)]);
        let found = outliers(&policy(), &v);
        assert_eq!(found.len(), 1);
        let (key, reason, enforcing) = &found[0];
        assert_eq!((*key, *enforcing), (4, 100));
        match reason {
            Reason::SuccessRate {
                success_rate,
                threshold,
                requests,
            } => {
                assert_eq!(*success_rate, 50.0);
                assert!((threshold - 52.0).abs() < 1e-9, "{threshold}");
                assert_eq!(*requests, 100);
            }
            other => panic!("{other:?}"),
        }
        // A factor of 2.5 puts the threshold at 40: no outlier.
        let mut p = policy();
        p.success_rate.as_mut().unwrap().stdev_factor = 2.5;
        assert!(outliers(&p, &v).is_empty());
    }

    #[test]
    fn success_rate_needs_minimum_hosts_with_request_volume() {
        // Only four endpoints reach 100 requests: the rule does not run.
        let v = volumes(&[(100, 0), (100, 0), (100, 0), (50, 50), (0, 99)]);
        assert!(outliers(&policy(), &v).is_empty());
        // With four, and a factor of 1: rates 100, 100, 100, 50 have mean 87.5 and stdev
        // 21.65, so the threshold is 65.85.
        let mut p = policy();
        let rule = p.success_rate.as_mut().unwrap();
        rule.base.minimum_hosts = 4;
        rule.stdev_factor = 1.0;
        let found = outliers(&p, &v);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].0, 3);
    }

    #[test]
    fn failure_percentage_above_threshold() {
        let mut p = Policy {
            success_rate: None,
            ..Policy::default()
        };
        let fp = p.failure_percentage.as_mut().unwrap();
        fp.threshold = 50;
        fp.base.minimum_hosts = 3;
        fp.base.request_volume = 10;
        // 50% exactly is not above the threshold; 51% is; an endpoint below the request
        // volume is not judged (but counts for nothing either).
        let v = volumes(&[(10, 0), (5, 5), (49, 51), (0, 9)]);
        let found = outliers(&p, &v);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].0, 2);
        assert_eq!(
            found[0].2, 0,
            "Envoy's default enforcing_failure_percentage"
        );
        fp_hosts(&mut p, 4);
        assert!(
            outliers(&p, &v).is_empty(),
            "only three endpoints have the volume"
        );
    }

    fn fp_hosts(p: &mut Policy, n: u32) {
        p.failure_percentage.as_mut().unwrap().base.minimum_hosts = n;
    }
}
