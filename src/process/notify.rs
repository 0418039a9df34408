//! systemd's readiness protocol (sd_notify). Every call is a no-op outside a `Type=notify`
//! unit (no `NOTIFY_SOCKET`), so the same binary runs under systemd, a shell or a test.
//!
//! The `sd-notify` crate speaks the protocol (a datagram to `$NOTIFY_SOCKET`, abstract socket
//! names included) in pure Rust, without linking libsystemd.

use sd_notify::NotifyState;

fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!("sd_notify failed: {e}");
    }
}

/// Listeners are up: the unit is started (or a reload finished). `MAINPID` tells systemd which
/// process to watch, which changes after a binary upgrade (the unit needs `NotifyAccess=all`).
pub fn ready() {
    send(&[
        NotifyState::MainPid(std::process::id()),
        NotifyState::Ready,
        NotifyState::Status("serving"),
    ]);
}

/// A reload started; `ready` ends it.
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(_) => send(&[NotifyState::Reloading]),
    }
}

/// A reload ended without a new process: the unit is ready again.
pub fn reloaded() {
    send(&[NotifyState::Ready, NotifyState::Status("serving")]);
}

pub fn stopping() {
    send(&[NotifyState::Stopping]);
}
