//! Cooperative interruption: a long job that can stop cleanly (training
//! with a monitor, which then still writes the report of the steps so far)
//! asks for Ctrl-C to be deferred to it; the signal handler then only
//! requests the stop, and the job polls [`requested`] between steps.

use std::sync::atomic::{AtomicBool, Ordering};

static DEFERRED: AtomicBool = AtomicBool::new(false);
static REQUESTED: AtomicBool = AtomicBool::new(false);

/// Declares that the running job polls [`requested`] and stops by itself.
pub fn defer() {
    DEFERRED.store(true, Ordering::SeqCst);
}

/// Whether a job has declared that it stops by itself.
pub fn deferred() -> bool {
    DEFERRED.load(Ordering::SeqCst)
}

/// Asks the running job to stop (what the signal handler does).
pub fn request() {
    REQUESTED.store(true, Ordering::SeqCst);
}

/// Whether a stop was asked for.
///
/// ```
/// assert!(!secondo::interrupt::requested());
/// ```
pub fn requested() -> bool {
    REQUESTED.load(Ordering::SeqCst)
}
