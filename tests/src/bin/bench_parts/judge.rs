//! `faultline-bench judge`: the canary judge's A/A false-positive rate,
//! its power table and its time for 10,000 samples per group, printed as
//! Markdown tables (BENCHMARKS.md section "Canary judge", docs/judge.md).
//!
//! Every simulation is seeded (`faultline_coordinator::canary::sim`), so
//! the rates are the same on every machine; only the times vary. With
//! `JUDGE_PROFILE=1` the timing section also prints, on stderr, the time of
//! the Mann–Whitney test and of the Hodges–Lehmann interval alone.

use std::time::Instant;

use faultline_coordinator::canary::sim::{aa_bound, flag_rate, flag_rate_proportion, Population, Rng};
use faultline_coordinator::canary::{judge, Direction, JudgeConfig, MetricConfig, Samples, Test};

fn metric(direction: Direction, test: Test) -> MetricConfig {
    let mut m = MetricConfig::new("m");
    m.direction = direction;
    m.test = test;
    m
}

pub fn run(aa_reps: usize, power_reps: usize) {
    let config = JudgeConfig::default();
    let alpha = config.alpha;
    let lat = Population::LogNormal {
        median: 100.0,
        sigma: 0.5,
        factor: 1.0,
    };
    let ms = Population::LogNormalMs {
        median: 20.0,
        sigma: 0.3,
        factor: 1.0,
    };

    println!("## A/A false-positive rate (alpha {alpha}, {aa_reps} repetitions each)\n");
    println!(
        "Bound for a rate of at most alpha: alpha + 3·sqrt(alpha(1−alpha)/R) = {:.4}.\n",
        aa_bound(alpha, aa_reps)
    );
    println!("| samples | per group | test | direction | flagged | rate |");
    println!("|---|---|---|---|---|---|");
    let cases: Vec<(&str, Population, usize, Test, Direction)> = vec![
        ("log-normal latency", lat, 8, Test::MannWhitney, Direction::Either),
        ("log-normal latency", lat, 20, Test::MannWhitney, Direction::Either),
        ("log-normal latency", lat, 50, Test::MannWhitney, Direction::Either),
        ("log-normal latency", lat, 500, Test::MannWhitney, Direction::Either),
        ("log-normal latency", lat, 50, Test::MannWhitney, Direction::Increase),
        ("whole-ms latency (ties)", ms, 100, Test::MannWhitney, Direction::Either),
        ("log-normal latency", lat, 50, Test::Welch, Direction::Either),
    ];
    for (i, (what, pop, n, test, dir)) in cases.into_iter().enumerate() {
        let r = flag_rate(&config, &metric(dir, test), pop, pop, n, aa_reps, 1000 + i as u64);
        println!(
            "| {what} | {n} | {} | {} | {} | **{:.4}** |",
            test_name(test),
            dir_name(dir),
            r.flagged,
            r.rate()
        );
    }
    for (i, (p, n)) in [(0.99, 200u64), (0.9, 50), (0.5, 500)].into_iter().enumerate() {
        let r = flag_rate_proportion(
            &config,
            &metric(Direction::Either, Test::MannWhitney),
            p,
            p,
            n,
            aa_reps,
            2000 + i as u64,
        );
        println!(
            "| success rate {p} | {n} trials | fisher / z | either | {} | **{:.4}** |",
            r.flagged,
            r.rate()
        );
    }

    println!(
        "\n## Power: share of {power_reps} judgements that flag the canary `high` (Mann–Whitney, direction increase, alpha {alpha})\n"
    );
    println!("Control: log-normal latency, median 100 ms, log-scale sigma 0.5; canary: the same times the factor.\n");
    let factors = [1.05, 1.1, 1.25, 1.5, 2.0];
    let sizes = [10usize, 20, 50, 100, 200, 500, 1000];
    print!("| per group |");
    for f in factors {
        print!(" ×{f} |");
    }
    println!();
    print!("|---|");
    for _ in factors {
        print!("---|");
    }
    println!();
    for (si, n) in sizes.into_iter().enumerate() {
        print!("| {n} |");
        for (fi, f) in factors.into_iter().enumerate() {
            let r = flag_rate(
                &config,
                &metric(Direction::Increase, Test::MannWhitney),
                lat.scaled(f),
                lat,
                n,
                power_reps,
                3000 + (si * 10 + fi) as u64,
            );
            print!(" {:.3} |", r.rate());
        }
        println!();
    }

    println!("\n## Power: success rate lower than a control at 99 % (direction decrease, alpha {alpha})\n");
    let rates = [0.98, 0.97, 0.95, 0.9];
    let trials = [50u64, 100, 200, 500, 1000];
    print!("| trials per group |");
    for r in rates {
        print!(" canary {r} |");
    }
    println!();
    print!("|---|");
    for _ in rates {
        print!("---|");
    }
    println!();
    for (ti, n) in trials.into_iter().enumerate() {
        print!("| {n} |");
        for (ri, p) in rates.into_iter().enumerate() {
            let r = flag_rate_proportion(
                &config,
                &metric(Direction::Decrease, Test::MannWhitney),
                p,
                0.99,
                n,
                power_reps,
                4000 + (ti * 10 + ri) as u64,
            );
            print!(" {:.3} |", r.rate());
        }
        println!();
    }

    println!("\n## Judge time, 10,000 samples per group (median of 21 runs, one metric)\n");
    println!("| samples | test | median | min | max |");
    println!("|---|---|---|---|---|");
    let mut rng = Rng::new(5000);
    for (what, pop, test) in [
        ("log-normal latency", lat, Test::MannWhitney),
        ("whole-ms latency (ties)", ms, Test::MannWhitney),
        ("log-normal latency", lat, Test::Welch),
    ] {
        let canary = pop.scaled(1.02).draw(&mut rng, 10_000);
        let control = pop.draw(&mut rng, 10_000);
        let m = metric(Direction::Increase, test);
        let mut times = Vec::new();
        let mut class = String::new();
        for _ in 0..21 {
            let samples = Samples::Continuous {
                canary: canary.clone(),
                control: control.clone(),
            };
            let input = [(m.clone(), samples)];
            let t = Instant::now();
            let j = judge(&config, &input);
            times.push(t.elapsed().as_secs_f64() * 1000.0);
            class = format!("{:?}", j.metrics[0].classification);
        }
        times.sort_by(f64::total_cmp);
        if std::env::var("JUDGE_PROFILE").is_ok() {
            use faultline_coordinator::canary::stats;
            let t = Instant::now();
            let _ = stats::mann_whitney(&canary, &control);
            let a = t.elapsed();
            let t = Instant::now();
            let _ = stats::hodges_lehmann(&canary, &control, 0.05);
            eprintln!("mw {:?} hl {:?}", a, t.elapsed());
        }
        println!(
            "| {what} (canary ×1.02: {class}) | {} | **{:.2} ms** | {:.2} ms | {:.2} ms |",
            test_name(test),
            times[10],
            times[0],
            times[20]
        );
    }
}

fn test_name(t: Test) -> &'static str {
    match t {
        Test::MannWhitney => "mann_whitney",
        Test::Welch => "welch",
    }
}

fn dir_name(d: Direction) -> &'static str {
    match d {
        Direction::Increase => "increase",
        Direction::Decrease => "decrease",
        Direction::Either => "either",
    }
}
