//! `crashtest`: crash states of the real kernel. See README, "Crash states
//! of the real kernel".

mod blocklog;
mod catalog;
mod check;
mod fsys;
mod fuse;
mod record;
mod states;
mod sys;
mod workload;

fn main() {
    let work = std::path::PathBuf::from(format!("/dev/shm/{}{}", sys::PREFIX, std::process::id()));
    std::fs::create_dir_all(&work).unwrap();
    for fs in fsys::FsKind::ALL {
        let w = &catalog::real()[1];
        let t = std::time::Instant::now();
        let r = record::record(fs, w, &work);
        match r {
            Ok(r) => {
                let eps = states::epochs(&r.events);
                println!(
                    "{} {}: {:?} events {} epochs {} base {} in {:?}",
                    fs.name(),
                    w.name,
                    r.totals,
                    r.events.len(),
                    eps.len(),
                    r.base.data_bytes(),
                    t.elapsed()
                );
                for e in &eps {
                    print!("{} ", e.units.len());
                }
                println!();
            }
            Err(e) => println!("{} error {e}", fs.name()),
        }
    }
    sys::cleanup(work.to_str().unwrap());
    let _ = std::fs::remove_dir_all(&work);
}
