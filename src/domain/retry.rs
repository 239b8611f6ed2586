//! The retry policy as data: how long to wait before each queued attempt, with jitter, and how
//! many attempts a job gets before it becomes a dead letter.

use std::time::Duration;

/// Most jitter added to a delay, in permille of the delay (10 %).
pub const JITTER_PERMILLE_MAX: u64 = 100;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetrySchedule {
    /// Delay before queued attempt n (from 0); the last one repeats.
    delays: Vec<Duration>,
    attempts_max: u32,
}

impl RetrySchedule {
    /// `delays` must not be empty; `attempts_max` is at least 1.
    pub fn new(delays: Vec<Duration>, attempts_max: u32) -> RetrySchedule {
        let delays = if delays.is_empty() {
            vec![Duration::from_secs(5)]
        } else {
            delays
        };
        RetrySchedule {
            delays,
            attempts_max: attempts_max.max(1),
        }
    }

    pub fn attempts_max(&self) -> u32 {
        self.attempts_max
    }

    /// The wait before queued attempt `queue_attempt` (0 = the first), plus up to 10 % jitter
    /// drawn from `random`, so that many jobs failing together do not retry together.
    pub fn delay(&self, queue_attempt: u32, random: u64) -> Duration {
        let index = usize::try_from(queue_attempt)
            .unwrap_or(usize::MAX)
            .min(self.delays.len() - 1);
        let base = self.delays[index];
        let base_ms = u64::try_from(base.as_millis()).unwrap_or(u64::MAX);
        let jitter_ms = base_ms.saturating_mul(random % (JITTER_PERMILLE_MAX + 1)) / 1_000;
        base + Duration::from_millis(jitter_ms)
    }

    /// True when a job that has made `queue_attempts` queued attempts may not make another.
    pub fn exhausted(&self, queue_attempts: u32) -> bool {
        queue_attempts >= self.attempts_max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_follow_the_schedule_with_at_most_ten_percent_jitter() {
        let schedule = RetrySchedule::new(vec![Duration::from_secs(5), Duration::from_secs(30)], 3);
        for random in [0, 1, 57, 100, u64::MAX] {
            let first = schedule.delay(0, random);
            assert!(
                first >= Duration::from_secs(5) && first <= Duration::from_millis(5_500),
                "{first:?}"
            );
            let later = schedule.delay(7, random);
            assert!(
                later >= Duration::from_secs(30) && later <= Duration::from_secs(33),
                "{later:?}"
            );
        }
        assert!(!schedule.exhausted(2));
        assert!(schedule.exhausted(3));
    }

    proptest::proptest! {
        #[test]
        fn every_delay_is_its_step_plus_at_most_a_tenth_and_the_last_step_repeats(
            delays in proptest::collection::vec(0u64..86_400_000, 1..20),
            attempts_max in 0u32..200,
            attempt in 0u32..1_000,
            random in proptest::prelude::any::<u64>(),
        ) {
            let steps: Vec<Duration> = delays.iter().copied().map(Duration::from_millis).collect();
            let schedule = RetrySchedule::new(steps.clone(), attempts_max);
            let step = steps[usize::try_from(attempt).unwrap().min(steps.len() - 1)];
            let delay = schedule.delay(attempt, random);
            proptest::prop_assert!(delay >= step);
            proptest::prop_assert!(delay <= step + step / 10);
            proptest::prop_assert_eq!(schedule.attempts_max(), attempts_max.max(1));
            proptest::prop_assert_eq!(schedule.exhausted(attempt), attempt >= attempts_max.max(1));
        }
    }
}
