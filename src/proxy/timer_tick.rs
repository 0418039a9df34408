//! A short timer always pending on each worker thread's runtime, so that arming a long one
//! (a read or keep-alive timeout, about once per request) costs no system call.
//!
//! tokio's timer driver remembers, when its thread goes to sleep in epoll, the earliest
//! deadline it must wake for; a timer armed later with an earlier deadline makes it write to
//! its eventfd, so that the sleep is cut short and recomputed (tokio `runtime/time/mod.rs`,
//! `reregister`). It does so even on its own thread, while awake: on the fast path that was an
//! extra `write` and an extra `epoll_wait` round for a large share of requests, whenever the
//! earliest pending timer was a 75 s keep-alive wait and a request armed its 60 s read timeout.
//! With a tick every 250 ms pending, the earliest deadline is never more than 250 ms away, and
//! timeouts of a second or more never undercut it. nginx needs nothing of the kind: its event
//! loop computes the epoll timeout from its timer tree at every turn.

use std::cell::Cell;
use std::time::Duration;

const TICK: Duration = Duration::from_millis(250);

thread_local! {
    static TICKING: Cell<bool> = const { Cell::new(false) };
}

/// Starts the tick on the calling thread's runtime, once per thread. Call from a task.
pub fn ensure_ticking() {
    if TICKING.with(|t| t.replace(true)) {
        return;
    }
    tokio::spawn(async {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
        }
    });
}
