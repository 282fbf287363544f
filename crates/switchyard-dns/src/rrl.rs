//! Response rate limiting over UDP (`[dns.rrl]`), as BIND and Knot do it:
//! UDP answers are a reflection and amplification tool (the source address
//! is not checked), and one flooder must not take the workers from every
//! other client. Each client /24 (IPv4) or /56 (IPv6) has a token bucket;
//! over it, every `slip`-th refused answer goes out empty with TC set so a
//! real resolver retries over TCP (never limited: its handshake proves the
//! address), the rest are dropped unanswered.
//!
//! Memory is fixed at creation: a table of [`CAPACITY`] slots, sharded by a
//! randomly keyed hash of the prefix (so a spoofer cannot aim at a victim's
//! slot), each shard a set of 4-way buckets. A new prefix takes an empty
//! slot of its set, else the one seen longest ago, whose prefix then starts
//! afresh with a full bucket if it comes back. Each check is one hash and
//! one lock of a shard among [`SHARDS`], never a global lock.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

use switchyard_model::dns::RrlSettings;

/// Slots in the whole table (about 3 MB).
pub const CAPACITY: usize = 65_536;
pub const SHARDS: usize = 64;
const WAYS: usize = 4;
/// Tokens are counted in thousandths of an answer, refilled per millisecond.
const ONE: u64 = 1000;

/// The unit answers are limited by: the /24 or /56 holding an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientPrefix(IpAddr);

impl ClientPrefix {
    pub fn of(ip: IpAddr) -> ClientPrefix {
        // A dual-stack socket sees IPv4 clients as ::ffff:a.b.c.d.
        let ip = ip.to_canonical();
        let len = if ip.is_ipv4() { 24 } else { 56 };
        ClientPrefix(switchyard_model::dns::mask(ip, len))
    }
}

/// What to do with one UDP query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Answer,
    /// Send an empty answer with TC set instead.
    Slip,
    Drop,
}

#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    prefix: Option<ClientPrefix>,
    /// In thousandths of an answer.
    tokens: u64,
    last_ms: u64,
    /// Answers refused since the prefix took the slot, for the slip count.
    refused: u32,
}

pub struct Limiter<S = RandomState> {
    shards: Box<[Mutex<Box<[Slot]>>]>,
    sets_per_shard: usize,
    hasher: S,
    started: Instant,
}

impl Limiter {
    /// The server's table: [`CAPACITY`] slots in [`SHARDS`] shards.
    pub fn new() -> Limiter {
        Limiter::with_layout(SHARDS, CAPACITY / SHARDS / WAYS, RandomState::new())
    }

    /// Checks `ip` against `settings` now.
    pub fn check_now(&self, ip: IpAddr, settings: &RrlSettings) -> Verdict {
        let now_ms = self.started.elapsed().as_millis() as u64;
        self.check(ip, now_ms, settings)
    }
}

impl Default for Limiter {
    fn default() -> Self {
        Limiter::new()
    }
}

impl<S: BuildHasher> Limiter<S> {
    pub fn with_layout(shards: usize, sets_per_shard: usize, hasher: S) -> Limiter<S> {
        let (shards, sets_per_shard) = (shards.max(1), sets_per_shard.max(1));
        Limiter {
            shards: (0..shards)
                .map(|_| Mutex::new(vec![Slot::default(); sets_per_shard * WAYS].into()))
                .collect(),
            sets_per_shard,
            hasher,
            started: Instant::now(),
        }
    }

    pub fn capacity(&self) -> usize {
        self.shards.len() * self.sets_per_shard * WAYS
    }

    /// Prefixes holding a slot.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                let s = s.lock().unwrap_or_else(|e| e.into_inner());
                s.iter().filter(|x| x.prefix.is_some()).count()
            })
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Takes one answer to `ip` at `now_ms` (any monotonic clock in
    /// milliseconds) from its prefix's bucket.
    pub fn check(&self, ip: IpAddr, now_ms: u64, settings: &RrlSettings) -> Verdict {
        let rate = u64::from(settings.responses_per_s);
        if rate == 0 {
            return Verdict::Answer;
        }
        let full = u64::from(settings.burst.max(1)) * ONE;
        let prefix = ClientPrefix::of(ip);
        let h = self.hasher.hash_one(prefix);
        let shard = &self.shards[(h >> 32) as usize % self.shards.len()];
        let mut slots = shard.lock().unwrap_or_else(|e| e.into_inner());
        let base = (h as u32 as usize % self.sets_per_shard) * WAYS;
        let set = &mut slots[base..base + WAYS];
        let i = match set.iter().position(|s| s.prefix == Some(prefix)) {
            Some(i) => i,
            None => {
                let i = set
                    .iter()
                    .enumerate()
                    .min_by_key(|(_, s)| (s.prefix.is_some(), s.last_ms))
                    .map_or(0, |(i, _)| i);
                set[i] = Slot {
                    prefix: Some(prefix),
                    tokens: full,
                    last_ms: now_ms,
                    refused: 0,
                };
                i
            }
        };
        let slot = &mut set[i];
        let elapsed = now_ms.saturating_sub(slot.last_ms);
        // Rate answers per second is `rate` thousandths per millisecond.
        slot.tokens = slot
            .tokens
            .saturating_add(elapsed.saturating_mul(rate))
            .min(full);
        slot.last_ms = slot.last_ms.max(now_ms);
        if slot.tokens >= ONE {
            slot.tokens -= ONE;
            return Verdict::Answer;
        }
        slot.refused = slot.refused.wrapping_add(1);
        if settings.slip > 0 && slot.refused.is_multiple_of(settings.slip) {
            Verdict::Slip
        } else {
            Verdict::Drop
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(rate: u32, burst: u32, slip: u32) -> RrlSettings {
        RrlSettings {
            responses_per_s: rate,
            burst,
            slip,
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn count(l: &Limiter, who: &str, n: usize, now_ms: u64, s: &RrlSettings) -> [usize; 3] {
        let mut c = [0; 3];
        for _ in 0..n {
            match l.check(ip(who), now_ms, s) {
                Verdict::Answer => c[0] += 1,
                Verdict::Slip => c[1] += 1,
                Verdict::Drop => c[2] += 1,
            }
        }
        c
    }

    #[test]
    fn a_prefix_gets_its_burst_at_once_then_the_rate() {
        let l = Limiter::new();
        let s = settings(10, 5, 2);
        assert_eq!(count(&l, "192.0.2.1", 20, 0, &s)[0], 5);
        // 300 ms later: three answers have come back, no more.
        assert_eq!(count(&l, "192.0.2.1", 20, 300, &s)[0], 3);
        // Quiet for a long time: the bucket is full again, but no fuller.
        assert_eq!(count(&l, "192.0.2.1", 20, 3_600_000, &s)[0], 5);
        // Over ten seconds at 100 queries a second: ten a second get through.
        let mut answered = 0;
        for ms in (3_600_010..3_610_010).step_by(10) {
            answered += count(&l, "192.0.2.1", 1, ms, &s)[0];
        }
        assert!((100..=101).contains(&answered), "{answered}");
    }

    #[test]
    fn every_slip_th_refused_answer_is_truncated_and_the_rest_dropped() {
        let l = Limiter::new();
        assert_eq!(
            count(&l, "192.0.2.1", 100, 0, &settings(1, 10, 2)),
            [10, 45, 45]
        );
        assert_eq!(
            count(&l, "192.0.3.1", 40, 0, &settings(1, 10, 3)),
            [10, 10, 20]
        );
        assert_eq!(
            count(&l, "192.0.4.1", 40, 0, &settings(1, 10, 1)),
            [10, 30, 0]
        );
        assert_eq!(
            count(&l, "192.0.5.1", 40, 0, &settings(1, 10, 0)),
            [10, 0, 30]
        );
    }

    #[test]
    fn prefixes_are_limited_apart_and_addresses_of_one_prefix_together() {
        let l = Limiter::new();
        let s = settings(1, 10, 2);
        assert_eq!(count(&l, "192.0.2.1", 50, 0, &s)[0], 10);
        // Another address of the same /24 shares the bucket ...
        assert_eq!(count(&l, "192.0.2.200", 5, 0, &s)[0], 0);
        assert_eq!(count(&l, "::ffff:192.0.2.7", 5, 0, &s)[0], 0);
        // ... the next /24 has its own.
        assert_eq!(count(&l, "192.0.3.1", 50, 0, &s)[0], 10);
        // IPv6: one /56 together, the next apart.
        assert_eq!(count(&l, "2001:db8:0:1::1", 50, 0, &s)[0], 10);
        assert_eq!(count(&l, "2001:db8:0:ff::2", 5, 0, &s)[0], 0);
        assert_eq!(count(&l, "2001:db8:0:100::1", 50, 0, &s)[0], 10);
    }

    #[test]
    fn a_zero_rate_answers_everything_and_keeps_nothing() {
        let l = Limiter::new();
        assert_eq!(
            count(&l, "192.0.2.1", 10_000, 0, &settings(0, 0, 2))[0],
            10_000
        );
        assert!(l.is_empty());
    }

    #[test]
    fn the_table_never_outgrows_its_capacity_and_evicts_the_longest_quiet() {
        let l = Limiter::new();
        let s = settings(1, 1, 2);
        for i in 0..(4 * CAPACITY) as u32 {
            let a = std::net::Ipv4Addr::from(i << 8);
            l.check(IpAddr::V4(a), u64::from(i), &s);
        }
        assert!(l.len() <= l.capacity() && l.capacity() == CAPACITY);
        assert!(l.len() > CAPACITY / 2, "{} slots used", l.len());

        // One set of four: a fifth prefix takes the slot seen longest ago.
        let small = Limiter::with_layout(1, 1, RandomState::new());
        let s = settings(1, 3, 0);
        assert_eq!(count(&small, "10.0.0.1", 5, 0, &s)[0], 3);
        for (n, t) in [(1, 1), (2, 2), (3, 3)] {
            count(&small, &format!("10.0.{n}.1"), 1, t, &s);
        }
        // 10.0.0.0/24 is refused while it holds its slot ...
        assert_eq!(count(&small, "10.0.0.1", 1, 4, &s)[0], 0);
        for (n, t) in [(1, 5), (2, 6), (3, 7), (4, 8)] {
            count(&small, &format!("10.0.{n}.1"), 1, t, &s);
        }
        assert_eq!(small.len(), 4);
        // ... and starts afresh once it was evicted.
        assert_eq!(count(&small, "10.0.0.1", 5, 9, &s)[0], 3);
    }
}
