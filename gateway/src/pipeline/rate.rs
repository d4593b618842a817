//! Step 7 — rate: the grant's periodicity ("how often", DOMAIN.md §2), as a token bucket per
//! (grant, calling organisation). Stands after consent (a refused call spends no token) and
//! before the body is read and the source called.
//!
//! A bucket holds at most `max` tokens and refills at `max / period`; a call takes one. Buckets
//! live in 64 shards, each behind its own mutex held only for the arithmetic: no global lock,
//! nothing held across an await.

use std::sync::Mutex;
use std::time::Instant;

use policies::decide::RateKey;
use rustc_hash::FxHashMap;

use crate::error::{Code, Refusal};

const SHARDS: usize = 64;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

/// The buckets of one shard, by (grant, organisation).
type Shard = Mutex<FxHashMap<(u32, u32), Bucket>>;

/// All buckets.
#[derive(Debug)]
pub struct RateLimiter {
    shards: Box<[Shard]>,
}

impl Default for RateLimiter {
    fn default() -> Self {
        RateLimiter { shards: (0..SHARDS).map(|_| Mutex::new(FxHashMap::default())).collect() }
    }
}

impl RateLimiter {
    /// Takes a token for `key` at `now`, or refuses.
    pub fn take(&self, key: &RateKey, now: Instant) -> Result<(), Refusal> {
        let k = (key.grant.0, key.org.0);
        let shard = &self.shards[(k.0 as usize ^ (k.1 as usize).wrapping_mul(31)) % SHARDS];
        let Ok(mut map) = shard.lock() else { return Ok(()) };
        let max = f64::from(key.max);
        let per_sec = max / f64::from(key.period_secs.max(1));
        let b = map.entry(k).or_insert(Bucket { tokens: max, last: now });
        b.tokens = (b.tokens + now.saturating_duration_since(b.last).as_secs_f64() * per_sec).min(max);
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            let wait = ((1.0 - b.tokens) / per_sec).ceil() as u64;
            Err(Refusal::new(
                Code::RateExceeded,
                format!("the grant allows {} calls per {} s; retry in {wait} s", key.max, key.period_secs),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::time::Duration;

    use policies::compiled::{GrantId, OrgId};

    use super::*;

    #[test]
    fn a_bucket_empties_and_refills() {
        let r = RateLimiter::default();
        let key = RateKey { grant: GrantId(1), org: OrgId(2), max: 3, period_secs: 60 };
        let other = RateKey { org: OrgId(3), ..key };
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(r.take(&key, t0).is_ok());
        }
        let e = r.take(&key, t0).unwrap_err();
        assert_eq!(e.code, Code::RateExceeded);
        assert!(e.detail.contains("retry in 20 s"), "{}", e.detail);
        assert!(r.take(&other, t0).is_ok(), "buckets are per organisation");
        assert!(r.take(&key, t0 + Duration::from_secs(19)).is_err());
        assert!(r.take(&key, t0 + Duration::from_secs(21)).is_ok(), "one token back after 20 s");
    }
}
