//! Peak-EWMA latency estimate: an exponentially weighted moving average that jumps up to any
//! sample above it at once and decays toward lower samples over `DECAY`. Rising latency is
//! believed immediately, recovery only gradually, which keeps a slowing endpoint from
//! attracting work (Finagle's and linkerd2-proxy's load estimate).

use std::time::{Duration, Instant};

/// Time constant of the decay toward lower samples.
pub const DECAY: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy)]
pub struct PeakEwma {
    /// Estimate, in nanoseconds.
    estimate: f64,
    updated: Instant,
}

impl PeakEwma {
    pub fn new(initial: Duration, now: Instant) -> Self {
        PeakEwma {
            estimate: initial.as_nanos() as f64,
            updated: now,
        }
    }

    /// Folds in one observed latency.
    pub fn observe(&mut self, sample: Duration, now: Instant) {
        let sample = sample.as_nanos() as f64;
        if sample > self.estimate {
            self.estimate = sample;
        } else {
            let elapsed = now.saturating_duration_since(self.updated).as_nanos() as f64;
            let weight = (-elapsed / DECAY.as_nanos() as f64).exp();
            self.estimate = self.estimate * weight + sample * (1.0 - weight);
        }
        self.updated = now;
    }

    /// The estimate in nanoseconds as of the last sample.
    pub fn estimate(&self) -> f64 {
        self.estimate
    }

    /// The estimate at `now`, decayed toward zero since the last sample: an endpoint that
    /// got no work for a while (because it once looked slow) gets another chance.
    pub fn decayed(&self, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(self.updated).as_nanos() as f64;
        self.estimate * (-elapsed / DECAY.as_nanos() as f64).exp()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peaks_at_once_and_decays_slowly() {
        let t0 = Instant::now();
        let mut ewma = PeakEwma::new(Duration::from_millis(1), t0);
        ewma.observe(Duration::from_millis(50), t0);
        assert_eq!(ewma.estimate(), 50e6);
        // One time constant later a 1 ms sample pulls it down by ~63% of the gap.
        ewma.observe(Duration::from_millis(1), t0 + DECAY);
        let expected = 50e6 * (-1f64).exp() + 1e6 * (1.0 - (-1f64).exp());
        assert!((ewma.estimate() - expected).abs() < 1.0);
        // A sample taken at the same instant barely moves it.
        let before = ewma.estimate();
        ewma.observe(Duration::from_millis(1), t0 + DECAY);
        assert_eq!(ewma.estimate(), before);
        // Without samples it fades: one time constant takes ~63% off.
        let idle = ewma.decayed(t0 + DECAY + DECAY);
        assert!((idle - before * (-1f64).exp()).abs() < 1.0);
    }
}
