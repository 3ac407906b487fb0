//! Simulations of the judge on synthetic samples: the A/A false-positive
//! rate (both groups from one distribution) and the power to detect a
//! given change. The tests (`coordinator/tests/canary_scipy.rs` and the
//! unit tests here) and `faultline-bench judge` run them; nothing in a
//! release run uses this module.
//!
//! The random numbers come from xoshiro256** seeded through SplitMix64
//! (Blackman & Vigna), written here so a seed gives the same figures on
//! every machine and no crate is needed.

use super::{judge, Classification, JudgeConfig, MetricConfig, Samples};

/// xoshiro256** with a SplitMix64 seeding.
#[derive(Debug, Clone)]
pub struct Rng {
    s: [u64; 4],
}

impl Rng {
    pub fn new(seed: u64) -> Self {
        let mut x = seed;
        let mut next = || {
            x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        Rng {
            s: [next(), next(), next(), next()],
        }
    }

    pub fn next_u64(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// Uniform on [0, 1) with 53 random bits.
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Standard normal (Box–Muller; one of the pair is used).
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.uniform(); // (0, 1]
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }

    /// Log-normal with the given median and log-scale spread.
    pub fn lognormal(&mut self, median: f64, sigma: f64) -> f64 {
        median * (sigma * self.normal()).exp()
    }

    /// Bernoulli(p).
    pub fn bernoulli(&mut self, p: f64) -> bool {
        self.uniform() < p
    }
}

/// How the synthetic samples of one group are drawn.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Population {
    /// Latency-like: log-normal, `median` ms, log-scale spread `sigma`,
    /// multiplied by `factor` (the canary's change; 1 = none).
    LogNormal { median: f64, sigma: f64, factor: f64 },
    /// The same, rounded to whole milliseconds (heavy ties).
    LogNormalMs { median: f64, sigma: f64, factor: f64 },
    /// Normal with `mean` and `sd`.
    Normal { mean: f64, sd: f64 },
}

impl Population {
    pub fn draw(&self, rng: &mut Rng, n: usize) -> Vec<f64> {
        (0..n)
            .map(|_| match *self {
                Population::LogNormal { median, sigma, factor } => rng.lognormal(median, sigma) * factor,
                Population::LogNormalMs { median, sigma, factor } => (rng.lognormal(median, sigma) * factor).round(),
                Population::Normal { mean, sd } => mean + sd * rng.normal(),
            })
            .collect()
    }

    /// The same population with the change `factor` applied.
    pub fn scaled(&self, f: f64) -> Population {
        match *self {
            Population::LogNormal { median, sigma, factor } => Population::LogNormal {
                median,
                sigma,
                factor: factor * f,
            },
            Population::LogNormalMs { median, sigma, factor } => Population::LogNormalMs {
                median,
                sigma,
                factor: factor * f,
            },
            Population::Normal { mean, sd } => Population::Normal { mean: mean * f, sd },
        }
    }
}

/// How often the judge classified a metric `high` or `low`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    pub repetitions: usize,
    pub flagged: usize,
}

impl Rate {
    pub fn rate(&self) -> f64 {
        self.flagged as f64 / self.repetitions as f64
    }
}

/// Runs the judge `repetitions` times on `n` canary samples from `canary`
/// and `n` control samples from `control`, counting `high`/`low`.
pub fn flag_rate(
    config: &JudgeConfig,
    metric: &MetricConfig,
    canary: Population,
    control: Population,
    n: usize,
    repetitions: usize,
    seed: u64,
) -> Rate {
    let mut rng = Rng::new(seed);
    let mut flagged = 0;
    for _ in 0..repetitions {
        let samples = Samples::Continuous {
            canary: canary.draw(&mut rng, n),
            control: control.draw(&mut rng, n),
        };
        let j = judge(config, &[(metric.clone(), samples)]);
        if matches!(j.metrics[0].classification, Classification::High | Classification::Low) {
            flagged += 1;
        }
    }
    Rate { repetitions, flagged }
}

/// The same for success rates: `n` trials per group with success
/// probabilities `canary_p` and `control_p`.
pub fn flag_rate_proportion(
    config: &JudgeConfig,
    metric: &MetricConfig,
    canary_p: f64,
    control_p: f64,
    n: u64,
    repetitions: usize,
    seed: u64,
) -> Rate {
    let mut rng = Rng::new(seed);
    let mut flagged = 0;
    for _ in 0..repetitions {
        let canary_ok = (0..n).filter(|_| rng.bernoulli(canary_p)).count() as u64;
        let control_ok = (0..n).filter(|_| rng.bernoulli(control_p)).count() as u64;
        let samples = Samples::Proportion {
            canary_ok,
            canary_n: n,
            control_ok,
            control_n: n,
        };
        let j = judge(config, &[(metric.clone(), samples)]);
        if matches!(j.metrics[0].classification, Classification::High | Classification::Low) {
            flagged += 1;
        }
    }
    Rate { repetitions, flagged }
}

/// The largest flagged share an A/A simulation of `repetitions` may show
/// when the true rate is `alpha`: `alpha + 3·√(alpha(1 − alpha)/R)`, the
/// normal bound of the binomial count at three standard deviations
/// (exceeded by chance with probability ≈ 0.0013).
pub fn aa_bound(alpha: f64, repetitions: usize) -> f64 {
    alpha + 3.0 * (alpha * (1.0 - alpha) / repetitions as f64).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::canary::Direction;

    #[test]
    fn rng_is_deterministic_and_roughly_uniform() {
        let a: Vec<u64> = {
            let mut r = Rng::new(7);
            (0..4).map(|_| r.next_u64()).collect()
        };
        let b: Vec<u64> = {
            let mut r = Rng::new(7);
            (0..4).map(|_| r.next_u64()).collect()
        };
        assert_eq!(a, b);
        let mut r = Rng::new(1);
        let n = 100_000;
        let xs: Vec<f64> = (0..n).map(|_| r.normal()).collect();
        let mean = xs.iter().sum::<f64>() / n as f64;
        let var = xs.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n as f64;
        // Standard errors: 1/√n = 0.0032 for the mean, √(2/n) = 0.0045 for
        // the variance; five of them.
        assert!(mean.abs() < 0.016, "mean {mean}");
        assert!((var - 1.0).abs() < 0.023, "variance {var}");
    }

    #[test]
    fn aa_false_positive_rate_is_at_most_alpha_and_a_real_change_is_found() {
        // 2,000 A/A judgements of 50 against 50 latency samples (direction
        // either, so both sides count): the rate must stay within
        // aa_bound(0.05, 2000) = 0.0646 — and, so that a judge that never
        // flags cannot pass, above 0.05 − 3σ = 0.0354.
        let config = JudgeConfig::default();
        let mut metric = MetricConfig::new("latency");
        metric.direction = Direction::Either;
        let pop = Population::LogNormal {
            median: 100.0,
            sigma: 0.5,
            factor: 1.0,
        };
        let aa = flag_rate(&config, &metric, pop, pop, 50, 2000, 14);
        assert!(aa.rate() <= aa_bound(0.05, 2000), "A/A rate {}", aa.rate());
        assert!(
            aa.rate() >= 0.05 - (aa_bound(0.05, 2000) - 0.05),
            "A/A rate {}",
            aa.rate()
        );
        // With whole-millisecond ties the tie-corrected test stays in bound.
        let ms = Population::LogNormalMs {
            median: 20.0,
            sigma: 0.3,
            factor: 1.0,
        };
        let aa = flag_rate(&config, &metric, ms, ms, 50, 2000, 15);
        assert!(aa.rate() <= aa_bound(0.05, 2000), "A/A rate with ties {}", aa.rate());
        // A 50 % latency increase at 50 samples is found nearly always.
        let power = flag_rate(&config, &metric, pop.scaled(1.5), pop, 50, 500, 16);
        assert!(power.rate() > 0.95, "power {}", power.rate());
    }

    #[test]
    fn aa_false_positive_rate_of_success_rates_is_at_most_alpha() {
        let config = JudgeConfig::default();
        let mut metric = MetricConfig::new("success rate");
        metric.direction = Direction::Either;
        for (p, n, seed) in [(0.99, 200, 21), (0.9, 50, 22), (0.5, 500, 23)] {
            let aa = flag_rate_proportion(&config, &metric, p, p, n, 2000, seed);
            assert!(
                aa.rate() <= aa_bound(0.05, 2000),
                "A/A rate {} at p {p}, n {n}",
                aa.rate()
            );
        }
        let power = flag_rate_proportion(&config, &metric, 0.8, 0.95, 200, 500, 24);
        assert!(power.rate() > 0.95, "power {}", power.rate());
    }
}
