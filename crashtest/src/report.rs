//! Running the plan and reporting: progress, per-workload findings, the
//! simulator cross-check, and the final table.

use std::collections::{BTreeSet, HashMap};
use std::io::{IsTerminal, Write};
use std::path::Path;
use std::time::Instant;

use crashsafe::sim::Model;

use crate::fsys::FsKind;
use crate::replay::{self, Failure, Settings};
use crate::simcheck::{self, Abstract};
use crate::workload::Workload;
use crate::{Plan, catalog, record, states};

/// One line of the table.
#[derive(Debug, Default)]
struct Row {
    fs: &'static str,
    workload: String,
    recordings: usize,
    checked: usize,
    violations: usize,
    secs: f64,
    /// Real states the conservative model calls impossible.
    model_gaps: Option<usize>,
    /// For a broken variant: whether it must be caught.
    must_catch: Option<bool>,
}

fn progress_line(text: &str) {
    let mut err = std::io::stderr();
    if err.is_terminal() {
        let _ = write!(err, "\r\x1b[2K{text}");
        let _ = err.flush();
    }
}

fn print_failures(fs: FsKind, w: &Workload, failures: &[Failure]) {
    for f in failures.iter().take(3) {
        println!(
            "    {} {}: state {} ({:?}): {}",
            fs.name(),
            w.name,
            f.state.label(),
            f.state.shape,
            f.problems.join("; ")
        );
    }
}

/// Runs everything in `plan`; `Ok(true)` when every promise held and every
/// must-catch broken variant was caught.
pub fn run_all(plan: &Plan, work: &Path) -> Result<bool, String> {
    let mut jobs: Vec<(Workload, usize, usize)> = catalog::real()
        .into_iter()
        .map(|w| (w, plan.real_runs, plan.states))
        .collect();
    if plan.broken {
        for v in catalog::BROKEN {
            let runs = if catalog::must_catch(v) {
                plan.broken_runs
            } else {
                plan.broken_runs.div_ceil(2)
            };
            jobs.push((catalog::broken(v), runs, plan.broken_states));
        }
        // issue 16: DirReplace without its flush.
        for w in catalog::broken_sets() {
            jobs.push((w, plan.broken_runs, plan.broken_states));
        }
    }
    if let Some(f) = &plan.filter {
        jobs.retain(|(w, _, _)| w.name.contains(f.as_str()));
    }
    let settings = Settings {
        workers: plan.jobs,
        fsck: plan.fsck,
        keep_dir: plan.keep.clone(),
    };
    let mut ok = true;
    let mut rows = Vec::new();
    let mut models: HashMap<(String, &'static str), Result<BTreeSet<Abstract>, String>> =
        HashMap::new();
    let started = Instant::now();
    for &fs in &plan.fs {
        for (w, runs, budget) in &jobs {
            let t = Instant::now();
            let mut row = Row {
                fs: fs.name(),
                workload: w.name.clone(),
                must_catch: w.broken.map(catalog::must_catch),
                ..Row::default()
            };
            let mut seen = BTreeSet::new();
            let mut failures = Vec::new();
            let mut logged = crate::blocklog::Totals::default();
            for r in 0..*runs {
                let label = format!("{} {} (recording {}/{runs})", fs.name(), w.name, r + 1);
                progress_line(&format!("{label}: recording"));
                let rec = record::record(fs, w, &work.join("rec"))
                    .map_err(|e| format!("{label}: {e}"))?;
                let eps = states::epochs(&rec.events);
                let list = states::enumerate(&eps, *budget, plan.seed.wrapping_add(r as u64));
                let n = list.len();
                let show = |done: usize| progress_line(&format!("{label}: state {done}/{n}"));
                let out =
                    replay::check_states(fs, w, &rec, &list, &work.join("check"), &settings, &show)
                        .map_err(|e| format!("{label}: {e}"))?;
                row.recordings += 1;
                logged.write_sectors += rec.totals.write_sectors;
                logged.flushes += rec.totals.flushes;
                row.checked += out.checked;
                row.violations += out.failures.len();
                seen.extend(out.seen);
                failures.extend(out.failures);
            }
            row.secs = t.elapsed().as_secs_f64();
            progress_line("");
            let verdict = match (row.must_catch, row.violations) {
                (None, 0) => "ok".to_string(),
                (None, n) => {
                    ok = false;
                    format!("VIOLATED in {n} states")
                }
                (Some(_), n) if n > 0 => format!("caught in {n} states"),
                (Some(true), _) => {
                    ok = false;
                    "NOT CAUGHT (it must be)".to_string()
                }
                (Some(false), _) => "not caught".to_string(),
            };
            println!(
                "{:<6} {:<26} {} recording(s) ({} KiB written, {} flushes), {} states: {verdict}",
                fs.name(),
                w.name,
                row.recordings,
                logged.write_sectors / 2,
                logged.flushes,
                row.checked
            );
            if w.broken.is_none() {
                print_failures(fs, w, &failures);
            } else if let Some(f) = failures.first() {
                print_failures(fs, w, std::slice::from_ref(f));
            }
            if w.sim_check {
                let mut check_model = |model: Model, loud: bool| -> Result<usize, String> {
                    let allowed = models
                        .entry((w.name.clone(), model.name()))
                        .or_insert_with(|| simcheck::allowed(w, model));
                    let allowed = allowed
                        .as_ref()
                        .map_err(|e| format!("{}: simulator: {e}", w.name))?;
                    let gaps: Vec<&Abstract> =
                        seen.iter().filter(|s| !allowed.contains(*s)).collect();
                    for g in gaps.iter().take(5) {
                        if loud {
                            println!(
                                "    !!! MODEL BUG: {} produced a state the simulator's {} model calls impossible: {}",
                                fs.name(),
                                model.name(),
                                simcheck::show(g, w)
                            );
                        } else {
                            println!(
                                "    note: {} produced a state the simulator's {} model does not allow: {}",
                                fs.name(),
                                model.name(),
                                simcheck::show(g, w)
                            );
                        }
                    }
                    Ok(gaps.len())
                };
                let gaps = check_model(Model::Conservative, true)?;
                row.model_gaps = Some(gaps);
                if gaps > 0 {
                    ok = false;
                }
                if fs == FsKind::Ext4 {
                    check_model(
                        Model::Ext4Ordered {
                            auto_da_alloc: true,
                        },
                        false,
                    )?;
                }
            }
            rows.push(row);
        }
    }
    let total = print_table(&rows, started.elapsed().as_secs_f64());
    if let Some(min) = plan.min_total
        && plan.fs.len() == FsKind::ALL.len()
        && plan.filter.is_none()
        && total < min
    {
        println!("FAILED: only {total} states checked, the budget promises at least {min}");
        ok = false;
    }
    Ok(ok)
}

fn print_table(rows: &[Row], secs: f64) -> usize {
    println!();
    println!(
        "| filesystem | workload | recordings | states checked | violations | states/s | model gaps |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|");
    for r in rows {
        let violations = match r.must_catch {
            None => r.violations.to_string(),
            Some(must) => format!(
                "{} ({}{})",
                r.violations,
                if r.violations > 0 { "caught" } else { "missed" },
                if must { ", must catch" } else { "" }
            ),
        };
        println!(
            "| {} | {} | {} | {} | {} | {:.0} | {} |",
            r.fs,
            r.workload,
            r.recordings,
            r.checked,
            violations,
            r.checked as f64 / r.secs.max(1e-9),
            r.model_gaps.map_or("-".to_string(), |g| g.to_string())
        );
    }
    print_pivot(rows);
    let total: usize = rows.iter().map(|r| r.checked).sum();
    println!();
    println!("total: {total} states checked in {secs:.0} s");
    total
}

/// The same results as workload × filesystem: "states / violations".
fn print_pivot(rows: &[Row]) {
    let mut fss: Vec<&str> = Vec::new();
    let mut workloads: Vec<&str> = Vec::new();
    for r in rows {
        if !fss.contains(&r.fs) {
            fss.push(r.fs);
        }
        if !workloads.contains(&r.workload.as_str()) {
            workloads.push(&r.workload);
        }
    }
    println!();
    println!(
        "| workload (states checked / violations) | {} |",
        fss.join(" | ")
    );
    println!("|---|{}", "---:|".repeat(fss.len()));
    for w in workloads {
        let cells: Vec<String> = fss
            .iter()
            .map(|fs| {
                rows.iter()
                    .find(|r| r.fs == *fs && r.workload == w)
                    .map_or("-".to_string(), |r| {
                        let mark = match (r.must_catch, r.violations) {
                            (Some(_), 0) => " missed",
                            (Some(_), _) => " caught",
                            (None, _) => "",
                        };
                        format!("{} / {}{mark}", r.checked, r.violations)
                    })
            })
            .collect();
        println!("| {w} | {} |", cells.join(" | "));
    }
}
