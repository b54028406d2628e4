//! Crash-image exploration speed: how many crash images per second one core
//! builds and checks. The protocol runs once per case, outside the timing;
//! the timed part is the exploration (replaying effects, the recovery step,
//! the invariant checks), which is what the exhaustive tests spend their
//! time on. Target: at least 100 000 images/s.
//!
//! ```text
//! cargo bench --features sim --bench crash_images
//! ```

use std::time::{Duration, Instant};

use crashsafe::sim::check::{Case, check_images, run_case};
use crashsafe::sim::{Budget, Model};

const TARGET_PER_SEC: f64 = 100_000.0;

fn main() {
    let budget = Budget::default();
    let runs: Vec<_> = Case::suite()
        .iter()
        .map(|case| {
            let (sim, oracle, _) = run_case(case, budget.seed);
            (sim, oracle)
        })
        .collect();
    let mut slowest = f64::INFINITY;
    for model in Model::ALL {
        // Warm up once, then repeat for at least a second.
        for (sim, oracle) in &runs {
            check_images(sim, oracle, model, &budget);
        }
        let (mut images, mut rounds) = (0u64, 0u32);
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(1) {
            for (sim, oracle) in &runs {
                let report = check_images(sim, oracle, model, &budget);
                assert_eq!(report.violations, 0, "{model}");
                images += report.stats.images;
            }
            rounds += 1;
        }
        let per_sec = images as f64 / start.elapsed().as_secs_f64();
        slowest = slowest.min(per_sec);
        println!(
            "{:<14} {images:>9} images in {rounds:>4} rounds: {per_sec:>12.0} images/s",
            model.name()
        );
    }
    println!(
        "slowest model: {slowest:.0} images/s (target {TARGET_PER_SEC:.0}): {}",
        if slowest >= TARGET_PER_SEC {
            "ok"
        } else {
            "BELOW TARGET"
        }
    );
}
