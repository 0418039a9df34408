//! Tells the idle keep-alive connections of a worker thread that a graceful stop began, so that
//! they close at once, as nginx closes its idle connections (ngx_close_idle_connections).
//!
//! Each connection waiting for its next request must be woken by the stop, so each must be
//! registered somewhere a stop can reach. Waiting on Pingora's shutdown watch registered every
//! wait under the watch's one lock (both worker threads took it for every request), and
//! tokio's `Notify` still takes a lock per wait. Here each worker thread keeps its own list of
//! wakers, which only that thread touches: a connection takes a place in it at its first wait
//! and keeps it to its end, so a wait costs a look at the thread's flag. One task per thread
//! watches the process's shutdown, sets the flag and wakes the list.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use pingora::server::ShutdownWatch;

/// A worker thread's idle connections.
#[derive(Default)]
struct Idle {
    /// Set for good once a graceful stop has begun.
    stopping: bool,
    /// Wakers of the connections that have waited, by place; `None` for a free place.
    wakers: Vec<Option<Waker>>,
    free: Vec<usize>,
    /// The shutdown watcher has been started on this thread.
    watching: bool,
}

thread_local! {
    static IDLE: RefCell<Idle> = RefCell::new(Idle::default());
}

/// One connection's way of waiting for the stop, on the thread it started on. Create it with
/// [`IdleStop::new`] once per connection.
pub struct IdleStop {
    /// Its place in the thread's list, once it has waited.
    place: Option<usize>,
    /// The thread's list it is in (its address, to tell threads apart).
    thread: usize,
}

fn this_thread() -> usize {
    IDLE.with(|idle| idle as *const RefCell<Idle> as usize)
}

impl IdleStop {
    /// Watches `shutdown` from the calling thread on (once per thread). Call from a task on a
    /// worker thread's runtime.
    pub fn new(shutdown: &ShutdownWatch) -> IdleStop {
        let start = IDLE.with(|idle| {
            let mut idle = idle.borrow_mut();
            !std::mem::replace(&mut idle.watching, true)
        });
        if start {
            let mut shutdown = shutdown.clone();
            tokio::spawn(async move {
                while !*shutdown.borrow_and_update() {
                    if shutdown.changed().await.is_err() {
                        return;
                    }
                }
                let wakers: Vec<Waker> = IDLE.with(|idle| {
                    let mut idle = idle.borrow_mut();
                    idle.stopping = true;
                    idle.wakers.iter_mut().filter_map(Option::take).collect()
                });
                wakers.into_iter().for_each(Waker::wake);
            });
        }
        IdleStop {
            place: None,
            thread: this_thread(),
        }
    }

    /// Whether a graceful stop has begun.
    pub fn stopping(&self) -> bool {
        IDLE.with(|idle| idle.borrow().stopping)
    }

    /// Returns once a graceful stop has begun (at once if it has). Poll it from the thread the
    /// connection started on; elsewhere it only says whether the stop has begun there.
    pub fn stopped(&mut self) -> Stopped<'_> {
        Stopped(self)
    }
}

impl Drop for IdleStop {
    fn drop(&mut self) {
        if let Some(place) = self.place.take() {
            if self.thread == this_thread() {
                IDLE.with(|idle| {
                    let mut idle = idle.borrow_mut();
                    if let Some(slot) = idle.wakers.get_mut(place) {
                        *slot = None;
                        idle.free.push(place);
                    }
                });
            }
        }
    }
}

/// See [`IdleStop::stopped`].
pub struct Stopped<'a>(&'a mut IdleStop);

impl Future for Stopped<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let stop = &mut *self.0;
        let same_thread = stop.thread == this_thread();
        IDLE.with(|idle| {
            let mut idle = idle.borrow_mut();
            if idle.stopping {
                return Poll::Ready(());
            }
            if !same_thread {
                return Poll::Pending;
            }
            match stop.place {
                Some(place) => match &mut idle.wakers[place] {
                    Some(waker) if waker.will_wake(cx.waker()) => {}
                    slot => *slot = Some(cx.waker().clone()),
                },
                None => {
                    let waker = Some(cx.waker().clone());
                    let place = match idle.free.pop() {
                        Some(place) => {
                            idle.wakers[place] = waker;
                            place
                        }
                        None => {
                            idle.wakers.push(waker);
                            idle.wakers.len() - 1
                        }
                    };
                    stop.place = Some(place);
                }
            }
            Poll::Pending
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn waiters_wake_when_the_stop_begins_and_later_ones_return_at_once() {
        let (tx, rx) = tokio::sync::watch::channel(false);
        let first = IdleStop::new(&rx);
        assert!(!first.stopping());
        let waiter = tokio::spawn(async move {
            let mut stop = IdleStop::new(&rx);
            // Waits again after a wake-up that was not the stop, from the same place.
            let _ = tokio::time::timeout(Duration::from_millis(5), stop.stopped()).await;
            stop.stopped().await;
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        tx.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("the waiter woke")
            .unwrap();
        assert!(first.stopping());
        let mut later = first;
        tokio::time::timeout(Duration::from_secs(5), later.stopped())
            .await
            .expect("returns at once once stopping");
        // Places are given back when connections end.
        drop(later);
        IDLE.with(|idle| {
            let idle = idle.borrow();
            assert_eq!(idle.wakers.iter().filter(|w| w.is_some()).count(), 0);
        });
    }
}
