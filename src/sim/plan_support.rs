//! Facade additions for the `plan` fuzz target (`crate::fuzzing::plan`):
//! a second name for a file at setup, and crash images that never write to
//! stderr.

use std::io;
use std::path::Path;

use super::crash::conservative::Conservative;
use super::crash::ext4::Ext4;
use super::crash::process::Process;
use super::crash::{Rng, Walker};
use super::fs::{Node, Op, ROOT};
use super::images_to_sims;
use super::{Budget, Model, SETUP, SimFs, errno};

impl SimFs {
    /// Gives the regular file at `existing` the second name `path` (a hard
    /// link), durable at once, like the other setup calls.
    ///
    /// # Errors
    /// `ENOENT`/`ENOTDIR` for a bad path, `EPERM` if `existing` is not a
    /// regular file, `EEXIST` if `path` is taken.
    pub fn hard_link(&self, existing: impl AsRef<Path>, path: impl AsRef<Path>) -> io::Result<()> {
        let ino = {
            let st = self.lock();
            let bytes = existing.as_ref().as_os_str().as_encoded_bytes();
            let ino = st
                .volatile
                .walk(ROOT, bytes, false, SETUP)
                .map_err(errno::error)?;
            if !matches!(
                st.volatile.get(ino).map(|i| &i.node),
                Some(Node::File { .. })
            ) {
                return Err(errno::error(errno::PERM));
            }
            ino
        };
        self.setup(path.as_ref(), |parent, name, _unused| {
            vec![Op::Link {
                dir: parent,
                name,
                ino,
            }]
        })
    }

    /// As [`SimFs::crash_images_at`], but silent when the images of the
    /// point are sampled rather than enumerated: a fuzz input already
    /// carries the sampling seed, so a line on stderr per run would only
    /// slow the fuzzer down and flood its log.
    pub fn crash_images_quiet(&self, effects: usize, model: Model, budget: &Budget) -> Vec<SimFs> {
        let st = self.lock();
        let effects = effects.min(st.log.len());
        let mut walker: Box<dyn Walker> = match model {
            Model::Conservative => Box::new(Conservative::new(&st.base)),
            Model::Ext4Ordered { auto_da_alloc } => Box::new(Ext4::new(&st.base, auto_da_alloc)),
            Model::ProcessCrash => Box::new(Process::new(&st.base)),
        };
        for i in 0..effects {
            walker.step(&st.log, i);
        }
        // The same per-point stream as `explore`, so a point shows the same
        // images whichever way it is asked for.
        let mut rng = Rng::new(budget.seed ^ (effects as u64).wrapping_mul(0x2545_f491_4f6c_dd1d));
        let mut images = Vec::new();
        walker.images(&st.log, effects, &mut rng, budget, &mut |fs| {
            images.push(fs.clone());
            true
        });
        images_to_sims(&st, effects, images)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::Options;

    #[test]
    fn hard_link_adds_a_durable_second_name() {
        let sim = SimFs::new(1);
        sim.mkdir("/d", 0o755).unwrap();
        sim.put_file("/d/a", b"x", 0o644, 0, 0).unwrap();
        sim.hard_link("/d/a", "/d/h").unwrap();
        assert_eq!(sim.stat("/d/a").unwrap().nlink, 2);
        assert_eq!(sim.read_file("/d/h").unwrap(), b"x");
        assert!(sim.hard_link("/d", "/d/x").is_err());
        // Durable: the only image of the start is the setup itself.
        let images = sim.crash_images_quiet(0, Model::Conservative, &Budget::default());
        assert_eq!(images.len(), 1);
        assert_eq!(images[0].stat("/d/h").unwrap().nlink, 2);
    }

    #[test]
    fn quiet_images_are_the_same_as_crash_images_at() {
        let sim = SimFs::new(3);
        sim.mkdir("/d", 0o755).unwrap();
        let mut opts = Options::new();
        opts.durability(crate::options::Durability::Consistent);
        sim.write("/d/a", b"one", &opts).unwrap();
        sim.write("/d/a", b"two", &opts).unwrap();
        let budget = Budget {
            exhaustive_max: 4,
            samples: 8,
            seed: 7,
        };
        for model in Model::ALL {
            for point in sim.crash_points() {
                let loud = sim.crash_images_at(point.effects, model, &budget);
                let quiet = sim.crash_images_quiet(point.effects, model, &budget);
                let tree = |s: &SimFs| s.lock().volatile.clone();
                assert_eq!(loud.len(), quiet.len(), "{model} {point}");
                for (a, b) in loud.iter().zip(&quiet) {
                    assert_eq!(tree(a), tree(b), "{model} {point}");
                }
            }
        }
    }
}
