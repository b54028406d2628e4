//! Fault plans: make a chosen call fail with a chosen error number.
//!
//! A plan belongs to one simulator instance (no process-global counter), so
//! tests that inject faults run in parallel. Each fault fires once. A failed
//! call changes nothing, with one exception that follows Linux: a failed
//! `fsync` of a file with `EIO`, `ENOSPC` or `EDQUOT` drops that file's
//! dirty pages (they are marked clean and never written), while the process
//! still reads the new bytes; the next `fsync` then succeeds. That is the
//! "fsyncgate" trap a protocol must not fall into (REFERENCE.md R8).

use super::trace::Call;

/// When a fault fires.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trigger {
    /// The call with this index in the trace (0-based), whatever it is.
    Nth(usize),
    /// The first call of this kind made after the fault was planned.
    First(Call),
    /// The first call of this kind with a trace index above `index` (for a
    /// second fault in the cleanup after a first one).
    FirstAfter(Call, usize),
}

#[derive(Clone, Debug)]
struct Fault {
    trigger: Trigger,
    errno: i32,
    fired: bool,
}

/// The faults planned for one simulator.
#[derive(Clone, Debug, Default)]
pub(crate) struct FaultPlan {
    faults: Vec<Fault>,
}

impl FaultPlan {
    pub(crate) fn add(&mut self, trigger: Trigger, errno: i32) {
        self.faults.push(Fault {
            trigger,
            errno,
            fired: false,
        });
    }

    /// The error to inject into call number `index` of kind `call`, if any;
    /// marks the fault fired. Calls that cannot fail take no fault.
    pub(crate) fn take(&mut self, index: usize, call: Call) -> Option<i32> {
        if !call.can_fail() {
            return None;
        }
        let fault = self.faults.iter_mut().find(|f| {
            !f.fired
                && match f.trigger {
                    Trigger::Nth(n) => n == index,
                    Trigger::First(kind) => kind == call,
                    Trigger::FirstAfter(kind, after) => kind == call && index > after,
                }
        })?;
        fault.fired = true;
        Some(fault.errno)
    }

    /// How many planned faults have fired.
    pub(crate) fn fired(&self) -> usize {
        self.faults.iter().filter(|f| f.fired).count()
    }
}
