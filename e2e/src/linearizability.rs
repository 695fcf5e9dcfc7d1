//! Linearizability checker for histories recorded against berth's store.
//!
//! An e2e test runs concurrent clients against a cluster (often while it kills nodes or cuts
//! the network), records every request in a [`History`], and asks [`check`] whether what the
//! clients saw could have come from one copy of the store in which every operation took effect
//! atomically at an instant between its invocation and its completion. Raft promises exactly
//! that, so any other verdict is a bug.
//!
//! ```text
//!   client threads ───── requests ─────▶ berth cluster
//!         │
//!         └── invoke / complete ──▶ History ── events() ──▶ check() ──▶ Verdict
//!                                                       (one search per key)
//! ```
//!
//! The store is modelled as independent registers, one per key. Linearizability is
//! compositional (Herlihy & Wing), so each key's sub-history is checked on its own, which keeps
//! the search small. Per key the search is Wing & Gong's with Lowe's memoisation: invocations
//! and completions sit in a time-ordered linked list; a depth-first search repeatedly picks an
//! operation invoked before the earliest remaining completion (any such operation may be the
//! next to take effect), applies it to the register, and backtracks when nothing fits. A cache
//! of (set of operations that took effect, register value) skips configurations already
//! explored, since the rest of the search depends on nothing else.
//!
//! Operations with an unknown outcome are what makes the search blow up: each stays a
//! candidate to the end, so every subset of them is a configuration of its own. The search
//! drops those nobody observed, places the others only where something observes them, and
//! lets a failed configuration stand in for those with more of them taken effect. Values that
//! nothing left reads are merged, so tests should write unique values. The worst case stays
//! exponential; a budget on configurations turns it into [`Verdict::Unknown`].

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Instant;

/// A register value. The checker needs only equality.
pub type Value = String;

/// An operation on one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Read,
    Write(Value),
    /// Compare-and-set: writes `new` if and only if the key holds `expected` (`None`: absent).
    Cas {
        expected: Option<Value>,
        new: Value,
    },
    Delete,
}

/// What the client learned: [`Op::Read`] gives `Read`, [`Op::Write`] and [`Op::Delete`] give
/// `Ok`, [`Op::Cas`] gives `Cas`; any of them may give `Unknown`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Read(Option<Value>),
    Ok,
    /// Whether the compare-and-set wrote.
    Cas(bool),
    /// The client does not know whether it took effect (timeout, connection lost): it may have
    /// happened at any point after invocation, or never.
    Unknown,
}

/// One operation as its client saw it.
///
/// Times are nanoseconds on one clock shared by all clients (for a [`History`], since its
/// creation). Only their order matters: an operation precedes another if it completed strictly
/// before the other was invoked; equal times count as concurrent.
#[derive(Debug, Clone)]
pub struct Event {
    pub client: usize,
    pub key: String,
    pub op: Op,
    pub outcome: Outcome,
    pub invoked: u64,
    /// `None` leaves the window open: the operation took effect at some instant after
    /// invocation. Ignored when the outcome is [`Outcome::Unknown`], whose window never closes:
    /// a client giving up does not stop the request from being applied later.
    pub completed: Option<u64>,
}

/// Records a history while clients run; share it by reference or in an `Arc`:
///
/// ```ignore
/// let id = history.invoke(client, "config", op.clone());
/// let outcome = send(op); // errors that leave the effect in doubt become Outcome::Unknown
/// history.complete(id, outcome);
/// ```
///
/// Anything never completed counts as [`Outcome::Unknown`]. Timestamps come from one clock
/// behind the lock and strictly increase in call order, so the order the checker sees is
/// exactly the order of the `invoke`/`complete` calls.
pub struct History {
    recording: Mutex<Recording>,
}

struct Recording {
    epoch: Instant,
    last: u64,
    events: Vec<Event>,
    completed: Vec<bool>,
}

impl Recording {
    fn stamp(&mut self) -> u64 {
        let elapsed = u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
        // Two calls may read the same nanosecond; bumping keeps the call order unambiguous.
        self.last = elapsed.max(self.last + 1);
        self.last
    }
}

impl Default for History {
    fn default() -> Self {
        Self::new()
    }
}

impl History {
    pub fn new() -> Self {
        History {
            recording: Mutex::new(Recording {
                epoch: Instant::now(),
                last: 0,
                events: Vec::new(),
                completed: Vec::new(),
            }),
        }
    }

    /// Records that `client` is about to send `op`; call it before sending. Returns the id to
    /// pass to [`History::complete`].
    pub fn invoke(&self, client: usize, key: &str, op: Op) -> usize {
        let mut recording = self.lock();
        let invoked = recording.stamp();
        recording.events.push(Event {
            client,
            key: key.to_string(),
            op,
            outcome: Outcome::Unknown,
            invoked,
            completed: None,
        });
        recording.completed.push(false);
        recording.events.len() - 1
    }

    /// Records what the client learned; call it after the reply (or the error) arrived.
    /// Completing with [`Outcome::Unknown`] leaves the operation open-ended.
    ///
    /// # Panics
    /// If `id` did not come from [`History::invoke`] or was completed already.
    pub fn complete(&self, id: usize, outcome: Outcome) {
        let mut recording = self.lock();
        assert!(
            id < recording.events.len(),
            "History::complete({id}): no such invocation"
        );
        assert!(
            !recording.completed[id],
            "History::complete({id}) called twice"
        );
        let at = recording.stamp();
        recording.completed[id] = true;
        let event = &mut recording.events[id];
        if outcome != Outcome::Unknown {
            event.completed = Some(at);
        }
        event.outcome = outcome;
    }

    /// Everything recorded so far, in invocation order.
    pub fn events(&self) -> Vec<Event> {
        self.lock().events.clone()
    }

    fn lock(&self) -> MutexGuard<'_, Recording> {
        // A client thread that panicked mid-test must not hide the history from the checker.
        self.recording
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// What [`check`] found.
#[derive(Debug)]
pub enum Verdict {
    Linearizable,
    NotLinearizable {
        key: String,
        /// The longest prefix the search could order and the operations stuck after it.
        explanation: String,
    },
    /// The search budget ran out on `key` before finding an order or proving there is none.
    Unknown {
        key: String,
    },
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Linearizable => write!(f, "linearizable"),
            Verdict::NotLinearizable { key, explanation } => {
                write!(f, "not linearizable on key {key:?}: {explanation}")
            }
            Verdict::Unknown { key } => {
                write!(f, "unknown: search budget exhausted on key {key:?}")
            }
        }
    }
}

/// Configurations visited per key before giving up. A correct history needs little more than
/// one per operation; proving a violation after many timeouts may need far more. Exhausting
/// this takes well under a second in a release build and keeps a key's cache to some tens of
/// megabytes.
pub const DEFAULT_MAX_STATES_PER_KEY: usize = 250_000;

/// Checks `events` with [`DEFAULT_MAX_STATES_PER_KEY`].
pub fn check(events: &[Event]) -> Verdict {
    check_with_budget(events, DEFAULT_MAX_STATES_PER_KEY)
}

/// Checks each key's sub-history in key order. A violation on any key wins over a budget
/// exhausted on another, because it is definite.
///
/// # Panics
/// On a malformed event: an outcome that does not belong to its operation (a `Write` that
/// returned `Cas(true)`), or a completion before the invocation.
pub fn check_with_budget(events: &[Event], max_states_per_key: usize) -> Verdict {
    let mut by_key: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (index, event) in events.iter().enumerate() {
        by_key.entry(&event.key).or_default().push(index);
    }
    let mut exhausted = None;
    for (key, indices) in by_key {
        match check_key(events, &indices, max_states_per_key) {
            KeyVerdict::Linearizable => {}
            KeyVerdict::NotLinearizable(explanation) => {
                return Verdict::NotLinearizable {
                    key: key.to_string(),
                    explanation,
                }
            }
            KeyVerdict::BudgetExhausted => {
                exhausted.get_or_insert(key);
            }
        }
    }
    match exhausted {
        None => Verdict::Linearizable,
        Some(key) => Verdict::Unknown {
            key: key.to_string(),
        },
    }
}

enum KeyVerdict {
    Linearizable,
    NotLinearizable(String),
    BudgetExhausted,
}

fn check_key(events: &[Event], indices: &[usize], budget: usize) -> KeyVerdict {
    let mut values = Interner::default();
    let ops: Vec<KeyOp> = indices
        .iter()
        .filter_map(|&index| KeyOp::new(index, &events[index], &mut values))
        .collect();
    let ops = without_unobserved_unknowns(ops);
    match search(&ops, values.values.len(), budget) {
        Search::Linearizable => KeyVerdict::Linearizable,
        Search::BudgetExhausted => KeyVerdict::BudgetExhausted,
        Search::Stuck(stuck) => KeyVerdict::NotLinearizable(explain(&stuck, &ops, events, &values)),
    }
}

/// Values as small integers, so configurations hash and compare cheaply.
#[derive(Default)]
struct Interner<'a> {
    ids: HashMap<&'a str, u32>,
    values: Vec<&'a str>,
}

impl<'a> Interner<'a> {
    fn id(&mut self, value: &'a str) -> u32 {
        *self.ids.entry(value).or_insert_with(|| {
            self.values.push(value);
            (self.values.len() - 1) as u32
        })
    }

    fn show(&self, value: Option<u32>) -> String {
        show(value.map(|id| self.values[id as usize]))
    }
}

/// An event reduced to what the register model needs. `None` is the absent key.
#[derive(Debug, Clone, Copy)]
enum Step {
    Read(Option<u32>),
    /// Write (`Some`) or delete (`None`).
    Set(Option<u32>),
    /// `succeeded` is `None` when the outcome is unknown.
    Cas {
        expected: Option<u32>,
        new: u32,
        succeeded: Option<bool>,
    },
}

impl Step {
    /// The register's value after this step from `value`, or `None` if what the client saw
    /// rules the step out at this point.
    fn apply(self, value: Option<u32>) -> Option<Option<u32>> {
        match self {
            Step::Read(seen) => (seen == value).then_some(value),
            Step::Set(new) => Some(new),
            Step::Cas {
                expected,
                new,
                succeeded: Some(true),
            } => (value == expected).then_some(Some(new)),
            Step::Cas {
                expected,
                succeeded: Some(false),
                ..
            } => (value != expected).then_some(value),
            Step::Cas {
                expected,
                new,
                succeeded: None,
            } => Some(if value == expected { Some(new) } else { value }),
        }
    }

    /// The value this step leaves when it changes the register.
    fn effect(self) -> Option<Option<u32>> {
        match self {
            Step::Read(_) => None,
            Step::Set(new) => Some(new),
            Step::Cas { new, .. } => Some(Some(new)),
        }
    }
}

/// After an operation with an unknown outcome, the value before it: what may come next is
/// restricted (see [`KeyOp::next_value`]).
type Restriction = Option<Option<u32>>;

struct KeyOp {
    /// Index into the checked events, for explanations.
    event: usize,
    step: Step,
    /// Known outcome: it took effect. Unknown ones may never have.
    required: bool,
    invoked: u64,
    /// It took effect by then; `None` for open-ended windows.
    deadline: Option<u64>,
}

impl KeyOp {
    /// The value after placing this operation next, or `None` if the search need not place it
    /// here. Besides what the client saw, this restricts the search to orders of a canonical
    /// form, which exist whenever any order does:
    /// - An unknown operation that leaves the value as it was can be left out.
    /// - An unknown operation whose value is overwritten before anything observes it can be
    ///   left out. So after one (`after_unknown` is the value before it), no write or delete
    ///   follows.
    /// - A failed compare-and-set that would have failed without the unknown operation just
    ///   before it can swap places with it. So after one, only a failed compare-and-set that
    ///   expected the earlier value follows.
    ///
    /// Without this, the search tries every interleaving of the unknown operations with
    /// writes and failed compare-and-sets, which nobody can tell apart.
    fn next_value(&self, value: Option<u32>, after_unknown: Restriction) -> Option<Option<u32>> {
        let next = self.step.apply(value)?;
        if !self.required && next == value {
            return None;
        }
        match (self.step, after_unknown) {
            (_, None) => Some(next),
            (Step::Set(_), Some(_)) => None,
            (
                Step::Cas {
                    expected,
                    succeeded: Some(false),
                    ..
                },
                Some(before),
            ) => (expected == before).then_some(next),
            (_, Some(_)) => Some(next),
        }
    }

    fn new<'a>(index: usize, event: &'a Event, values: &mut Interner<'a>) -> Option<KeyOp> {
        let step = match (&event.op, &event.outcome) {
            // Whatever it might have returned, a read changes nothing.
            (Op::Read, Outcome::Unknown) => return None,
            (Op::Read, Outcome::Read(seen)) => Step::Read(seen.as_deref().map(|v| values.id(v))),
            (Op::Write(value), Outcome::Ok | Outcome::Unknown) => Step::Set(Some(values.id(value))),
            (Op::Delete, Outcome::Ok | Outcome::Unknown) => Step::Set(None),
            (Op::Cas { expected, new }, Outcome::Cas(_) | Outcome::Unknown) => Step::Cas {
                expected: expected.as_deref().map(|v| values.id(v)),
                new: values.id(new),
                succeeded: match event.outcome {
                    Outcome::Cas(succeeded) => Some(succeeded),
                    _ => None,
                },
            },
            (op, outcome) => panic!("event {index}: {op:?} cannot have outcome {outcome:?}"),
        };
        let required = event.outcome != Outcome::Unknown;
        let deadline = if required { event.completed } else { None };
        if let Some(deadline) = deadline {
            assert!(
                deadline >= event.invoked,
                "event {index}: completed at {deadline}, before its invocation at {}",
                event.invoked
            );
        }
        Some(KeyOp {
            event: index,
            step,
            required,
            invoked: event.invoked,
            deadline,
        })
    }
}

/// What an operation tells about the value before it, if anything: a read returned it, a
/// compare-and-set found it equal to `expected` or not.
fn observed(step: Step) -> Option<Option<u32>> {
    match step {
        Step::Read(seen) => Some(seen),
        Step::Cas { expected, .. } => Some(expected),
        Step::Set(_) => None,
    }
}

/// Drops unknown operations whose effect nobody could have observed: assuming they never
/// happened changes no verdict, and each one left in would stay a candidate for the rest of
/// the search. Timeouts during a partition produce many of them.
///
/// Why it is sound: take any valid order and remove such operations (and unknown compare-and-
/// sets that did not write). Every remaining read or compare-and-set saw the value of the
/// last write before it; that write's value was observed, so it was kept, and nothing kept
/// lies between them. A failed compare-and-set only sees "not the expected value", which the
/// removal could break if the key can hold that value, so keys with such a one are left alone.
fn without_unobserved_unknowns(mut ops: Vec<KeyOp>) -> Vec<KeyOp> {
    let written: HashSet<Option<u32>> = ops.iter().filter_map(|op| op.step.effect()).collect();
    let risky = ops.iter().any(|op| match op.step {
        Step::Cas {
            expected,
            succeeded: Some(false),
            ..
        } => expected.is_none() || written.contains(&expected),
        _ => false,
    });
    if risky {
        return ops;
    }
    let observed: HashSet<Option<u32>> = ops.iter().filter_map(|op| observed(op.step)).collect();
    ops.retain(|op| {
        op.required
            || op
                .step
                .effect()
                .is_some_and(|effect| observed.contains(&effect))
    });
    ops
}

const NIL: usize = usize::MAX;
/// Head of the list of invocations and completions of operations with a known outcome.
const REQUIRED: usize = 0;
/// Head of the list of invocations of operations with an unknown outcome (they have no
/// completion).
const OPTIONAL: usize = 1;

/// The two time-ordered, doubly linked lists of entries. Taking an operation out of the lists
/// and putting it back in reverse order restores them exactly (dancing links), which is what
/// makes backtracking cheap.
struct Timeline {
    next: Vec<usize>,
    prev: Vec<usize>,
    time: Vec<u64>,
    op: Vec<usize>,
    is_completion: Vec<bool>,
    call: Vec<usize>,
    completion: Vec<usize>,
}

impl Timeline {
    fn new(ops: &[KeyOp]) -> Timeline {
        let mut entries: Vec<(u64, bool, usize)> = Vec::with_capacity(ops.len() * 2);
        for (i, op) in ops.iter().enumerate() {
            entries.push((op.invoked, false, i));
            if let Some(deadline) = op.deadline {
                entries.push((deadline, true, i));
            }
        }
        // At equal times invocations go first: equal times count as concurrent.
        entries.sort_unstable();
        let nodes = entries.len() + 2;
        let mut timeline = Timeline {
            next: vec![NIL; nodes],
            prev: vec![NIL; nodes],
            time: vec![0; nodes],
            op: vec![NIL; nodes],
            is_completion: vec![false; nodes],
            call: vec![NIL; ops.len()],
            completion: vec![NIL; ops.len()],
        };
        let mut tails = [REQUIRED, OPTIONAL];
        for (k, &(time, is_completion, op)) in entries.iter().enumerate() {
            let node = k + 2;
            timeline.time[node] = time;
            timeline.op[node] = op;
            timeline.is_completion[node] = is_completion;
            if is_completion {
                timeline.completion[op] = node;
            } else {
                timeline.call[op] = node;
            }
            let tail = &mut tails[usize::from(!ops[op].required)];
            timeline.next[*tail] = node;
            timeline.prev[node] = *tail;
            *tail = node;
        }
        timeline
    }

    fn lift(&mut self, op: usize) {
        self.unlink(self.call[op]);
        if self.completion[op] != NIL {
            self.unlink(self.completion[op]);
        }
    }

    fn unlift(&mut self, op: usize) {
        if self.completion[op] != NIL {
            self.relink(self.completion[op]);
        }
        self.relink(self.call[op]);
    }

    fn unlink(&mut self, node: usize) {
        let (prev, next) = (self.prev[node], self.next[node]);
        self.next[prev] = next;
        if next != NIL {
            self.prev[next] = prev;
        }
    }

    fn relink(&mut self, node: usize) {
        let (prev, next) = (self.prev[node], self.next[node]);
        self.next[prev] = node;
        if next != NIL {
            self.prev[next] = node;
        }
    }

    /// The earliest remaining completion: every remaining operation invoked by then may be the
    /// next to take effect, and no other may.
    fn horizon(&self) -> (u64, Option<usize>) {
        let mut node = self.next[REQUIRED];
        while node != NIL {
            if self.is_completion[node] {
                return (self.time[node], Some(self.op[node]));
            }
            node = self.next[node];
        }
        (u64::MAX, None)
    }

    /// The operations that may take effect next, known outcomes first.
    fn candidates(&self) -> Vec<usize> {
        let (horizon, _) = self.horizon();
        let mut found = Vec::new();
        let mut node = self.next[REQUIRED];
        while node != NIL && !self.is_completion[node] {
            found.push(self.op[node]);
            node = self.next[node];
        }
        let mut node = self.next[OPTIONAL];
        while node != NIL && self.time[node] <= horizon {
            found.push(self.op[node]);
            node = self.next[node];
        }
        found
    }
}

/// Where the search stands among the candidates of the current configuration. Operations with
/// a known outcome are tried before unknown ones: unknown ones can almost always be placed,
/// and placing them eagerly would send the search down long dead ends.
#[derive(Clone, Copy)]
enum Cursor {
    Required(usize),
    Optional { node: usize, horizon: u64 },
}

/// The part of a configuration that must match exactly for one to stand in for another.
#[derive(Clone, PartialEq, Eq, Hash)]
struct Config {
    /// Bit `slot`: that operation with a known outcome took effect.
    required: Vec<u64>,
    /// As far as the rest of the search can tell (see [`Readers`]).
    value: Option<u32>,
}

/// Bit `slot`: that operation with an unknown outcome took effect.
type OptionalSet = Vec<u64>;

fn flip(bits: &mut [u64], slot: usize) {
    bits[slot / 64] ^= 1 << (slot % 64);
}

fn is_subset(small: &[u64], large: &[u64]) -> bool {
    small.iter().zip(large).all(|(s, l)| s & !l == 0)
}

/// Stands for every value that no operation left to place can tell from another.
const OPAQUE: Option<u32> = Some(u32::MAX);

/// Which values the rest of the search can still tell apart. Once every read returning a value
/// and every compare-and-set expecting it has taken effect, holding it is the same as holding
/// any other such value, so configurations that differ only there are one. With unique write
/// values (which tests should use) that merges most configurations a timeout creates.
struct Readers {
    /// Per value (index 0: absent): observers with a known outcome not placed yet.
    pending: Vec<usize>,
    /// Values an unknown compare-and-set expects: it may take effect at any time.
    forever: Vec<bool>,
}

impl Readers {
    fn new(ops: &[KeyOp], values: usize) -> Readers {
        let mut readers = Readers {
            pending: vec![0; values + 1],
            forever: vec![false; values + 1],
        };
        for op in ops {
            if let Some(value) = observed(op.step) {
                if op.required {
                    readers.pending[Self::index(value)] += 1;
                } else {
                    readers.forever[Self::index(value)] = true;
                }
            }
        }
        readers
    }

    fn index(value: Option<u32>) -> usize {
        value.map_or(0, |v| v as usize + 1)
    }

    /// Tracks an operation with a known outcome taking effect (`placed`) or being taken back.
    fn update(&mut self, step: Step, placed: bool) {
        if let Some(value) = observed(step) {
            let pending = &mut self.pending[Self::index(value)];
            if placed {
                *pending -= 1;
            } else {
                *pending += 1;
            }
        }
    }

    fn abstracted(&self, value: Option<u32>) -> Option<u32> {
        let index = Self::index(value);
        if self.pending[index] == 0 && !self.forever[index] {
            OPAQUE
        } else {
            value
        }
    }
}

/// Lowe's cache of configurations from which the search failed, extended by inclusion. A
/// configuration stands in for another that agrees on the required operations and the value
/// if it has a subset of its unknown operations taken effect (leaving one out is always
/// allowed) and is no more restricted in what may come next (see [`KeyOp::next_value`]).
/// Without inclusion every subset of the unknown operations invoked so far is a configuration
/// of its own.
///
/// Only finished configurations go in: one still on the search path has not failed yet.
#[derive(Default)]
struct Dead {
    /// Per exact part, failed (restriction, optional set) pairs none of the others covers.
    failed: HashMap<Config, Vec<(Restriction, OptionalSet)>>,
}

/// Entries kept per exact part. Forgetting one only costs searching again, and unbounded
/// lists make every lookup slow once timeouts pile up.
const MAX_ENTRIES: usize = 64;

impl Dead {
    fn covers(&self, config: &Config, restriction: Restriction, optional: &[u64]) -> bool {
        self.failed.get(config).is_some_and(|entries| {
            entries
                .iter()
                .any(|(failed, set)| covers(*failed, set, restriction, optional))
        })
    }

    fn insert(&mut self, config: &Config, restriction: Restriction, optional: &[u64]) {
        let entries = self.failed.entry(config.clone()).or_default();
        entries.retain(|(failed, set)| !covers(restriction, optional, *failed, set));
        if entries.len() == MAX_ENTRIES {
            entries.remove(0);
        }
        entries.push((restriction, optional.to_vec()));
    }
}

/// Whether failing from the first configuration implies failing from the second.
fn covers(
    restriction: Restriction,
    set: &[u64],
    other_restriction: Restriction,
    other_set: &[u64],
) -> bool {
    (restriction.is_none() || restriction == other_restriction) && is_subset(set, other_set)
}

/// The deepest configuration where the search ran out of candidates.
struct Stuck {
    /// Operations in the order they took effect.
    prefix: Vec<usize>,
    value: Option<u32>,
    candidates: Vec<usize>,
    /// The operation whose completion bounds the candidates.
    blocking: Option<usize>,
}

enum Search {
    Linearizable,
    Stuck(Stuck),
    BudgetExhausted,
}

/// The depth-first search over one key's operations; `values` is how many distinct values
/// they mention.
fn search(ops: &[KeyOp], values: usize, budget: usize) -> Search {
    let mut timeline = Timeline::new(ops);
    // Each operation's bit among those of its kind.
    let slots: Vec<usize> = ops
        .iter()
        .scan([0, 0], |next, op| {
            let kind = usize::from(op.required);
            next[kind] += 1;
            Some(next[kind] - 1)
        })
        .collect();
    let required_count = ops.iter().filter(|op| op.required).count();
    let mut config = Config {
        required: vec![0; required_count.div_ceil(64)],
        value: None,
    };
    let mut optional: OptionalSet = vec![0; (ops.len() - required_count).div_ceil(64)];
    // Marks `op` as taken effect, or takes that back.
    let flip_op = |config: &mut Config, optional: &mut OptionalSet, op: usize| {
        let bits = if ops[op].required {
            &mut config.required
        } else {
            optional
        };
        flip(bits, slots[op]);
    };
    let mut readers = Readers::new(ops, values);
    let mut dead = Dead::default();
    let mut visited = 0;
    // The register's value; `config.value` is what the rest of the search can tell of it, set
    // whenever `config` is used as a key.
    let mut value = None;
    // Each frame: the operation placed and the value before it.
    let mut stack: Vec<(usize, Option<u32>)> = Vec::new();
    let mut remaining = required_count;
    let mut deepest: Option<Stuck> = None;
    let mut cursor = Cursor::Required(timeline.next[REQUIRED]);
    loop {
        if remaining == 0 {
            // Unknown operations left over never happened (or happened after everything).
            return Search::Linearizable;
        }
        // Set when the last operation placed had an unknown outcome: the value before it.
        let after_unknown = stack
            .last()
            .filter(|&&(op, _)| !ops[op].required)
            .map(|&(_, before)| before);
        let node = match cursor {
            Cursor::Required(node) if node != NIL && !timeline.is_completion[node] => node,
            Cursor::Required(node) => {
                let horizon = if node == NIL {
                    u64::MAX
                } else {
                    timeline.time[node]
                };
                cursor = Cursor::Optional {
                    node: timeline.next[OPTIONAL],
                    horizon,
                };
                continue;
            }
            Cursor::Optional { node, horizon } if node != NIL && timeline.time[node] <= horizon => {
                node
            }
            Cursor::Optional { .. } => {
                if deepest
                    .as_ref()
                    .is_none_or(|stuck| stack.len() > stuck.prefix.len())
                {
                    deepest = Some(Stuck {
                        prefix: stack.iter().map(|&(op, _)| op).collect(),
                        value,
                        candidates: timeline.candidates(),
                        blocking: timeline.horizon().1,
                    });
                }
                let Some((op, before)) = stack.pop() else {
                    return Search::Stuck(deepest.expect("recorded just above"));
                };
                config.value = readers.abstracted(value);
                let restriction = after_unknown.map(|before| readers.abstracted(before));
                dead.insert(&config, restriction, &optional);
                timeline.unlift(op);
                flip_op(&mut config, &mut optional, op);
                value = before;
                let after = timeline.next[timeline.call[op]];
                cursor = if ops[op].required {
                    readers.update(ops[op].step, false);
                    remaining += 1;
                    Cursor::Required(after)
                } else {
                    Cursor::Optional {
                        node: after,
                        horizon: timeline.horizon().0,
                    }
                };
                continue;
            }
        };
        let op = timeline.op[node];
        if let Some(next) = ops[op].next_value(value, after_unknown) {
            flip_op(&mut config, &mut optional, op);
            if ops[op].required {
                readers.update(ops[op].step, true);
            }
            config.value = readers.abstracted(next);
            let restriction = (!ops[op].required).then(|| readers.abstracted(value));
            if !dead.covers(&config, restriction, &optional) {
                if visited >= budget {
                    return Search::BudgetExhausted;
                }
                visited += 1;
                stack.push((op, value));
                timeline.lift(op);
                value = next;
                if ops[op].required {
                    remaining -= 1;
                }
                cursor = Cursor::Required(timeline.next[REQUIRED]);
                continue;
            }
            // Failed from there before, or from a configuration that stands in for it.
            flip_op(&mut config, &mut optional, op);
            if ops[op].required {
                readers.update(ops[op].step, false);
            }
        }
        let next = timeline.next[node];
        cursor = match cursor {
            Cursor::Required(_) => Cursor::Required(next),
            Cursor::Optional { horizon, .. } => Cursor::Optional {
                node: next,
                horizon,
            },
        };
    }
}

/// How many operations of the consistent prefix an explanation shows.
const PREFIX_SHOWN: usize = 10;

fn explain(stuck: &Stuck, ops: &[KeyOp], events: &[Event], values: &Interner) -> String {
    use std::fmt::Write;
    let mut text = String::new();
    let shown = stuck.prefix.len().min(PREFIX_SHOWN);
    let (state, next) = if stuck.prefix.is_empty() {
        ("the key starts", "first")
    } else {
        let _ = writeln!(
            text,
            "the longest order found covers {} operations (last {shown} shown):",
            stuck.prefix.len(),
        );
        for &op in &stuck.prefix[stuck.prefix.len() - shown..] {
            let _ = writeln!(text, "  {}", describe(ops[op].event, events));
        }
        ("after it the key is", "next")
    };
    let bound = match stuck.blocking {
        Some(op) => format!(" (invoked before event {} completed)", ops[op].event),
        None => String::new(),
    };
    let _ = writeln!(
        text,
        "{state} {}, and none of the operations that may come {next}{bound} fits:",
        values.show(stuck.value),
    );
    for &op in &stuck.candidates {
        let why = if ops[op].step.apply(stuck.value).is_some() {
            "fits, but leads to a dead end"
        } else {
            "contradicts that value"
        };
        let _ = writeln!(text, "  {}: {why}", describe(ops[op].event, events));
    }
    text
}

fn describe(index: usize, events: &[Event]) -> String {
    let event = &events[index];
    let call = match &event.op {
        Op::Read => "read()".to_string(),
        Op::Write(value) => format!("write({value:?})"),
        Op::Cas { expected, new } => format!("cas({} => {new:?})", show(expected.as_deref())),
        Op::Delete => "delete()".to_string(),
    };
    let result = match &event.outcome {
        Outcome::Read(seen) => show(seen.as_deref()),
        Outcome::Ok => "ok".to_string(),
        Outcome::Cas(succeeded) => succeeded.to_string(),
        Outcome::Unknown => "unknown".to_string(),
    };
    let window = match (&event.outcome, event.completed) {
        (Outcome::Unknown, _) | (_, None) => format!("[{}, open)", event.invoked),
        (_, Some(completed)) => format!("[{}, {completed}]", event.invoked),
    };
    format!(
        "event {index} (client {}): {call} -> {result} {window}",
        event.client
    )
}

fn show(value: Option<&str>) -> String {
    match value {
        Some(value) => format!("{value:?}"),
        None => "absent".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(client: usize, op: Op, outcome: Outcome, invoked: u64, completed: u64) -> Event {
        Event {
            client,
            key: "k".to_string(),
            op,
            outcome,
            invoked,
            completed: Some(completed),
        }
    }

    fn unknown(client: usize, op: Op, invoked: u64) -> Event {
        Event {
            client,
            key: "k".to_string(),
            op,
            outcome: Outcome::Unknown,
            invoked,
            completed: None,
        }
    }

    fn on(key: &str, event: Event) -> Event {
        Event {
            key: key.to_string(),
            ..event
        }
    }

    fn write(value: &str) -> Op {
        Op::Write(value.to_string())
    }

    fn cas(expected: Option<&str>, new: &str) -> Op {
        Op::Cas {
            expected: expected.map(str::to_string),
            new: new.to_string(),
        }
    }

    fn saw(value: Option<&str>) -> Outcome {
        Outcome::Read(value.map(str::to_string))
    }

    #[track_caller]
    fn assert_linearizable(events: &[Event]) {
        let verdict = check(events);
        assert!(matches!(verdict, Verdict::Linearizable), "{verdict}");
    }

    /// Returns the explanation.
    #[track_caller]
    fn assert_violation(events: &[Event], on_key: &str) -> String {
        match check(events) {
            Verdict::NotLinearizable { key, explanation } => {
                assert_eq!(key, on_key, "{explanation}");
                explanation
            }
            verdict => panic!("expected a violation on {on_key:?}, got {verdict}"),
        }
    }

    #[test]
    fn empty_history_is_linearizable() {
        assert_linearizable(&[]);
    }

    #[test]
    fn sequential_history_is_linearizable() {
        assert_linearizable(&[
            ev(0, Op::Read, saw(None), 0, 1),
            ev(1, write("1"), Outcome::Ok, 2, 3),
            ev(0, Op::Read, saw(Some("1")), 4, 5),
            ev(2, cas(Some("1"), "2"), Outcome::Cas(true), 6, 7),
            ev(1, cas(Some("1"), "3"), Outcome::Cas(false), 8, 9),
            ev(0, Op::Delete, Outcome::Ok, 10, 11),
            ev(2, Op::Read, saw(None), 12, 13),
            ev(1, cas(None, "4"), Outcome::Cas(true), 14, 15),
            ev(0, Op::Read, saw(Some("4")), 16, 17),
        ]);
    }

    #[test]
    fn read_concurrent_with_write_may_see_either_value() {
        for seen in [None, Some("1")] {
            assert_linearizable(&[
                ev(0, write("1"), Outcome::Ok, 0, 10),
                ev(1, Op::Read, saw(seen), 2, 8),
            ]);
        }
    }

    #[test]
    fn read_of_a_value_never_written_is_not_linearizable() {
        assert_violation(
            &[
                ev(0, write("1"), Outcome::Ok, 0, 10),
                ev(1, Op::Read, saw(Some("2")), 2, 8),
            ],
            "k",
        );
    }

    #[test]
    fn stale_read_after_completed_write_is_not_linearizable() {
        assert_violation(
            &[
                ev(0, write("1"), Outcome::Ok, 0, 10),
                ev(1, Op::Read, saw(None), 11, 12),
            ],
            "k",
        );
    }

    #[test]
    fn read_and_write_at_the_same_instant_are_concurrent() {
        assert_linearizable(&[
            ev(0, write("1"), Outcome::Ok, 0, 10),
            ev(1, Op::Read, saw(None), 10, 12),
        ]);
    }

    #[test]
    fn two_cas_from_the_same_expected_value_cannot_both_succeed() {
        assert_violation(
            &[
                ev(0, write("0"), Outcome::Ok, 0, 1),
                ev(1, cas(Some("0"), "a"), Outcome::Cas(true), 2, 10),
                ev(2, cas(Some("0"), "b"), Outcome::Cas(true), 3, 9),
            ],
            "k",
        );
    }

    #[test]
    fn failed_cas_must_have_seen_another_value() {
        assert_violation(
            &[
                ev(0, write("0"), Outcome::Ok, 0, 1),
                ev(1, cas(Some("0"), "a"), Outcome::Cas(false), 2, 3),
            ],
            "k",
        );
        assert_linearizable(&[
            ev(0, write("0"), Outcome::Ok, 0, 1),
            ev(1, cas(Some("0"), "a"), Outcome::Cas(false), 2, 6),
            ev(2, write("1"), Outcome::Ok, 3, 4),
        ]);
    }

    #[test]
    fn lost_update_through_cas_is_not_linearizable() {
        // Two read-increment-CAS loops both read 0 and both CAS 0 -> 1 successfully: one
        // increment is lost, which a linearizable store cannot allow.
        assert_violation(
            &[
                ev(0, write("0"), Outcome::Ok, 0, 1),
                ev(1, Op::Read, saw(Some("0")), 2, 3),
                ev(2, Op::Read, saw(Some("0")), 2, 3),
                ev(1, cas(Some("0"), "1"), Outcome::Cas(true), 4, 6),
                ev(2, cas(Some("0"), "1"), Outcome::Cas(true), 5, 7),
                ev(0, Op::Read, saw(Some("1")), 8, 9),
            ],
            "k",
        );
    }

    #[test]
    fn lost_update_through_blind_writes_is_linearizable() {
        // The same increments with plain writes lose one too, but the register never promised
        // a read-modify-write: that is the client's race, not the store's.
        assert_linearizable(&[
            ev(0, write("0"), Outcome::Ok, 0, 1),
            ev(1, Op::Read, saw(Some("0")), 2, 3),
            ev(2, Op::Read, saw(Some("0")), 2, 3),
            ev(1, write("1"), Outcome::Ok, 4, 6),
            ev(2, write("1"), Outcome::Ok, 5, 7),
            ev(0, Op::Read, saw(Some("1")), 8, 9),
        ]);
    }

    #[test]
    fn read_after_delete_sees_the_key_absent() {
        let delete = [
            ev(0, write("1"), Outcome::Ok, 0, 1),
            ev(1, Op::Delete, Outcome::Ok, 2, 3),
        ];
        assert_linearizable(&[delete.to_vec(), vec![ev(0, Op::Read, saw(None), 4, 5)]].concat());
        assert_violation(
            &[delete.to_vec(), vec![ev(0, Op::Read, saw(Some("1")), 4, 5)]].concat(),
            "k",
        );
    }

    #[test]
    fn unknown_write_that_was_read_happened() {
        assert_linearizable(&[
            unknown(0, write("1"), 0),
            ev(1, Op::Read, saw(None), 5, 6),
            ev(1, Op::Read, saw(Some("1")), 100, 101),
        ]);
    }

    #[test]
    fn unknown_write_never_observed_may_not_have_happened() {
        assert_linearizable(&[
            unknown(0, write("1"), 0),
            ev(1, Op::Read, saw(None), 5, 6),
            ev(1, Op::Read, saw(None), 100, 101),
        ]);
    }

    #[test]
    fn unknown_write_may_explain_a_failed_cas() {
        // Nobody reads "x", but only "x" landing before the CAS explains why it failed: the
        // unknown write must not be dropped as unobserved.
        assert_linearizable(&[
            ev(0, write("a"), Outcome::Ok, 0, 1),
            unknown(1, write("x"), 2),
            ev(2, cas(Some("a"), "b"), Outcome::Cas(false), 3, 4),
        ]);
    }

    #[test]
    fn unknown_cas_may_have_taken_effect_or_not() {
        let base = [
            ev(0, write("a"), Outcome::Ok, 0, 1),
            unknown(1, cas(Some("a"), "b"), 2),
        ];
        for seen in ["a", "b"] {
            assert_linearizable(
                &[
                    base.to_vec(),
                    vec![ev(2, Op::Read, saw(Some(seen)), 10, 11)],
                ]
                .concat(),
            );
        }
        assert_violation(
            &[base.to_vec(), vec![ev(2, Op::Read, saw(Some("c")), 10, 11)]].concat(),
            "k",
        );
    }

    #[test]
    fn unknown_read_constrains_nothing() {
        assert_linearizable(&[
            ev(0, write("1"), Outcome::Ok, 0, 1),
            unknown(1, Op::Read, 2),
        ]);
    }

    #[test]
    fn read_cannot_see_unknown_write_invoked_after_it_completed() {
        assert_violation(
            &[
                ev(0, Op::Read, saw(Some("1")), 0, 10),
                unknown(1, write("1"), 20),
            ],
            "k",
        );
    }

    #[test]
    fn keys_are_independent() {
        // Merged into one register, "b" reading "1" would be fine.
        let events = [
            on("a", ev(0, write("1"), Outcome::Ok, 0, 1)),
            on("a", ev(1, Op::Read, saw(Some("1")), 2, 3)),
            on("b", ev(1, Op::Read, saw(Some("1")), 4, 5)),
            on("c", ev(2, write("2"), Outcome::Ok, 0, 5)),
        ];
        assert_violation(&events, "b");
    }

    #[test]
    fn explanation_names_the_operations_that_cannot_be_placed() {
        let explanation = assert_violation(
            &[
                ev(0, write("1"), Outcome::Ok, 0, 10),
                ev(3, write("2"), Outcome::Ok, 11, 12),
                ev(1, Op::Read, saw(Some("1")), 20, 30),
            ],
            "k",
        );
        assert!(
            explanation.contains("the longest order found covers 2 operations"),
            "{explanation}"
        );
        assert!(
            explanation.contains("event 2 (client 1): read() -> \"1\" [20, 30]: contradicts"),
            "{explanation}"
        );
        assert!(
            explanation.contains(concat!(
                "after it the key is \"2\", and none of the operations that may come next ",
                "(invoked before event 2 completed) fits:"
            )),
            "{explanation}"
        );
    }

    #[test]
    fn exhausted_budget_gives_unknown() {
        // Twenty concurrent writes and a read of a value none wrote: proving the violation
        // means trying every order of the writes.
        let mut events: Vec<Event> = (0..20)
            .map(|i| ev(i, write(&i.to_string()), Outcome::Ok, i as u64, 100))
            .collect();
        events.push(ev(20, Op::Read, saw(Some("none")), 200, 201));
        let verdict = check_with_budget(&events, 100);
        assert!(
            matches!(&verdict, Verdict::Unknown { key } if key == "k"),
            "{verdict}"
        );
    }

    #[test]
    fn violation_wins_over_exhausted_budget() {
        let mut events: Vec<Event> = (0..20)
            .map(|i| {
                on(
                    "a",
                    ev(i, write(&i.to_string()), Outcome::Ok, i as u64, 100),
                )
            })
            .collect();
        events.push(on("a", ev(20, Op::Read, saw(Some("none")), 200, 201)));
        events.push(on("b", ev(0, Op::Read, saw(Some("none")), 0, 1)));
        let verdict = check_with_budget(&events, 100);
        assert!(
            matches!(&verdict, Verdict::NotLinearizable { key, .. } if key == "b"),
            "{verdict}"
        );
    }

    #[test]
    fn unobserved_unknown_writes_do_not_blow_up_the_search() {
        // A partition's worth of timed-out writes, all open-ended and concurrent with
        // everything after them, none of them ever read.
        let mut events: Vec<Event> = (0..200)
            .map(|i| unknown(i, write(&format!("lost-{i}")), i as u64))
            .collect();
        for i in 0..200u64 {
            let value = format!("v{i}");
            events.push(ev(
                0,
                write(&value),
                Outcome::Ok,
                1000 + 4 * i,
                1001 + 4 * i,
            ));
            events.push(ev(
                1,
                Op::Read,
                saw(Some(&value)),
                1002 + 4 * i,
                1003 + 4 * i,
            ));
        }
        let verdict = check_with_budget(&events, 10_000);
        assert!(matches!(verdict, Verdict::Linearizable), "{verdict}");
    }

    #[test]
    #[should_panic(expected = "cannot have outcome")]
    fn outcome_of_another_operation_is_rejected() {
        check(&[ev(0, write("1"), Outcome::Cas(true), 0, 1)]);
    }

    /// splitmix64: deterministic, so a failing seed can be rerun.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }

        fn percent(&mut self, p: u64) -> bool {
            self.next() % 100 < p
        }
    }

    /// A random operation with values from a pool of `values`: a small pool makes CAS and
    /// reads match often, a large one makes values unique as real tests should.
    fn random_op(rng: &mut Rng, values: usize) -> Op {
        let value = |rng: &mut Rng| format!("v{}", rng.below(values));
        match rng.below(10) {
            0..=3 => Op::Read,
            4..=5 => Op::Write(value(rng)),
            6..=8 => Op::Cas {
                expected: (rng.below(4) != 0).then(|| value(rng)),
                new: value(rng),
            },
            _ => Op::Delete,
        }
    }

    /// The sequential register everything is checked against.
    fn apply(store: &mut HashMap<String, Value>, key: &str, op: &Op) -> Outcome {
        match op {
            Op::Read => Outcome::Read(store.get(key).cloned()),
            Op::Write(value) => {
                store.insert(key.to_string(), value.clone());
                Outcome::Ok
            }
            Op::Cas { expected, new } => {
                let matches = store.get(key) == expected.as_ref();
                if matches {
                    store.insert(key.to_string(), new.clone());
                }
                Outcome::Cas(matches)
            }
            Op::Delete => {
                store.remove(key);
                Outcome::Ok
            }
        }
    }

    struct Workload {
        clients: usize,
        keys: usize,
        ops: usize,
        /// Chance that a request is lost before taking effect, and again that its reply is
        /// lost after: both leave the event Unknown.
        lost_percent: u64,
        values: usize,
    }

    /// Runs a workload against a correct store, one step of one random client at a time on a
    /// logical clock: invoke, take effect, complete.
    fn simulate(seed: u64, workload: &Workload) -> Vec<Event> {
        let Workload {
            clients,
            keys,
            ops,
            lost_percent,
            values,
        } = *workload;
        enum Client {
            Idle,
            Invoked(usize),
            Applied(usize, Outcome),
        }
        let mut rng = Rng(seed);
        let mut store = HashMap::new();
        let mut events: Vec<Event> = Vec::new();
        let mut states: Vec<Client> = (0..clients).map(|_| Client::Idle).collect();
        let mut clock = 0;
        while events.len() < ops || states.iter().any(|s| !matches!(s, Client::Idle)) {
            let client = rng.below(clients);
            clock += 1;
            states[client] = match std::mem::replace(&mut states[client], Client::Idle) {
                Client::Idle if events.len() < ops => {
                    events.push(Event {
                        client,
                        key: format!("key-{}", rng.below(keys)),
                        op: random_op(&mut rng, values),
                        outcome: Outcome::Unknown,
                        invoked: clock,
                        completed: None,
                    });
                    Client::Invoked(events.len() - 1)
                }
                Client::Idle => Client::Idle,
                Client::Invoked(_) if rng.percent(lost_percent) => Client::Idle,
                Client::Invoked(i) => {
                    let outcome = apply(&mut store, &events[i].key, &events[i].op);
                    Client::Applied(i, outcome)
                }
                Client::Applied(_, _) if rng.percent(lost_percent) => Client::Idle,
                Client::Applied(i, outcome) => {
                    events[i].outcome = outcome;
                    events[i].completed = Some(clock);
                    Client::Idle
                }
            };
        }
        events
    }

    /// Up to five clients on three keys, eighty operations, some lost.
    fn small_workload(seed: u64) -> Workload {
        Workload {
            clients: 1 + seed as usize % 5,
            keys: 3,
            ops: 80,
            lost_percent: seed % 3 * 3,
            values: 4,
        }
    }

    #[test]
    fn randomized_correct_histories_are_linearizable() {
        for seed in 0..300 {
            let events = simulate(seed, &small_workload(seed));
            let verdict = check(&events);
            assert!(
                matches!(verdict, Verdict::Linearizable),
                "seed {seed}: {verdict}"
            );
        }
    }

    #[test]
    fn randomized_history_with_an_impossible_read_is_not_linearizable() {
        let mut checked = 0;
        for seed in 0..300 {
            let mut events = simulate(seed, &small_workload(seed));
            let completed_reads: Vec<usize> = (0..events.len())
                .filter(|&i| matches!(events[i].outcome, Outcome::Read(_)))
                .collect();
            if completed_reads.is_empty() {
                continue;
            }
            let victim = completed_reads[Rng(seed).below(completed_reads.len())];
            events[victim].outcome = saw(Some("never written"));
            let key = events[victim].key.clone();
            match check(&events) {
                Verdict::NotLinearizable { key: found, .. } => {
                    assert_eq!(found, key, "seed {seed}")
                }
                verdict => panic!("seed {seed}: {verdict}"),
            }
            checked += 1;
        }
        assert!(checked > 250);
    }

    /// Whether some order of `events` (one key) explains them, by trying every order of every
    /// subset of the unknown operations. Exponential; only for a handful of events.
    fn brute_force(events: &[Event]) -> bool {
        fn precedes(a: &Event, b: &Event) -> bool {
            a.outcome != Outcome::Unknown && a.completed.is_some_and(|c| c < b.invoked)
        }
        fn search(events: &[Event], placed: &mut Vec<bool>, value: Option<Value>) -> bool {
            let done =
                (0..events.len()).all(|i| placed[i] || events[i].outcome == Outcome::Unknown);
            if done {
                return true;
            }
            for i in 0..events.len() {
                let ready = !placed[i]
                    && (0..events.len()).all(|j| placed[j] || !precedes(&events[j], &events[i]));
                if !ready {
                    continue;
                }
                let mut store: HashMap<String, Value> =
                    value.iter().map(|v| ("k".to_string(), v.clone())).collect();
                let outcome = apply(&mut store, "k", &events[i].op);
                if events[i].outcome != Outcome::Unknown && events[i].outcome != outcome {
                    continue;
                }
                placed[i] = true;
                let found = search(events, placed, store.remove("k"));
                placed[i] = false;
                if found {
                    return true;
                }
            }
            false
        }
        search(events, &mut vec![false; events.len()], None)
    }

    #[test]
    fn agrees_with_brute_force_on_small_random_histories() {
        let mut rng = Rng(42);
        let mut verdicts = [0; 2];
        for round in 0..5000 {
            let events: Vec<Event> = (0..2 + rng.below(5))
                .map(|client| {
                    let op = random_op(&mut rng, 4);
                    let value =
                        |rng: &mut Rng| (rng.below(3) != 0).then(|| format!("v{}", rng.below(4)));
                    let outcome = match (&op, rng.below(5)) {
                        (_, 0) => Outcome::Unknown,
                        (Op::Read, _) => Outcome::Read(value(&mut rng)),
                        (Op::Cas { .. }, _) => Outcome::Cas(rng.below(2) == 0),
                        _ => Outcome::Ok,
                    };
                    let invoked = rng.below(12) as u64;
                    Event {
                        client,
                        key: "k".to_string(),
                        op,
                        outcome,
                        invoked,
                        completed: (rng.below(8) != 0).then(|| invoked + rng.below(6) as u64),
                    }
                })
                .collect();
            let expected = brute_force(&events);
            let verdict = check(&events);
            assert_eq!(
                matches!(verdict, Verdict::Linearizable),
                expected,
                "round {round}: {verdict}\n{events:#?}"
            );
            verdicts[usize::from(expected)] += 1;
        }
        assert!(verdicts.iter().all(|&n| n > 1000), "{verdicts:?}");
    }

    #[test]
    fn large_history_with_timeouts_needs_few_configurations_per_operation() {
        // What an e2e run looks like: unique values, a few thousand operations on a handful
        // of keys, and timeouts. About 800 operations per key; the search should not need
        // more than a few configurations per operation.
        let workload = Workload {
            clients: 8,
            keys: 5,
            ops: 4000,
            lost_percent: 3,
            values: 1 << 30,
        };
        for seed in 0..3 {
            let verdict = check_with_budget(&simulate(seed, &workload), 4000);
            assert!(
                matches!(verdict, Verdict::Linearizable),
                "seed {seed}: {verdict}"
            );
        }
    }

    #[test]
    fn large_history_with_reused_values_is_linearizable() {
        let workload = Workload {
            clients: 8,
            keys: 5,
            ops: 4000,
            lost_percent: 1,
            values: 4,
        };
        let verdict = check(&simulate(7, &workload));
        assert!(matches!(verdict, Verdict::Linearizable), "{verdict}");
    }

    #[test]
    fn history_records_clients_on_several_threads() {
        const CLIENTS: usize = 4;
        const OPS: usize = 250;
        let history = History::new();
        let store = Mutex::new(HashMap::new());
        std::thread::scope(|scope| {
            for client in 0..CLIENTS {
                let (history, store) = (&history, &store);
                scope.spawn(move || {
                    let mut rng = Rng(client as u64);
                    for n in 0..OPS {
                        let key = format!("key-{}", rng.below(3));
                        let op = random_op(&mut rng, 4);
                        let id = history.invoke(client, &key, op.clone());
                        let outcome = apply(&mut store.lock().unwrap(), &key, &op);
                        match n % 50 {
                            // A reply lost, and a client that gave up on one.
                            48 => {}
                            49 => history.complete(id, Outcome::Unknown),
                            _ => history.complete(id, outcome),
                        }
                    }
                });
            }
        });
        let events = history.events();
        assert_eq!(events.len(), CLIENTS * OPS);
        let mut stamps: Vec<u64> = events.iter().map(|e| e.invoked).collect();
        for event in &events {
            match (&event.outcome, event.completed) {
                (Outcome::Unknown, None) => {}
                (Outcome::Unknown, Some(_)) => panic!("unknown outcome with a completion"),
                (_, Some(completed)) => {
                    assert!(completed > event.invoked);
                    stamps.push(completed);
                }
                (_, None) => panic!("known outcome without a completion"),
            }
        }
        let recorded = stamps.len();
        stamps.sort_unstable();
        stamps.dedup();
        assert_eq!(stamps.len(), recorded, "timestamps must be distinct");
        assert_eq!(
            events
                .iter()
                .filter(|e| e.outcome == Outcome::Unknown)
                .count(),
            CLIENTS * OPS / 25
        );
        let verdict = check(&events);
        assert!(matches!(verdict, Verdict::Linearizable), "{verdict}");
    }

    #[test]
    #[should_panic(expected = "called twice")]
    fn completing_twice_is_rejected() {
        let history = History::new();
        let id = history.invoke(0, "k", Op::Read);
        history.complete(id, saw(None));
        history.complete(id, saw(None));
    }
}
