//! Events (core/v1 `Event`): what happened to an object, for `berth describe` and
//! `berth get events`. The control plane's loops and the node agents record them through an
//! [`EventRecorder`]; this module holds what both share: naming, repeat aggregation and the
//! bounded queue between call sites and a flusher.
//!
//! ```text
//!  call site ── record() ──▶ bounded queue (full: dropped, counted) ──▶ EventQueue::next_batch
//!   (never waits)                                                       │ Correlator: a repeat
//!                                                                       │ within the window is
//!                                                                       │ count+1, same name
//!                                                                       │ Bucket: over the
//!                                                                       │ RateLimit: dropped
//!                                                                       ▼
//!                                   flusher (control plane: one Command::Batch; agent: one RPC)
//! ```
//!
//! The correlator follows Kubernetes' (client-go's `EventCorrelator`): events with the same
//! source, involved object, type, reason and message are one Event whose `count` and
//! `lastTimestamp` move on, as long as the previous occurrence is recent ([`REPEAT_WINDOW`]).
//! Names are Kubernetes' too: `<involved object name>.<16 hex digits of the time in ns>`.
//! Each recorder writes at most what its [`RateLimit`] allows (kubelet's `--event-qps`): events
//! are best effort, and a storm of them must not slow the work they describe.

use crate::Kind;
use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// How long after its last occurrence an event still takes repeats (client-go's 10 minutes).
pub const REPEAT_WINDOW: Duration = Duration::from_secs(600);
/// Occurrences the correlator remembers (client-go's LRU holds 4096).
pub const REMEMBERED: usize = 4096;
/// The longest message stored; longer ones (probe output, say) are cut.
pub const MAX_MESSAGE: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    Normal,
    Warning,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }
}

/// One occurrence, as a call site reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct Occurrence {
    pub involved: ObjectReference,
    pub event_type: EventType,
    pub reason: String,
    pub message: String,
    /// `source.component` / `reportingComponent`: `default-scheduler`, `kubelet`...
    pub component: &'static str,
    /// `source.host` / `reportingInstance`: the node, for agents.
    pub host: Option<String>,
}

/// A reference to an object for `involvedObject`.
pub fn reference(kind: Kind, meta: &ObjectMeta) -> ObjectReference {
    ObjectReference {
        api_version: Some(kind.api_version().to_string()),
        kind: Some(kind.as_str().to_string()),
        namespace: meta.namespace.clone().filter(|_| kind.namespaced()),
        name: meta.name.clone(),
        uid: meta.uid.clone(),
        ..ObjectReference::default()
    }
}

/// A reference to an object known by kind, namespace, name and uid.
pub fn object_ref(kind: Kind, namespace: &str, name: &str, uid: &str) -> ObjectReference {
    let meta = ObjectMeta {
        namespace: Some(namespace.to_string()).filter(|n| !n.is_empty()),
        name: Some(name.to_string()),
        uid: Some(uid.to_string()).filter(|u| !u.is_empty()),
        ..ObjectMeta::default()
    };
    reference(kind, &meta)
}

/// `<object name>.<16 hex digits>`, as Kubernetes names events; the object's name is cut so
/// that the whole stays a valid name (253 characters).
pub fn event_name(object_name: &str, nanos: u64) -> String {
    let max = 253 - 17;
    let name = match object_name.char_indices().nth(max) {
        Some((end, _)) => object_name[..end].trim_end_matches(['.', '-']),
        None => object_name,
    };
    format!("{name}.{nanos:016x}")
}

/// The namespace an event about `involved` lives in: the object's own, `default` for
/// cluster-scoped objects (as Kubernetes records Node events).
fn event_namespace(involved: &ObjectReference) -> String {
    involved
        .namespace
        .clone()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| crate::DEFAULT_NAMESPACE.to_string())
}

fn truncated(message: &str) -> String {
    match message.char_indices().nth(MAX_MESSAGE) {
        Some((end, _)) => format!("{}...", &message[..end]),
        None => message.to_string(),
    }
}

/// What makes two occurrences the same event.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    component: &'static str,
    host: Option<String>,
    kind: Option<String>,
    namespace: Option<String>,
    name: Option<String>,
    uid: Option<String>,
    event_type: EventType,
    reason: String,
    message: String,
}

impl Key {
    fn of(o: &Occurrence) -> Key {
        Key {
            component: o.component,
            host: o.host.clone(),
            kind: o.involved.kind.clone(),
            namespace: o.involved.namespace.clone(),
            name: o.involved.name.clone(),
            uid: o.involved.uid.clone(),
            event_type: o.event_type,
            reason: o.reason.clone(),
            message: o.message.clone(),
        }
    }
}

struct Seen {
    event: Event,
    last: jiff::Timestamp,
}

/// Turns occurrences into the Events to write: a repeat of a recent one is that Event with
/// `count + 1`, anything else a new Event. Pure: the caller passes the time.
pub struct Correlator {
    seen: HashMap<Key, Seen>,
    window: Duration,
    capacity: usize,
    /// The last name suffix handed out: names stay unique within a recorder even when the
    /// clock gives two occurrences the same nanosecond.
    last_nanos: u64,
}

impl Default for Correlator {
    fn default() -> Self {
        Correlator::new(REPEAT_WINDOW, REMEMBERED)
    }
}

impl Correlator {
    pub fn new(window: Duration, capacity: usize) -> Self {
        Correlator {
            seen: HashMap::new(),
            window,
            capacity: capacity.max(1),
            last_nanos: 0,
        }
    }

    /// The Event to write for `occurrence` at `now`.
    pub fn observe(&mut self, occurrence: Occurrence, now: jiff::Timestamp) -> Event {
        let key = Key::of(&occurrence);
        let window =
            jiff::SignedDuration::try_from(self.window).unwrap_or(jiff::SignedDuration::MAX);
        if let Some(seen) = self.seen.get_mut(&key) {
            if now.duration_since(seen.last) < window {
                seen.last = now;
                seen.event.count = Some(seen.event.count.unwrap_or(1) + 1);
                seen.event.last_timestamp = Some(Time(now));
                return seen.event.clone();
            }
        }
        if self.seen.len() >= self.capacity && !self.seen.contains_key(&key) {
            self.forget_oldest(now, window);
        }
        let nanos = u64::try_from(now.as_nanosecond()).unwrap_or(0);
        self.last_nanos = nanos.max(self.last_nanos + 1);
        let event = new_event(&occurrence, self.last_nanos, now);
        self.seen.insert(
            key,
            Seen {
                event: event.clone(),
                last: now,
            },
        );
        event
    }

    /// Makes room: everything past the window goes; if that is not enough, the least recent
    /// eighth (at once, so that a storm of new events does not scan the map for each one).
    fn forget_oldest(&mut self, now: jiff::Timestamp, window: jiff::SignedDuration) {
        self.seen
            .retain(|_, seen| now.duration_since(seen.last) < window);
        if self.seen.len() >= self.capacity {
            let mut by_age: Vec<(jiff::Timestamp, Key)> = self
                .seen
                .iter()
                .map(|(key, seen)| (seen.last, key.clone()))
                .collect();
            let evict = (self.capacity / 8).clamp(1, by_age.len());
            by_age.select_nth_unstable_by_key(evict - 1, |(last, _)| *last);
            for (_, key) in &by_age[..evict] {
                self.seen.remove(key);
            }
        }
    }

    /// How many occurrences it remembers.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

fn new_event(o: &Occurrence, nanos: u64, now: jiff::Timestamp) -> Event {
    let object_name = o.involved.name.as_deref().unwrap_or("unknown");
    Event {
        metadata: ObjectMeta {
            name: Some(event_name(object_name, nanos)),
            namespace: Some(event_namespace(&o.involved)),
            ..ObjectMeta::default()
        },
        involved_object: o.involved.clone(),
        reason: Some(o.reason.clone()),
        message: Some(truncated(&o.message)),
        type_: Some(o.event_type.as_str().to_string()),
        source: Some(EventSource {
            component: Some(o.component.to_string()),
            host: o.host.clone(),
        }),
        first_timestamp: Some(Time(now)),
        last_timestamp: Some(Time(now)),
        count: Some(1),
        reporting_component: Some(o.component.to_string()),
        reporting_instance: o.host.clone(),
        ..Event::default()
    }
}

/// When an event last happened: `lastTimestamp`, else `eventTime`, `firstTimestamp`, or when
/// it was stored.
pub fn last_seen(event: &Event) -> Option<jiff::Timestamp> {
    event
        .last_timestamp
        .as_ref()
        .map(|t| t.0)
        .or(event.event_time.as_ref().map(|t| t.0))
        .or(event.first_timestamp.as_ref().map(|t| t.0))
        .or(event.metadata.creation_timestamp.as_ref().map(|t| t.0))
}

/// The handle call sites record through: cheap to clone, never waits. A full queue drops the
/// occurrence (the caller's work matters more than its event) and counts it.
#[derive(Clone)]
pub struct EventRecorder {
    queue: mpsc::Sender<Occurrence>,
    dropped: Arc<AtomicU64>,
    component: &'static str,
    host: Option<String>,
}

/// The flusher's end of a recorder's queue.
pub struct EventQueue {
    occurrences: mpsc::Receiver<Occurrence>,
    correlator: Correlator,
    dropped: Arc<AtomicU64>,
    /// Dropped occurrences already reported in a warning.
    reported: u64,
    bucket: Bucket,
    /// Events over the rate limit, not yet reported.
    over_rate: u64,
}

/// How many events a recorder writes: `per_second` on average, `burst` at once. Events are
/// best effort: in a storm (thousands of pods scheduled at once) the work matters more than an
/// event per pod, and an event write costs the store about what a bind does. Kubernetes limits
/// them the same way (kubelet's `--event-qps`/`--event-burst`, the clients' QPS).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    pub per_second: f64,
    pub burst: u32,
}

impl RateLimit {
    /// kubelet's defaults: `--event-qps 50 --event-burst 100`.
    pub const KUBELET: RateLimit = RateLimit {
        per_second: 50.0,
        burst: 100,
    };
}

/// A token bucket over a [`RateLimit`]. Pure: the caller passes the time.
#[derive(Debug, Clone)]
pub struct Bucket {
    limit: RateLimit,
    tokens: f64,
    last: Option<std::time::Instant>,
}

impl Bucket {
    /// A full bucket: `burst` events may go at once.
    pub fn new(limit: RateLimit) -> Bucket {
        Bucket {
            limit,
            tokens: f64::from(limit.burst),
            last: None,
        }
    }

    /// Whether one more event may go at `now`.
    pub fn take(&mut self, now: std::time::Instant) -> bool {
        if let Some(last) = self.last {
            let refill = now.saturating_duration_since(last).as_secs_f64() * self.limit.per_second;
            self.tokens = (self.tokens + refill).min(f64::from(self.limit.burst));
        }
        self.last = Some(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Events a flusher did not write since it last asked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Dropped {
    /// Occurrences refused by a full queue.
    pub queue_full: u64,
    /// Events over the rate limit.
    pub over_rate: u64,
}

impl Dropped {
    pub fn any(&self) -> bool {
        self.queue_full > 0 || self.over_rate > 0
    }
}

/// A recorder and its queue, holding at most `capacity` occurrences not yet taken, writing at
/// most what `limit` allows.
pub fn channel(
    capacity: usize,
    component: &'static str,
    limit: RateLimit,
) -> (EventRecorder, EventQueue) {
    let (queue, occurrences) = mpsc::channel(capacity.max(1));
    let dropped = Arc::new(AtomicU64::new(0));
    let recorder = EventRecorder {
        queue,
        dropped: dropped.clone(),
        component,
        host: None,
    };
    let queue = EventQueue {
        occurrences,
        correlator: Correlator::default(),
        dropped,
        reported: 0,
        bucket: Bucket::new(limit),
        over_rate: 0,
    };
    (recorder, queue)
}

impl EventRecorder {
    /// The same queue, recording as `component`.
    pub fn with_component(&self, component: &'static str) -> EventRecorder {
        EventRecorder {
            component,
            ..self.clone()
        }
    }

    /// The same queue, recording from `host` (a node).
    pub fn with_host(&self, host: impl Into<String>) -> EventRecorder {
        EventRecorder {
            host: Some(host.into()),
            ..self.clone()
        }
    }

    pub fn normal(&self, involved: &ObjectReference, reason: &str, message: impl Into<String>) {
        self.record(involved, EventType::Normal, reason, message.into());
    }

    pub fn warning(&self, involved: &ObjectReference, reason: &str, message: impl Into<String>) {
        self.record(involved, EventType::Warning, reason, message.into());
    }

    pub fn record(
        &self,
        involved: &ObjectReference,
        event_type: EventType,
        reason: &str,
        message: String,
    ) {
        let occurrence = Occurrence {
            involved: involved.clone(),
            event_type,
            reason: reason.to_string(),
            message,
            component: self.component,
            host: self.host.clone(),
        };
        match self.queue.try_send(occurrence) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
            // The flusher stopped (shutting down): nothing records any more.
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }
}

impl EventQueue {
    /// Waits for an occurrence, gathers what else arrives within `window` (up to `max`), and
    /// returns the Events to write, one per name (a repeat within the batch is one write).
    /// `None` once every recorder is gone.
    pub async fn next_batch(&mut self, window: Duration, max: usize) -> Option<Vec<Event>> {
        let mut occurrences = Vec::new();
        if self.occurrences.recv_many(&mut occurrences, max).await == 0 {
            return None;
        }
        let deadline = tokio::time::Instant::now() + window;
        while occurrences.len() < max {
            let room = max - occurrences.len();
            let more = self.occurrences.recv_many(&mut occurrences, room);
            let more = tokio::time::timeout_at(deadline, more);
            match more.await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        let mut events = self.correlate(occurrences, jiff::Timestamp::now());
        // Over the limit, the newest go. The correlator has seen them: a repeat that is written
        // later still carries the right count.
        let now = std::time::Instant::now();
        let before = events.len();
        events.retain(|_| self.bucket.take(now));
        self.over_rate += (before - events.len()) as u64;
        Some(events)
    }

    /// What was not written since the last call (the flusher warns about it).
    pub fn newly_dropped(&mut self) -> Dropped {
        let dropped = self.dropped.load(Ordering::Relaxed);
        let queue_full = dropped - self.reported;
        self.reported = dropped;
        Dropped {
            queue_full,
            over_rate: std::mem::take(&mut self.over_rate),
        }
    }

    /// The Events for `occurrences` at `now`, one per name, in first-seen order.
    pub fn correlate(&mut self, occurrences: Vec<Occurrence>, now: jiff::Timestamp) -> Vec<Event> {
        let mut events: Vec<Event> = Vec::with_capacity(occurrences.len());
        let mut index: HashMap<String, usize> = HashMap::new();
        for occurrence in occurrences {
            let event = self.correlator.observe(occurrence, now);
            let name = event.metadata.name.clone().unwrap_or_default();
            match index.get(&name) {
                Some(&i) => events[i] = event,
                None => {
                    index.insert(name, events.len());
                    events.push(event);
                }
            }
        }
        events
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod_ref(name: &str) -> ObjectReference {
        let meta = ObjectMeta {
            name: Some(name.into()),
            namespace: Some("default".into()),
            uid: Some(format!("uid-{name}")),
            ..ObjectMeta::default()
        };
        reference(Kind::Pod, &meta)
    }

    fn occurrence(name: &str, reason: &str, message: &str) -> Occurrence {
        Occurrence {
            involved: pod_ref(name),
            event_type: EventType::Normal,
            reason: reason.into(),
            message: message.into(),
            component: "kubelet",
            host: Some("node-1".into()),
        }
    }

    fn at(seconds: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(1_800_000_000 + seconds).unwrap()
    }

    #[test]
    fn names_are_the_object_name_and_16_hex_digits() {
        assert_eq!(
            event_name("web-1", 0x17f1c2a3b4c5d6e7),
            "web-1.17f1c2a3b4c5d6e7"
        );
        assert_eq!(event_name("n", 1), "n.0000000000000001");
        let long = "a".repeat(300);
        let name = event_name(&long, 5);
        assert_eq!(name.len(), 253);
        assert!(crate::validation::is_dns1123_subdomain(&name), "{name}");
        // A cut that would end in a dash or a dot drops them: the name stays valid.
        let dashed = format!("{}-{}", "a".repeat(235), "b".repeat(10));
        assert!(crate::validation::is_dns1123_subdomain(&event_name(
            &dashed, 5
        )));
    }

    #[test]
    fn repeats_within_the_window_count_up_on_one_event() {
        let mut correlator = Correlator::default();
        let first = correlator.observe(occurrence("web", "BackOff", "Back-off"), at(0));
        assert_eq!(first.count, Some(1));
        assert_eq!(first.type_.as_deref(), Some("Normal"));
        assert_eq!(first.metadata.namespace.as_deref(), Some("default"));
        assert_eq!(
            first.source.as_ref().unwrap().host.as_deref(),
            Some("node-1")
        );
        let second = correlator.observe(occurrence("web", "BackOff", "Back-off"), at(30));
        assert_eq!(second.metadata.name, first.metadata.name);
        assert_eq!(second.count, Some(2));
        assert_eq!(second.first_timestamp, first.first_timestamp);
        assert_eq!(second.last_timestamp, Some(Time(at(30))));
        // Another message, reason or object is another event.
        let other = correlator.observe(occurrence("web", "BackOff", "other"), at(31));
        assert_ne!(other.metadata.name, first.metadata.name);
        assert_eq!(other.count, Some(1));
        let other_pod = correlator.observe(occurrence("db", "BackOff", "Back-off"), at(31));
        assert!(other_pod.metadata.name.unwrap().starts_with("db."));
    }

    #[test]
    fn a_repeat_after_the_window_is_a_new_event() {
        let mut correlator = Correlator::new(Duration::from_secs(600), 16);
        let first = correlator.observe(occurrence("web", "Pulled", "x"), at(0));
        let later = correlator.observe(occurrence("web", "Pulled", "x"), at(599));
        assert_eq!(
            (later.metadata.name.clone(), later.count),
            (first.metadata.name.clone(), Some(2))
        );
        // The window runs from the last occurrence.
        let much_later = correlator.observe(occurrence("web", "Pulled", "x"), at(599 + 600));
        assert_ne!(much_later.metadata.name, first.metadata.name);
        assert_eq!(much_later.count, Some(1));
    }

    #[test]
    fn memory_is_bounded() {
        let mut correlator = Correlator::new(Duration::from_secs(600), 3);
        for i in 0..10 {
            correlator.observe(occurrence(&format!("p{i}"), "Started", "x"), at(i));
        }
        assert_eq!(correlator.len(), 3);
        // The most recent are kept.
        let again = correlator.observe(occurrence("p9", "Started", "x"), at(20));
        assert_eq!(again.count, Some(2));
        // A storm: an eighth goes at a time, never more than the capacity stays.
        let mut correlator = Correlator::new(Duration::from_secs(600), 64);
        for i in 0..1000 {
            correlator.observe(occurrence(&format!("p{i}"), "Started", "x"), at(i / 10));
            assert!(correlator.len() <= 64);
        }
        let recent = correlator.observe(occurrence("p999", "Started", "x"), at(100));
        assert_eq!(recent.count, Some(2));
    }

    #[test]
    fn names_are_unique_within_one_instant() {
        let mut correlator = Correlator::default();
        let a = correlator.observe(occurrence("web", "Created", "a"), at(0));
        let b = correlator.observe(occurrence("web", "Started", "b"), at(0));
        assert_ne!(a.metadata.name, b.metadata.name);
    }

    #[test]
    fn a_batch_writes_each_event_once_with_its_latest_count() {
        let (recorder, mut queue) = channel(8, "kubelet", RateLimit::KUBELET);
        drop(recorder);
        let occurrences = vec![
            occurrence("web", "Unhealthy", "Liveness probe failed"),
            occurrence("web", "Killing", "Stopping container c"),
            occurrence("web", "Unhealthy", "Liveness probe failed"),
            occurrence("web", "Unhealthy", "Liveness probe failed"),
        ];
        let events = queue.correlate(occurrences, at(0));
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].reason.as_deref(), Some("Unhealthy"));
        assert_eq!(events[0].count, Some(3));
        assert_eq!(events[1].count, Some(1));
    }

    #[tokio::test]
    async fn a_full_queue_drops_instead_of_waiting() {
        let (recorder, mut queue) = channel(2, "default-scheduler", RateLimit::KUBELET);
        let pod = pod_ref("web");
        for i in 0..5 {
            recorder.warning(&pod, "FailedScheduling", format!("try {i}"));
        }
        assert_eq!(queue.newly_dropped().queue_full, 3);
        assert_eq!(queue.newly_dropped(), Dropped::default());
        let events = queue.next_batch(Duration::ZERO, 16).await.unwrap();
        let messages: Vec<_> = events.iter().map(|e| e.message.clone().unwrap()).collect();
        assert_eq!(messages, ["try 0", "try 1"]);
        assert_eq!(events[0].type_.as_deref(), Some("Warning"));
        assert_eq!(
            events[0].source.as_ref().unwrap().component.as_deref(),
            Some("default-scheduler")
        );
        drop(recorder);
        assert!(queue.next_batch(Duration::ZERO, 16).await.is_none());
    }

    #[test]
    fn events_need_an_object_and_a_reason_in_its_namespace() {
        let mut event = Correlator::default().observe(occurrence("web", "Started", "x"), at(0));
        assert!(crate::validation::validate(&event.clone().into()).is_empty());
        event.reason = None;
        event.type_ = Some("Fatal".into());
        event.involved_object.name = None;
        event.involved_object.namespace = Some("other".into());
        let errors = crate::validation::validate(&event.into());
        let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "involvedObject.name",
                "involvedObject.namespace",
                "reason",
                "type"
            ],
            "{errors:?}"
        );
    }

    #[test]
    fn the_bucket_allows_a_burst_then_the_rate() {
        let limit = RateLimit {
            per_second: 10.0,
            burst: 3,
        };
        let mut bucket = Bucket::new(limit);
        let start = std::time::Instant::now();
        let taken = (0..5).filter(|_| bucket.take(start)).count();
        assert_eq!(taken, 3);
        // 10 per second: one more after 100 ms, none before.
        assert!(!bucket.take(start + Duration::from_millis(50)));
        assert!(bucket.take(start + Duration::from_millis(150)));
        assert!(!bucket.take(start + Duration::from_millis(150)));
        // A long pause refills to the burst, not beyond.
        let later = start + Duration::from_secs(60);
        assert_eq!((0..10).filter(|_| bucket.take(later)).count(), 3);
    }

    #[tokio::test]
    async fn events_over_the_rate_are_dropped_and_counted() {
        let limit = RateLimit {
            per_second: 0.001,
            burst: 2,
        };
        let (recorder, mut queue) = channel(16, "default-scheduler", limit);
        for i in 0..5 {
            recorder.normal(&pod_ref(&format!("p{i}")), "Scheduled", "x");
        }
        let events = queue.next_batch(Duration::ZERO, 16).await.unwrap();
        let names: Vec<_> = events
            .iter()
            .map(|e| e.involved_object.name.clone().unwrap())
            .collect();
        assert_eq!(names, ["p0", "p1"]);
        let dropped = queue.newly_dropped();
        assert_eq!((dropped.queue_full, dropped.over_rate), (0, 3));
        assert!(!queue.newly_dropped().any());
    }

    #[test]
    fn long_messages_are_cut() {
        let mut correlator = Correlator::default();
        let event = correlator.observe(occurrence("web", "Unhealthy", &"x".repeat(5000)), at(0));
        assert_eq!(event.message.unwrap().len(), MAX_MESSAGE + 3);
    }

    #[test]
    fn node_events_live_in_the_default_namespace() {
        let node = ObjectMeta {
            name: Some("node-1".into()),
            uid: Some("u".into()),
            ..ObjectMeta::default()
        };
        let mut correlator = Correlator::default();
        let occurrence = Occurrence {
            involved: reference(Kind::Node, &node),
            ..occurrence(
                "x",
                "NodeNotReady",
                "Node node-1 status is now: NodeNotReady",
            )
        };
        let event = correlator.observe(occurrence, at(0));
        assert_eq!(event.metadata.namespace.as_deref(), Some("default"));
        assert_eq!(event.involved_object.namespace, None);
        assert_eq!(event.involved_object.kind.as_deref(), Some("Node"));
        let errors = crate::validation::validate(&crate::Resource::from(event));
        assert!(errors.is_empty(), "{errors:?}");
    }
}
