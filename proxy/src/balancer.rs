//! Choosing an endpoint, as pure functions over the indices of the eligible endpoints (the
//! endpoint set decides eligibility: not ejected, not draining, not already tried).
//!
//! - `PeakEwma` (default): power of two choices. Two distinct endpoints at random, the one
//!   with the lower cost wins, cost = peak-EWMA latency x (in-flight + 1). Cheap, no global
//!   state, and it steers around slow or loaded endpoints without herding onto one.
//! - `RoundRobin`: each in turn.
//! - `ClientIp` (sessionAffinity: ClientIP): rendezvous hashing of the client address, so a
//!   client keeps its endpoint, and only the clients of a removed endpoint move.

use serde::Deserialize;
use std::cell::Cell;
use std::hash::{DefaultHasher, Hash, Hasher};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Algorithm {
    #[default]
    PeakEwma,
    RoundRobin,
    ClientIp,
}

/// Power of two choices among `eligible`; `r1` and `r2` are random numbers.
pub fn power_of_two(
    eligible: &[usize],
    r1: usize,
    r2: usize,
    cost: impl Fn(usize) -> f64,
) -> Option<usize> {
    match eligible.len() {
        0 => None,
        1 => Some(eligible[0]),
        n => {
            let a = r1 % n;
            // A second index distinct from the first.
            let b = (a + 1 + r2 % (n - 1)) % n;
            let (a, b) = (eligible[a], eligible[b]);
            Some(if cost(b) < cost(a) { b } else { a })
        }
    }
}

/// The `turn`-th eligible endpoint, cyclically.
pub fn round_robin(eligible: &[usize], turn: usize) -> Option<usize> {
    (!eligible.is_empty()).then(|| eligible[turn % eligible.len()])
}

/// Rendezvous (highest random weight) hashing: the endpoint whose hash with `key` is highest.
/// `id` names an endpoint stably (its address), so the choice survives set changes.
pub fn rendezvous<K: Hash, I: Hash>(
    eligible: &[usize],
    key: &K,
    id: impl Fn(usize) -> I,
) -> Option<usize> {
    eligible.iter().copied().max_by_key(|&i| {
        // DefaultHasher::new() has fixed keys: every proxy picks the same endpoint.
        let mut hasher = DefaultHasher::new();
        key.hash(&mut hasher);
        id(i).hash(&mut hasher);
        hasher.finish()
    })
}

/// A fast per-thread pseudo-random number (xorshift64*): balancing needs spread, not secrecy.
pub fn random() -> usize {
    thread_local! {
        static STATE: Cell<u64> = Cell::new({
            let mut hasher = DefaultHasher::new();
            std::thread::current().id().hash(&mut hasher);
            std::time::SystemTime::now().hash(&mut hasher);
            hasher.finish() | 1
        });
    }
    STATE.with(|state| {
        let mut x = state.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        state.set(x);
        (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 32) as usize
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn power_of_two_picks_the_cheaper_of_two_distinct() {
        let costs = [5.0, 1.0, 9.0];
        let eligible = [0, 1, 2];
        for r1 in 0..6 {
            for r2 in 0..6 {
                let chosen = power_of_two(&eligible, r1, r2, |i| costs[i]).unwrap();
                let a = r1 % 3;
                let b = (a + 1 + r2 % 2) % 3;
                assert_ne!(a, b);
                assert_eq!(chosen, if costs[b] < costs[a] { b } else { a });
            }
        }
        // The most expensive endpoint is never chosen when there are three.
        assert!((0..100).all(|r| power_of_two(&eligible, r, r / 3, |i| costs[i]) != Some(2)));
        assert_eq!(power_of_two(&[2], 7, 9, |i| costs[i]), Some(2));
        assert_eq!(power_of_two(&[], 7, 9, |i| costs[i]), None);
    }

    #[test]
    fn power_of_two_spreads_equal_endpoints() {
        let eligible = [0, 1, 2];
        let mut counts = [0; 3];
        for _ in 0..3000 {
            counts[power_of_two(&eligible, random(), random(), |_| 1.0).unwrap()] += 1;
        }
        // Ties go to the first pick, which is uniform.
        assert!(counts.iter().all(|&c| c > 800), "{counts:?}");
    }

    #[test]
    fn round_robin_cycles_over_the_eligible() {
        let picks: Vec<_> = (0..6)
            .map(|t| round_robin(&[0, 2, 3], t).unwrap())
            .collect();
        assert_eq!(picks, [0, 2, 3, 0, 2, 3]);
        assert_eq!(round_robin(&[], 3), None);
    }

    #[test]
    fn rendezvous_is_sticky_and_moves_only_the_removed_endpoints_clients() {
        let ids = ["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"];
        let clients: Vec<String> = (0..300)
            .map(|i| format!("192.168.{}.{}", i / 250, i % 250))
            .collect();
        let before: HashMap<&String, usize> = clients
            .iter()
            .map(|c| (c, rendezvous(&[0, 1, 2], c, |i| ids[i]).unwrap()))
            .collect();
        let mut per_endpoint = [0; 3];
        for &i in before.values() {
            per_endpoint[i] += 1;
        }
        assert!(per_endpoint.iter().all(|&n| n > 50), "{per_endpoint:?}");
        // Endpoint 1 goes away: its clients move, nobody else does.
        for client in &clients {
            let after = rendezvous(&[0, 2], client, |i| ids[i]).unwrap();
            if before[client] == 1 {
                assert_ne!(after, 1);
            } else {
                assert_eq!(after, before[client]);
            }
        }
    }
}
