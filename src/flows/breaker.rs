//! The circuit breaker, one per PG: after `retry.breaker_failures` outages in a row (not
//! reached, timed out, 5xx, throttled), the PG's jobs pause instead of spending their tries;
//! when the pause ends one job goes through as a probe; an answer closes the breaker, another
//! outage opens it for twice as long, up to `BREAKER_PAUSE_MAX`.
//!
//! Invariant: the breaker only delays work. It never fails, drops or counts a job, so a PG down
//! for hours dead-letters nothing; what it knows is in memory and starts closed.

use crate::domain::Provider;
use crate::store::Gate;
use chrono::{DateTime, Utc};
use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

/// The first pause after the breaker opens.
pub const BREAKER_PAUSE_MIN: chrono::TimeDelta = chrono::TimeDelta::seconds(60);
/// The longest pause: a PG that stays down is probed at least this often.
pub const BREAKER_PAUSE_MAX: chrono::TimeDelta = chrono::TimeDelta::minutes(15);

/// How a PG behaved in one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// It answered (a refund, a refusal, a record).
    Answered,
    /// It was not available.
    Outage,
    /// It was not asked.
    NotAsked,
}

#[derive(Debug, Default, Clone, Copy)]
struct State {
    failures: u32,
    open_until: Option<DateTime<Utc>>,
    pause: Option<chrono::TimeDelta>,
}

#[derive(Debug)]
pub struct Breakers {
    failures_max: u32,
    states: Mutex<HashMap<Provider, State>>,
}

impl Breakers {
    pub fn new(failures_max: u32) -> Breakers {
        Breakers {
            failures_max: failures_max.max(1),
            states: Mutex::new(HashMap::new()),
        }
    }

    /// Whether `provider`'s jobs may run at `now`: `None` when they may.
    pub fn gate(&self, provider: Provider, now: DateTime<Utc>) -> Option<Gate> {
        let states = self.states.lock().unwrap_or_else(PoisonError::into_inner);
        let until = states.get(&provider)?.open_until?;
        Some(if until > now {
            Gate::Paused(until)
        } else {
            Gate::Probe
        })
    }

    /// The gates of every PG, for one claim of the queue.
    pub fn gates(&self, now: DateTime<Utc>) -> HashMap<Provider, Gate> {
        Provider::ALL
            .into_iter()
            .filter_map(|provider| self.gate(provider, now).map(|gate| (provider, gate)))
            .collect()
    }

    /// Counts what one call to `provider` showed.
    pub fn record(&self, provider: Provider, health: Health, now: DateTime<Utc>) {
        let mut states = self.states.lock().unwrap_or_else(PoisonError::into_inner);
        let state = states.entry(provider).or_default();
        match health {
            Health::NotAsked => {}
            Health::Answered => {
                if state.open_until.is_some() {
                    tracing::info!(
                        provider = provider.as_str(),
                        "circuit breaker closed: the PG answers again; its jobs run"
                    );
                }
                *state = State::default();
            }
            Health::Outage => {
                state.failures = state.failures.saturating_add(1);
                let still_paused = state.open_until.is_some_and(|until| until > now);
                if state.failures >= self.failures_max && !still_paused {
                    let pause = state.pause.map_or(BREAKER_PAUSE_MIN, |pause| {
                        (pause * 2).min(BREAKER_PAUSE_MAX)
                    });
                    state.pause = Some(pause);
                    let until = now + pause;
                    state.open_until = Some(until);
                    tracing::warn!(
                        provider = provider.as_str(),
                        failures = state.failures,
                        pause_s = pause.num_seconds(),
                        until = %until.to_rfc3339(),
                        "circuit breaker open: the PG is unavailable; its jobs pause instead of spending their tries, then one probes"
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_outages_pause_a_pg_and_an_answer_closes_it() {
        let breakers = Breakers::new(3);
        let start = DateTime::UNIX_EPOCH;
        for _ in 0..2 {
            breakers.record(Provider::Toss, Health::Outage, start);
        }
        assert_eq!(breakers.gate(Provider::Toss, start), None);
        breakers.record(Provider::Toss, Health::Outage, start);
        assert_eq!(
            breakers.gate(Provider::Toss, start),
            Some(Gate::Paused(start + BREAKER_PAUSE_MIN))
        );
        assert_eq!(breakers.gate(Provider::PortOne, start), None, "per PG");
        let later = start + BREAKER_PAUSE_MIN;
        assert_eq!(breakers.gate(Provider::Toss, later), Some(Gate::Probe));
        breakers.record(Provider::Toss, Health::Outage, later);
        assert_eq!(
            breakers.gate(Provider::Toss, later),
            Some(Gate::Paused(later + BREAKER_PAUSE_MIN * 2)),
            "a failed probe pauses twice as long"
        );
        breakers.record(Provider::Toss, Health::Answered, later);
        assert_eq!(breakers.gate(Provider::Toss, later), None);
    }
}
