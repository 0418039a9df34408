//! The one way the appliance takes a `Mutex`.

use std::sync::{Mutex, MutexGuard};

/// Locks `m`. A lock whose holder panicked is taken all the same: nothing the appliance does
/// under its locks leaves the data half-changed, and a panic elsewhere must not stop the data
/// plane (limits, drain tables, log files, the process's sockets).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
