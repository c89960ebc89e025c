//! The reconnect schedule: the delay before each attempt, with seeded jitter.

use std::time::Duration;

use super::config::{Jitter, Reconnect};

/// xorshift64*: tiny, deterministic, good enough to spread reconnects.
#[derive(Debug, Clone)]
pub(crate) struct XorShift(u64);

impl XorShift {
    pub(crate) fn new(seed: u64) -> Self {
        // A zero state would stay zero forever.
        XorShift(if seed == 0 {
            0x9E37_79B9_7F4A_7C15
        } else {
            seed
        })
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `[0, max]` nanoseconds (the modulo bias is irrelevant here).
    fn below(&mut self, max: Duration) -> Duration {
        let nanos = u64::try_from(max.as_nanos()).unwrap_or(u64::MAX);
        if nanos == 0 {
            return Duration::ZERO;
        }
        Duration::from_nanos(self.next_u64() % nanos.saturating_add(1))
    }
}

/// The delay before reconnect `attempt` (1 for the first), or `None` to give up.
pub(crate) fn delay(reconnect: &Reconnect, attempt: u32, rng: &mut XorShift) -> Option<Duration> {
    match *reconnect {
        Reconnect::Never => None,
        Reconnect::Fixed(d) => Some(d),
        Reconnect::Backoff {
            initial,
            max,
            factor,
            jitter,
        } => {
            let growth = factor.checked_pow(attempt.saturating_sub(1));
            let base = growth
                .and_then(|g| initial.checked_mul(g))
                .map_or(max, |d| d.min(max));
            Some(match jitter {
                Jitter::None => base,
                Jitter::Full => rng.below(base),
                Jitter::Equal => base / 2 + rng.below(base - base / 2),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Duration = Duration::from_secs(1);

    fn backoff(jitter: Jitter) -> Reconnect {
        Reconnect::Backoff {
            initial: SEC,
            max: 10 * SEC,
            factor: 2,
            jitter,
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let mut rng = XorShift::new(1);
        let delays: Vec<_> = (1..=6)
            .map(|a| delay(&backoff(Jitter::None), a, &mut rng).unwrap())
            .collect();
        assert_eq!(delays, [SEC, 2 * SEC, 4 * SEC, 8 * SEC, 10 * SEC, 10 * SEC]);
    }

    #[test]
    fn huge_attempt_numbers_stay_at_the_cap() {
        let mut rng = XorShift::new(1);
        assert_eq!(
            delay(&backoff(Jitter::None), u32::MAX, &mut rng),
            Some(10 * SEC)
        );
    }

    #[test]
    fn jitter_stays_within_its_bounds_and_is_deterministic_by_seed() {
        for (jitter, low_half) in [(Jitter::Full, false), (Jitter::Equal, true)] {
            let run = |seed| {
                let mut rng = XorShift::new(seed);
                (1..=50)
                    .map(|a| delay(&backoff(jitter), a.min(5), &mut rng).unwrap())
                    .collect::<Vec<_>>()
            };
            let delays = run(7);
            assert_eq!(delays, run(7));
            assert_ne!(delays, run(8));
            for (i, d) in delays.iter().enumerate() {
                let base = (SEC * 2u32.pow((i as u32 + 1).min(5) - 1)).min(10 * SEC);
                assert!(*d <= base, "{d:?} > {base:?}");
                if low_half {
                    assert!(*d >= base / 2, "{d:?} < {base:?}/2");
                }
            }
        }
    }

    #[test]
    fn zero_seed_still_produces_numbers() {
        let mut rng = XorShift::new(0);
        assert_ne!(rng.next_u64(), rng.next_u64());
    }
}
