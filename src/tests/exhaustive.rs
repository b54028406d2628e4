//! Tier 3: exhaustive crash tests. Every option combination × every crash
//! point × every crash image, in every model, for the real protocol: single
//! replaces through `write`, streaming and `update`, with named or
//! `O_TMPFILE` temps and with or without a backup; and batches of two or
//! three files in one or two directories.
//!
//! The invariants are in `crate::sim::check`: the target is the old or the
//! new version (content, mode and owner of the same version), never missing
//! if it existed; the new version in every image after `Ok` with Durable;
//! the old one after an error before the rename; at most one stray temp.

use std::time::Instant;

use crate::sim::check::{BatchCase, Case, Report, explore_batch, run_batch_case_with, sweep};
use crate::sim::{Budget, Call, Model};

fn exhaustive(model: Model) {
    let start = Instant::now();
    let budget = Budget::default();
    let cases = Case::extended_suite();
    let sweep = sweep(None, model, &cases, &budget);
    let report = sweep.report;
    if let Some(v) = report.first {
        panic!("{} in {model}: {v}", sweep.first_case.unwrap());
    }
    assert_eq!(
        report.stats.sampled_points, 0,
        "one replace is enumerated exhaustively"
    );
    eprintln!(
        "exhaustive {model}: {} cases, {} crash points, {} crash images checked in {:.2?}",
        cases.len(),
        report.stats.points,
        report.stats.images,
        start.elapsed()
    );
}

#[test]
fn conservative() {
    exhaustive(Model::Conservative);
}

#[test]
fn ext4_ordered() {
    exhaustive(Model::Ext4Ordered {
        auto_da_alloc: true,
    });
}

#[test]
fn ext4_ordered_noauto_da_alloc() {
    exhaustive(Model::Ext4Ordered {
        auto_da_alloc: false,
    });
}

#[test]
fn process_crash() {
    exhaustive(Model::ProcessCrash);
}

#[test]
fn create_new_link_fallback() {
    // Where RENAME_NOREPLACE is unsupported, create_new links and unlinks.
    for model in Model::ALL {
        for case in Case::matrix().into_iter().filter(|c| c.create_new) {
            let (sim, oracle, result) = crate::sim::check::run_case_with(&case, 3, |sim| {
                sim.set_rename_noreplace(false);
            });
            let report = crate::sim::check::check_images(&sim, &oracle, model, &Budget::default());
            assert_eq!(
                report.violations,
                0,
                "{case} in {model}: {}",
                report.first.unwrap()
            );
            assert!(crate::sim::check::check_volatile(&sim, &oracle, &result).is_none());
            assert_eq!(result.is_ok(), !oracle.expected.refused, "{case}");
        }
    }
}

/// Before the batch's flush only temps exist, and the conservative model
/// has 2^(their effects) images there (up to 2^24 for three files): those
/// points are sampled (the targets cannot change there; the temp count and
/// names are still checked). From the flush on, every point is enumerated.
const BATCH_BUDGET: Budget = Budget {
    exhaustive_max: 1 << 9,
    samples: 64,
    seed: 0x5eed,
};

fn batches(model: Model) {
    let start = Instant::now();
    let cases = BatchCase::suite();
    let mut total = Report::default();
    for case in &cases {
        let report = explore_batch(case, model, &BATCH_BUDGET);
        if let Some(v) = &report.first {
            panic!("{case} in {model}: {v}");
        }
        total.merge(report);
        // No point from the first syncfs on was sampled.
        let (sim, ..) = run_batch_case_with(case, BATCH_BUDGET.seed, |_| {});
        let flush = sim.trace().iter().position(|t| t.call == Call::SyncFs);
        let from = sim
            .crash_points()
            .into_iter()
            .find(|p| p.label == format!("after #{} sync_fs", flush.expect("a syncfs")))
            .expect("the flush is a crash point")
            .effects;
        let stats = sim.explore(model, from, &BATCH_BUDGET, &mut |_, _| true);
        assert_eq!(stats.sampled_points, 0, "{case} in {model}");
    }
    eprintln!(
        "exhaustive batches {model}: {} cases, {} crash points ({} sampled, all before the flush), \
         {} crash images checked in {:.2?}",
        cases.len(),
        total.stats.points,
        total.stats.sampled_points,
        total.stats.images,
        start.elapsed()
    );
}

#[test]
fn batch_conservative() {
    batches(Model::Conservative);
}

#[test]
fn batch_ext4_ordered() {
    batches(Model::Ext4Ordered {
        auto_da_alloc: true,
    });
}

#[test]
fn batch_ext4_ordered_noauto_da_alloc() {
    batches(Model::Ext4Ordered {
        auto_da_alloc: false,
    });
}

#[test]
fn batch_process_crash() {
    batches(Model::ProcessCrash);
}

// ---- issue 10: directory identity, several filesystems, bounded fds ----

fn identity_batches(model: Model) {
    let start = Instant::now();
    let cases = BatchCase::identity_suite();
    let mut total = Report::default();
    for case in &cases {
        let report = explore_batch(case, model, &BATCH_BUDGET);
        if let Some(v) = &report.first {
            panic!("{case} in {model}: {v}");
        }
        total.merge(report);
    }
    eprintln!(
        "exhaustive identity batches {model}: {} cases, {} crash points ({} sampled), \
         {} crash images checked in {:.2?}",
        cases.len(),
        total.stats.points,
        total.stats.sampled_points,
        total.stats.images,
        start.elapsed()
    );
}

#[test]
fn batch_identity_conservative() {
    identity_batches(Model::Conservative);
}

#[test]
fn batch_identity_ext4_ordered() {
    identity_batches(Model::Ext4Ordered {
        auto_da_alloc: true,
    });
}

#[test]
fn batch_identity_process_crash() {
    identity_batches(Model::ProcessCrash);
}
