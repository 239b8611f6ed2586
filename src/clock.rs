//! Time and randomness as inputs, so tests and the simulation can drive them.
//!
//! Invariant: no code outside this module reads the wall clock or the OS random source.

use chrono::{DateTime, Utc};
use std::sync::{Arc, Mutex, PoisonError};
use uuid::Uuid;

pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now(&self) -> DateTime<Utc>;
}

/// The machine's clock.
#[derive(Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[expect(
        clippy::disallowed_methods,
        reason = "the one place that reads the wall clock"
    )]
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that only moves when told to.
#[derive(Debug)]
pub struct ManualClock {
    now: Mutex<DateTime<Utc>>,
}

impl ManualClock {
    pub fn new(start: DateTime<Utc>) -> ManualClock {
        ManualClock {
            now: Mutex::new(start),
        }
    }

    pub fn advance(&self, by: chrono::Duration) {
        let mut now = self.now.lock().unwrap_or_else(PoisonError::into_inner);
        *now += by;
    }

    pub fn set(&self, to: DateTime<Utc>) {
        *self.now.lock().unwrap_or_else(PoisonError::into_inner) = to;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.now.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A source of random bytes.
pub trait Entropy: Send + Sync + std::fmt::Debug {
    fn fill(&self, buffer: &mut [u8]);
}

/// The operating system's random source.
#[derive(Debug, Default)]
pub struct OsEntropy;

impl Entropy for OsEntropy {
    fn fill(&self, buffer: &mut [u8]) {
        // The OS source failing means the machine cannot make secrets at all; kassa must not
        // go on with predictable ids and tokens.
        getrandom::fill(buffer).expect("the operating system's random source failed");
    }
}

/// A seeded, reproducible source (SplitMix64) for tests and the simulation. Not for secrets.
#[derive(Debug)]
pub struct SeededEntropy {
    state: Mutex<u64>,
}

impl SeededEntropy {
    pub fn new(seed: u64) -> SeededEntropy {
        SeededEntropy {
            state: Mutex::new(seed),
        }
    }
}

impl Entropy for SeededEntropy {
    fn fill(&self, buffer: &mut [u8]) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        for chunk in buffer.chunks_mut(8) {
            *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = *state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            chunk.copy_from_slice(&z.to_le_bytes()[..chunk.len()]);
        }
    }
}

/// The clock and the random source together: everything that makes a run differ from another.
#[derive(Debug, Clone)]
pub struct Env {
    pub clock: Arc<dyn Clock>,
    pub entropy: Arc<dyn Entropy>,
    /// The last id made, so ids made in the same millisecond still sort in the order made.
    last_id: Arc<Mutex<u128>>,
}

impl Env {
    pub fn new(clock: Arc<dyn Clock>, entropy: Arc<dyn Entropy>) -> Env {
        Env {
            clock,
            entropy,
            last_id: Arc::new(Mutex::new(0)),
        }
    }

    pub fn system() -> Env {
        Env::new(Arc::new(SystemClock), Arc::new(OsEntropy))
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// A UUIDv7 stamped with the injected clock, so ids sort by the time they were made; ids
    /// made by one `Env` in the same millisecond (or under a clock that stands still) sort in
    /// the order they were made.
    pub fn new_uuid(&self) -> Uuid {
        let mut random = [0u8; 10];
        self.entropy.fill(&mut random);
        let millis = u64::try_from(self.now().timestamp_millis()).unwrap_or(0);
        let candidate = uuid::Builder::from_unix_timestamp_millis(millis, &random)
            .into_uuid()
            .as_u128();
        let mut last = self.last_id.lock().unwrap_or_else(PoisonError::into_inner);
        // One more than the last id keeps its time prefix and version: the random bits below
        // them are 62 wide, so the carry never reaches them in practice.
        let id = if candidate > *last {
            candidate
        } else {
            last.wrapping_add(1)
        };
        *last = id;
        Uuid::from_u128(id)
    }

    /// `bytes` random bytes as lowercase hex: tokens, keys.
    pub fn random_hex(&self, bytes: usize) -> String {
        let mut buffer = vec![0u8; bytes];
        self.entropy.fill(&mut buffer);
        crate::hex::encode(&buffer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_from_a_seed_repeat_and_sort_by_time_then_by_making() {
        let start = DateTime::from_timestamp(1_790_000_000, 0).unwrap();
        let make = || {
            Env::new(
                Arc::new(ManualClock::new(start)),
                Arc::new(SeededEntropy::new(42)),
            )
        };
        let (first, second) = (make(), make());
        assert_eq!(first.new_uuid(), second.new_uuid());
        let early = first.new_uuid();
        let clock = ManualClock::new(start + chrono::Duration::milliseconds(1));
        let later = Env::new(Arc::new(clock), first.entropy.clone()).new_uuid();
        assert!(early < later);
        let burst: Vec<Uuid> = (0..100).map(|_| first.new_uuid()).collect();
        assert!(
            burst.windows(2).all(|pair| pair[0] < pair[1]),
            "same-millisecond ids sort as made"
        );
        assert!(burst.iter().all(|id| id.get_version_num() == 7));
        assert_eq!(first.random_hex(16).len(), 32);
    }
}
