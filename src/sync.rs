//! The one way the appliance takes a `Mutex`, and the one way it counts what is under way.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

/// Locks `m`. A lock whose holder panicked is taken all the same: nothing the appliance does
/// under its locks leaves the data half-changed, and a panic elsewhere must not stop the data
/// plane (limits, drain tables, log files, the process's sockets).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Counts one in `counter` while it lives: what a graceful stop waits for (connections that have
/// not sent their first byte, stream sessions, accept loops) counts itself this way.
pub(crate) struct Counted(&'static AtomicUsize);

impl Counted {
    pub(crate) fn enter(counter: &'static AtomicUsize) -> Counted {
        counter.fetch_add(1, Ordering::SeqCst);
        Counted(counter)
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}
