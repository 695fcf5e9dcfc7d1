//! The retry budget: retries may add at most `ratio` extra load on top of the requests that
//! came in, plus a small floor of `min_per_second` so that a quiet service can still retry.
//! Every request deposits `ratio` of a token, every retry withdraws a whole one; the floor is
//! a separate reserve that refills with time. Without a budget, retries turn an outage into a
//! retry storm (Finagle's and linkerd's design). Pure: time is passed in.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::Instant;

#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts per request, the first included.
    pub max_attempts: u32,
    /// Retries allowed per request that came in (0.2: at most 20% extra load).
    pub ratio: f64,
    pub min_per_second: f64,
    /// Most tokens deposits may stockpile.
    pub max_balance: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 3,
            ratio: 0.2,
            min_per_second: 10.0,
            max_balance: 100.0,
        }
    }
}

/// Token arithmetic is in thousandths of a retry: 0.2 x 5 must make exactly one.
const MILLI: f64 = 1000.0;

/// Shared by every worker of a service port: deposits (one per request) are a single atomic
/// add; only retries take the lock of the time-based reserve.
#[derive(Debug)]
pub struct RetryBudget {
    policy: RetryPolicy,
    balance: AtomicU64,
    reserve: Mutex<Reserve>,
}

#[derive(Debug)]
struct Reserve {
    tokens: u64,
    refilled: Instant,
}

impl RetryBudget {
    pub fn new(policy: RetryPolicy, now: Instant) -> Self {
        RetryBudget {
            policy,
            balance: AtomicU64::new(0),
            reserve: Mutex::new(Reserve {
                tokens: milli(policy.min_per_second),
                refilled: now,
            }),
        }
    }

    /// A request came in.
    pub fn deposit(&self) {
        let cap = milli(self.policy.max_balance);
        if self.balance.fetch_add(milli(self.policy.ratio), Relaxed) >= cap {
            self.balance.fetch_min(cap, Relaxed);
        }
    }

    /// Whether one retry may be made now (and if so, pays for it).
    pub fn withdraw(&self, now: Instant) -> bool {
        let one = milli(1.0);
        if self
            .balance
            .fetch_update(Relaxed, Relaxed, |balance| balance.checked_sub(one))
            .is_ok()
        {
            return true;
        }
        let mut reserve = self.reserve.lock().unwrap_or_else(|p| p.into_inner());
        let elapsed = now
            .saturating_duration_since(reserve.refilled)
            .as_secs_f64();
        let floor = milli(self.policy.min_per_second);
        reserve.tokens = (reserve.tokens + milli(elapsed * self.policy.min_per_second)).min(floor);
        reserve.refilled = now;
        if reserve.tokens >= one {
            reserve.tokens -= one;
            true
        } else {
            false
        }
    }
}

fn milli(tokens: f64) -> u64 {
    (tokens * MILLI).round().max(0.0) as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn deposits_pay_for_a_share_of_retries() {
        let t0 = Instant::now();
        let policy = RetryPolicy {
            min_per_second: 0.0,
            ..RetryPolicy::default()
        };
        let budget = RetryBudget::new(policy, t0);
        assert!(!budget.withdraw(t0));
        for _ in 0..10 {
            budget.deposit();
        }
        // 10 requests at 20%: two retries, not three.
        assert!(budget.withdraw(t0));
        assert!(budget.withdraw(t0));
        assert!(!budget.withdraw(t0));
    }

    #[test]
    fn the_floor_refills_with_time() {
        let t0 = Instant::now();
        let policy = RetryPolicy {
            min_per_second: 2.0,
            ..RetryPolicy::default()
        };
        let budget = RetryBudget::new(policy, t0);
        assert!(budget.withdraw(t0));
        assert!(budget.withdraw(t0));
        assert!(!budget.withdraw(t0));
        assert!(budget.withdraw(t0 + Duration::from_millis(500)));
        assert!(!budget.withdraw(t0 + Duration::from_millis(500)));
        // The reserve never holds more than one second's worth.
        let later = t0 + Duration::from_secs(60);
        assert!(budget.withdraw(later));
        assert!(budget.withdraw(later));
        assert!(!budget.withdraw(later));
    }

    #[test]
    fn deposits_are_capped() {
        let t0 = Instant::now();
        let policy = RetryPolicy {
            min_per_second: 0.0,
            max_balance: 2.0,
            ..RetryPolicy::default()
        };
        let budget = RetryBudget::new(policy, t0);
        for _ in 0..1000 {
            budget.deposit();
        }
        assert!(budget.withdraw(t0));
        assert!(budget.withdraw(t0));
        assert!(!budget.withdraw(t0));
    }
}
