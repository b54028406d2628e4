//! Crash report: runs the exhaustive crash exploration for the real
//! protocol and for each deliberately broken variant, in every crash model,
//! and prints what was checked and where each mistake is first caught.
//!
//! ```text
//! cargo run --release --features sim --example crash_report
//! ```

use std::time::Instant;

use crashsafe::sim::check::{Case, sweep};
use crashsafe::sim::{Broken, Budget, Model};

fn main() {
    let cases = Case::suite();
    let budget = Budget::default();
    let variants: [(&str, Option<Broken>); 7] = [
        ("real protocol", None),
        ("no file fsync", Some(Broken::NoFileSync)),
        ("no dir fsync", Some(Broken::NoDirSync)),
        ("mode after fsync", Some(Broken::ModeAfterSync)),
        ("rename before fsync", Some(Broken::RenameBeforeSync)),
        ("unlink then rename", Some(Broken::UnlinkThenRename)),
        ("retry failed fsync", Some(Broken::RetrySync)),
    ];
    println!(
        "{} cases per variant (target absent/present x Durable/Consistent x create_new x \
         file/symlink followed/symlink replaced x 4 payloads x write/streaming); seed {:#x}\n",
        cases.len(),
        budget.seed
    );
    println!(
        "{:<20} {:<14} {:>7} {:>8} {:>10}  first violation (case: point: what)",
        "variant", "model", "points", "images", "violations"
    );
    let start = Instant::now();
    let mut images = 0;
    for (name, variant) in variants {
        for model in Model::ALL {
            let result = sweep(variant, model, &cases, &budget);
            let stats = result.report.stats;
            images += stats.images;
            let first = match (
                &result.first_crash,
                &result.first_case,
                &result.report.first,
            ) {
                (Some((case, v)), _, _) => format!("{case}: {}: {}", v.point, v.message),
                (None, Some(case), Some(v)) => format!("{case}: {v}"),
                _ => "-".to_string(),
            };
            println!(
                "{name:<20} {:<14} {:>7} {:>8} {:>10}  {first}",
                model.name(),
                stats.points,
                stats.images,
                result.report.violations,
            );
        }
    }
    let elapsed = start.elapsed();
    println!(
        "\n{images} crash images checked in {elapsed:.2?} ({:.0} images/s, protocol runs included)",
        images as f64 / elapsed.as_secs_f64()
    );
}
