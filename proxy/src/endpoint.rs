//! An endpoint (one ready or terminating pod address of a service port) and what the proxy
//! knows about it: its latency estimate, its outlier state, its active health check standing,
//! whether it drains, its numbers and
//! its pooled upstream connections. One `Arc<Endpoint>` lives as long as the endpoint stays in
//! its set and, after removal, as long as work in flight still holds it (draining).

use crate::config::HealthCheckConfig;
use crate::ewma::PeakEwma;
use crate::health::CheckState;
use crate::metrics::Stats;
use crate::outlier::{OutlierPolicy, OutlierState, Transition};
use crate::pool::Pool;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// An endpoint as the endpoints controller (or a config file) states it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EndpointSpec {
    pub addr: SocketAddr,
    /// The pod is terminating: its work in flight finishes, it gets no new work.
    pub terminating: bool,
}

impl EndpointSpec {
    pub fn ready(addr: SocketAddr) -> Self {
        EndpointSpec {
            addr,
            terminating: false,
        }
    }
}

/// The latency estimate a new endpoint starts with, before any sample.
const DEFAULT_RTT: Duration = Duration::from_millis(1);

#[derive(Debug)]
pub struct Endpoint {
    pub addr: SocketAddr,
    terminating: AtomicBool,
    /// Held only for a few arithmetic operations, never across an await.
    health: Mutex<Health>,
    pub stats: Stats,
    /// One pool per worker: a connection is only used by the worker that made it.
    pools: Box<[Pool]>,
}

#[derive(Debug)]
struct Health {
    ewma: PeakEwma,
    outlier: OutlierState,
    /// Active health checks (healthy while the listener has none).
    checks: CheckState,
}

impl Endpoint {
    pub fn new(spec: EndpointSpec, workers: usize) -> Self {
        Endpoint {
            addr: spec.addr,
            terminating: AtomicBool::new(spec.terminating),
            health: Mutex::new(Health {
                ewma: PeakEwma::new(DEFAULT_RTT, Instant::now()),
                outlier: OutlierState::default(),
                checks: CheckState::default(),
            }),
            stats: Stats::default(),
            pools: (0..workers.max(1)).map(|_| Pool::default()).collect(),
        }
    }

    /// The calling worker's pool of connections to this endpoint.
    pub(crate) fn pool(&self) -> &Pool {
        &self.pools[crate::worker::current() % self.pools.len()]
    }

    fn health(&self) -> std::sync::MutexGuard<'_, Health> {
        // A panic while holding this lock leaves plain numbers behind: keep using them.
        self.health
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn is_terminating(&self) -> bool {
        self.terminating.load(Relaxed)
    }

    pub(crate) fn set_terminating(&self, terminating: bool) {
        self.terminating.store(terminating, Relaxed);
    }

    /// Passing its active health checks and not ejected at `now` (ending an ejection whose
    /// time is up): both must allow new work.
    pub fn is_available(&self, now: Instant) -> bool {
        let mut health = self.health();
        health.checks.is_healthy() && health.outlier.is_available(now)
    }

    /// Passing its active health checks (always, without checks).
    pub fn is_healthy(&self) -> bool {
        self.health().checks.is_healthy()
    }

    /// Records an active check's result; returns the new standing when it changed.
    pub(crate) fn on_health_check(&self, passed: bool, config: &HealthCheckConfig) -> Option<bool> {
        self.health().checks.observe(passed, config)
    }

    pub fn is_ejected(&self, now: Instant) -> bool {
        self.health().outlier.is_ejected(now)
    }

    /// Peak-EWMA latency x (in-flight + 1): what power-of-two-choices compares.
    pub fn cost(&self, now: Instant) -> f64 {
        let in_flight = self.stats.in_flight().max(0) as f64;
        self.health().ewma.decayed(now) * (in_flight + 1.0)
    }

    pub(crate) fn on_success(&self, latency: Duration, now: Instant) {
        let mut health = self.health();
        health.ewma.observe(latency, now);
        if health.outlier.on_success() == Transition::Readmitted {
            tracing::info!(endpoint = %self.addr, "endpoint re-admitted");
        }
    }

    /// Returns the ejection's length if this failure ejected the endpoint.
    pub(crate) fn on_failure(
        &self,
        latency: Duration,
        policy: &OutlierPolicy,
        now: Instant,
    ) -> Option<Duration> {
        let mut health = self.health();
        // A refused connect is fast and barely moves the estimate: outlier detection, not
        // the latency estimate, is what keeps a broken endpoint out.
        health.ewma.observe(latency, now);
        match health.outlier.on_failure(policy, now) {
            Transition::Ejected(length) => Some(length),
            _ => None,
        }
    }
}
