//! Passive outlier detection, as a pure state machine: an endpoint whose consecutive failures
//! (failed connects, transport errors, 5xx responses) reach a threshold is ejected for a
//! back-off that doubles with each ejection in a row. When the back-off ends it is on
//! probation: one failure ejects it again (for longer), one success re-admits it fully.
//!
//! ```text
//!   Healthy --N failures--> Ejected(until) --time passes--> Probation
//!      ^                        ^                              |  |
//!      |                        +---------- 1 failure ---------+  |
//!      +---------------------------- 1 success -------------------+
//! ```

use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy)]
pub struct OutlierPolicy {
    /// Consecutive failures that eject a healthy endpoint.
    pub consecutive_failures: u32,
    /// The first ejection's length; each further one in a row doubles it.
    pub base_ejection: Duration,
    pub max_ejection: Duration,
}

impl Default for OutlierPolicy {
    fn default() -> Self {
        // Envoy's defaults (5 consecutive failures, 30 s base ejection, 300 s cap).
        OutlierPolicy {
            consecutive_failures: 5,
            base_ejection: Duration::from_secs(30),
            max_ejection: Duration::from_secs(300),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    Healthy,
    Ejected { until: Instant },
    Probation,
}

/// What an outcome did to the endpoint, for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    None,
    Ejected(Duration),
    Readmitted,
}

#[derive(Debug, Clone)]
pub struct OutlierState {
    health: Health,
    consecutive_failures: u32,
    /// Ejections since the endpoint was last fully healthy.
    ejections: u32,
}

impl Default for OutlierState {
    fn default() -> Self {
        OutlierState {
            health: Health::Healthy,
            consecutive_failures: 0,
            ejections: 0,
        }
    }
}

impl OutlierState {
    /// Whether new work may go to the endpoint at `now`.
    pub fn is_available(&mut self, now: Instant) -> bool {
        match self.health {
            Health::Ejected { until } if now < until => false,
            Health::Ejected { .. } => {
                self.health = Health::Probation;
                true
            }
            Health::Healthy | Health::Probation => true,
        }
    }

    pub fn is_ejected(&self, now: Instant) -> bool {
        matches!(self.health, Health::Ejected { until } if now < until)
    }

    pub fn health(&self) -> Health {
        self.health
    }

    pub fn on_success(&mut self) -> Transition {
        self.consecutive_failures = 0;
        match self.health {
            Health::Probation => {
                self.health = Health::Healthy;
                self.ejections = 0;
                Transition::Readmitted
            }
            // A request that started before the ejection may still succeed: it does not
            // cut the ejection short.
            Health::Healthy | Health::Ejected { .. } => Transition::None,
        }
    }

    pub fn on_failure(&mut self, policy: &OutlierPolicy, now: Instant) -> Transition {
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        let eject = match self.health {
            Health::Healthy => self.consecutive_failures >= policy.consecutive_failures,
            Health::Probation => true,
            Health::Ejected { .. } => false,
        };
        if !eject {
            return Transition::None;
        }
        let factor = 1u32.checked_shl(self.ejections.min(16)).unwrap_or(u32::MAX);
        let length = policy
            .base_ejection
            .saturating_mul(factor)
            .min(policy.max_ejection);
        self.ejections += 1;
        self.consecutive_failures = 0;
        self.health = Health::Ejected {
            until: now + length,
        };
        Transition::Ejected(length)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> OutlierPolicy {
        OutlierPolicy {
            consecutive_failures: 3,
            base_ejection: Duration::from_secs(10),
            max_ejection: Duration::from_secs(35),
        }
    }

    #[test]
    fn ejects_after_consecutive_failures_only() {
        let t0 = Instant::now();
        let mut state = OutlierState::default();
        assert_eq!(state.on_failure(&policy(), t0), Transition::None);
        assert_eq!(state.on_failure(&policy(), t0), Transition::None);
        // A success in between resets the count.
        state.on_success();
        assert_eq!(state.on_failure(&policy(), t0), Transition::None);
        assert_eq!(state.on_failure(&policy(), t0), Transition::None);
        assert_eq!(
            state.on_failure(&policy(), t0),
            Transition::Ejected(Duration::from_secs(10))
        );
        assert!(!state.is_available(t0 + Duration::from_secs(9)));
        assert!(state.is_ejected(t0 + Duration::from_secs(9)));
    }

    #[test]
    fn backs_off_on_probation_and_readmits_on_success() {
        let t0 = Instant::now();
        let mut state = OutlierState::default();
        for _ in 0..3 {
            state.on_failure(&policy(), t0);
        }
        let t1 = t0 + Duration::from_secs(10);
        assert!(state.is_available(t1));
        assert_eq!(state.health(), Health::Probation);
        // One failure on probation: ejected again, twice as long.
        assert_eq!(
            state.on_failure(&policy(), t1),
            Transition::Ejected(Duration::from_secs(20))
        );
        let t2 = t1 + Duration::from_secs(20);
        assert!(state.is_available(t2));
        // Capped at max_ejection.
        assert_eq!(
            state.on_failure(&policy(), t2),
            Transition::Ejected(Duration::from_secs(35))
        );
        let t3 = t2 + Duration::from_secs(35);
        assert!(state.is_available(t3));
        assert_eq!(state.on_success(), Transition::Readmitted);
        assert_eq!(state.health(), Health::Healthy);
        // Fully re-admitted: the next ejection starts from the base length again.
        for _ in 0..2 {
            assert_eq!(state.on_failure(&policy(), t3), Transition::None);
        }
        assert_eq!(
            state.on_failure(&policy(), t3),
            Transition::Ejected(Duration::from_secs(10))
        );
    }

    #[test]
    fn late_success_does_not_end_an_ejection() {
        let t0 = Instant::now();
        let mut state = OutlierState::default();
        for _ in 0..3 {
            state.on_failure(&policy(), t0);
        }
        assert_eq!(state.on_success(), Transition::None);
        assert!(state.is_ejected(t0 + Duration::from_secs(1)));
    }
}
