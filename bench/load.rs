//! The closed-loop load generator both benchmarks share: `clients` writers, each sending its
//! next write as soon as the previous one is acknowledged, for a fixed time.

use anyhow::Result;
use std::future::Future;
use std::time::{Duration, Instant};

/// One writer: a connection and whatever it writes.
pub trait Writer: Send + 'static {
    /// Writes once; `n` counts this writer's writes, so that every write changes something.
    fn write(&mut self, n: u64) -> impl Future<Output = Result<()>> + Send;
}

pub struct Load {
    pub clients: usize,
    pub writes_per_second: f64,
    /// Sorted.
    latencies: Vec<Duration>,
}

impl Load {
    pub fn percentile(&self, p: f64) -> Duration {
        percentile(&self.latencies, p)
    }

    pub fn max(&self) -> Duration {
        self.latencies.last().copied().unwrap_or_default()
    }
}

/// The middle value (the upper one of an even count); `values` must not be empty.
pub fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// The `p` quantile of sorted durations (zero when there are none).
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[index]
}

/// Runs the writers `writer(i)` makes for `i` in `0..clients` for `duration`.
pub async fn run<W: Writer>(
    clients: usize,
    duration: Duration,
    mut writer: impl FnMut(usize) -> Result<W>,
) -> Result<Load> {
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = Vec::with_capacity(clients);
    for i in 0..clients {
        let mut writer = writer(i)?;
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut n = 0;
            while Instant::now() < deadline {
                let sent = Instant::now();
                writer.write(n).await?;
                latencies.push(sent.elapsed());
                n += 1;
            }
            anyhow::Ok(latencies)
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await??);
    }
    let elapsed = start.elapsed();
    latencies.sort();
    Ok(Load {
        clients,
        writes_per_second: latencies.len() as f64 / elapsed.as_secs_f64(),
        latencies,
    })
}
