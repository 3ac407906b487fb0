//! Capped exponential backoff for reconnecting to the coordinator.
//!
//! After a coordinator restart every agent in the fleet reconnects at once;
//! growing delays stop a dead coordinator from being hammered, the cap bounds
//! how long an agent stays away once it is back, and jitter spreads a fleet's
//! reconnects so they do not arrive as one burst.

use std::time::Duration;

/// Delay generator: `initial`, then ×`factor` per failure up to `max`, each
/// delay shortened by a random fraction of at most `jitter`.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    factor: f64,
    jitter: f64,
    current: Duration,
    rng: u64,
}

impl Backoff {
    /// A backoff starting at `initial` and capped at `max`, doubling each time,
    /// with up to 20 % jitter.
    pub fn new(initial: Duration, max: Duration) -> Self {
        let seed = u64::from(std::process::id()) ^ faultline_proto::now_unix_ms();
        Self {
            initial,
            max: max.max(initial),
            factor: 2.0,
            jitter: 0.2,
            current: initial,
            rng: seed | 1,
        }
    }

    /// Sets the fraction (0..=1) by which a delay may be randomly shortened.
    /// Zero makes delays deterministic, which tests rely on.
    pub fn with_jitter(mut self, jitter: f64) -> Self {
        self.jitter = jitter.clamp(0.0, 1.0);
        self
    }

    /// The delay to wait before the next attempt; grows the following one.
    pub fn next_delay(&mut self) -> Duration {
        let base = self.current;
        self.current = self.current.mul_f64(self.factor).min(self.max);
        if self.jitter == 0.0 {
            return base;
        }
        // xorshift64: good enough to decorrelate agents, no dependency needed.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let unit = (self.rng >> 11) as f64 / (1u64 << 53) as f64;
        base.mul_f64(1.0 - self.jitter * unit)
    }

    /// Starts over from `initial`, after a connection was established.
    pub fn reset(&mut self) {
        self.current = self.initial;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_until_the_cap() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1)).with_jitter(0.0);
        let got: Vec<u64> = (0..7).map(|_| b.next_delay().as_millis() as u64).collect();
        assert_eq!(got, vec![100, 200, 400, 800, 1000, 1000, 1000]);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_millis(100));
    }

    #[test]
    fn jitter_only_shortens_delays() {
        let mut b = Backoff::new(Duration::from_millis(1000), Duration::from_secs(1));
        for _ in 0..100 {
            let d = b.next_delay();
            assert!(
                d <= Duration::from_millis(1000) && d >= Duration::from_millis(800),
                "{d:?}"
            );
        }
    }
}
