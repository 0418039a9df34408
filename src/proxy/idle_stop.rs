//! Tells the idle keep-alive connections of a worker thread that a graceful stop began, so that
//! they close at once, as nginx closes its idle connections (ngx_close_idle_connections).
//!
//! Each connection waiting for its next request must be woken by the stop. Waiting on Pingora's
//! shutdown watch itself costs, per wait, a clone and a drop of the receiver (four atomic
//! operations on counters every worker thread shares) and a registration under the watch's one
//! lock, which both worker threads take for every request. Here each thread has its own
//! signal: one task per thread watches the process's shutdown and wakes that thread's waiters,
//! so a wait takes only its own thread's lock.

use std::sync::atomic::{AtomicBool, Ordering};

use pingora::server::ShutdownWatch;
use tokio::sync::Notify;

/// One worker thread's stop signal. Leaked once per thread (the worker threads live as long as
/// the process), so that a connection's future can hold it as `&'static`.
struct ThreadStop {
    stopping: AtomicBool,
    waiters: Notify,
}

thread_local! {
    static THIS_THREAD: std::cell::OnceCell<&'static ThreadStop> =
        const { std::cell::OnceCell::new() };
}

/// The calling thread's stop signal, watching `shutdown` from the first call on. Call from a
/// task on a worker thread's runtime.
pub fn this_thread(shutdown: &ShutdownWatch) -> IdleStop {
    IdleStop(THIS_THREAD.with(|cell| {
        *cell.get_or_init(|| {
            let stop: &'static ThreadStop = Box::leak(Box::new(ThreadStop {
                stopping: AtomicBool::new(*shutdown.borrow()),
                waiters: Notify::new(),
            }));
            let mut shutdown = shutdown.clone();
            tokio::spawn(async move {
                while !*shutdown.borrow_and_update() {
                    if shutdown.changed().await.is_err() {
                        return;
                    }
                }
                stop.stopping.store(true, Ordering::SeqCst);
                stop.waiters.notify_waiters();
            });
            stop
        })
    }))
}

/// A thread's stop signal, as a connection holds it.
#[derive(Clone, Copy)]
pub struct IdleStop(&'static ThreadStop);

impl IdleStop {
    /// Whether a graceful stop has begun.
    pub fn stopping(self) -> bool {
        self.0.stopping.load(Ordering::SeqCst)
    }

    /// Returns once a graceful stop has begun (at once if it has).
    pub async fn stopped(self) {
        loop {
            let notified = self.0.waiters.notified();
            let mut notified = std::pin::pin!(notified);
            // Registered before the flag is read, so a stop between the two still wakes it.
            notified.as_mut().enable();
            if self.stopping() {
                return;
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn waiters_wake_when_the_stop_begins_and_later_ones_return_at_once() {
        let (tx, rx) = tokio::sync::watch::channel(false);
        let stop = this_thread(&rx);
        assert!(!stop.stopping());
        let waiter = tokio::spawn(stop.stopped());
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        tx.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("the waiter woke")
            .unwrap();
        assert!(stop.stopping());
        tokio::time::timeout(Duration::from_secs(5), stop.stopped())
            .await
            .expect("returns at once once stopping");
    }
}
