//! Request counters and latency histograms, per service port and per endpoint, kept in
//! atomics on the data path and rendered in the Prometheus text format by the admin listener.

use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

#[derive(Debug, Default)]
pub struct Histogram {
    /// Non-cumulative counts; the last one is +Inf.
    counts: [AtomicU64; BUCKETS.len() + 1],
    sum_micros: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, latency: Duration) {
        let seconds = latency.as_secs_f64();
        let bucket = BUCKETS
            .iter()
            .position(|&bound| seconds <= bound)
            .unwrap_or(BUCKETS.len());
        self.counts[bucket].fetch_add(1, Relaxed);
        self.sum_micros
            .fetch_add(latency.as_micros() as u64, Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        for (i, count) in self.counts.iter().enumerate() {
            cumulative += count.load(Relaxed);
            let le = BUCKETS.get(i).map_or("+Inf".to_string(), |b| b.to_string());
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{le}\"}} {cumulative}");
        }
        let sum = self.sum_micros.load(Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum{{{labels}}} {sum}");
        let _ = writeln!(out, "{name}_count{{{labels}}} {cumulative}");
    }
}

/// The numbers kept for a service port or one of its endpoints. In TCP mode a request is a
/// connection, and latency is the time to connect to the endpoint.
#[derive(Debug, Default)]
pub struct Stats {
    pub requests: AtomicU64,
    /// Failed requests: no endpoint, transport errors, timeouts, and 5xx responses.
    pub errors: AtomicU64,
    pub in_flight: AtomicI64,
    pub latency: Histogram,
}

impl Stats {
    pub fn in_flight(&self) -> i64 {
        self.in_flight.load(Relaxed)
    }
}

/// One `# HELP`/`# TYPE` header and the samples under it.
pub(crate) struct Family<'a> {
    pub name: &'a str,
    pub help: &'a str,
    pub kind: &'a str,
}

impl Family<'_> {
    pub fn header(&self, out: &mut String) {
        let _ = writeln!(out, "# HELP {} {}", self.name, self.help);
        let _ = writeln!(out, "# TYPE {} {}", self.name, self.kind);
    }
}

/// Renders the families of `Stats` for each labelled set, grouped by family as the text
/// format requires.
pub(crate) fn render_stats(out: &mut String, prefix: &str, what: &str, sets: &[(String, &Stats)]) {
    let requests = format!("{prefix}_requests_total");
    Family {
        name: &requests,
        help: &format!("Requests (connections in TCP mode) per {what}."),
        kind: "counter",
    }
    .header(out);
    for (labels, stats) in sets {
        let _ = writeln!(
            out,
            "{requests}{{{labels}}} {}",
            stats.requests.load(Relaxed)
        );
    }
    let errors = format!("{prefix}_errors_total");
    Family {
        name: &errors,
        help: &format!("Failed requests per {what}."),
        kind: "counter",
    }
    .header(out);
    for (labels, stats) in sets {
        let _ = writeln!(out, "{errors}{{{labels}}} {}", stats.errors.load(Relaxed));
    }
    let in_flight = format!("{prefix}_in_flight");
    Family {
        name: &in_flight,
        help: &format!("Requests in flight per {what}."),
        kind: "gauge",
    }
    .header(out);
    for (labels, stats) in sets {
        let _ = writeln!(out, "{in_flight}{{{labels}}} {}", stats.in_flight());
    }
    let latency = format!("{prefix}_latency_seconds");
    Family {
        name: &latency,
        help: &format!("Time to response headers (to connect in TCP mode) per {what}."),
        kind: "histogram",
    }
    .header(out);
    for (labels, stats) in sets {
        stats.latency.render(out, &latency, labels);
    }
}

/// A label value with `\`, `"` and newlines escaped.
pub(crate) fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let histogram = Histogram::default();
        histogram.observe(Duration::from_micros(300));
        histogram.observe(Duration::from_millis(3));
        histogram.observe(Duration::from_secs(60));
        let mut out = String::new();
        histogram.render(&mut out, "x", "a=\"b\"");
        assert!(out.contains("x_bucket{a=\"b\",le=\"0.0005\"} 1\n"), "{out}");
        assert!(out.contains("x_bucket{a=\"b\",le=\"0.005\"} 2\n"), "{out}");
        assert!(out.contains("x_bucket{a=\"b\",le=\"10\"} 2\n"), "{out}");
        assert!(out.contains("x_bucket{a=\"b\",le=\"+Inf\"} 3\n"), "{out}");
        assert!(out.contains("x_count{a=\"b\"} 3\n"), "{out}");
        assert!(out.contains("x_sum{a=\"b\"} 60.0033\n"), "{out}");
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
