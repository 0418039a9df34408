//! The listeners' accept loops (HTTP and `stream {}` alike) and the worker threads that serve
//! their connections, as nginx's worker processes serve theirs: each worker thread runs its own
//! single-threaded event loop, and a connection lives on one of them from its first byte to its
//! close.
//!
//! Why not Pingora's listening service: it accepts on one runtime and hands each connection to
//! a worker picked at random, with the socket already registered with the accepting thread's
//! epoll, so the connection had to be registered again on the thread serving it (a `dup`, two
//! `epoll_ctl` and a `close` per connection), and it wraps each socket in its buffered stream,
//! whose per-request costs the fast path does without ([`PlainStream`](super::plain)). Here the
//! accept loops hand a socket not yet registered anywhere to the worker with the fewest
//! connections, which registers it with its own event loop once.
//!
//! The sockets are the process's own (bound by `process::sockets`, kept in Pingora's fd table
//! for upgrades); the accept loops use duplicates of them and stop when a graceful stop begins,
//! which closes the sockets, while the connections they handed out go on until they finish or
//! the process exits.

use std::collections::{HashMap, HashSet};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use pingora::server::{ListenFds, ShutdownWatch};
use pingora::services::{ServiceReadyNotifier, ServiceWithDependents};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::runtime::Handle;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;

use super::edge::{Accepted, Fresh, HttpEdge};
use super::placement::Placement;
use super::stream::{FromClient, StreamEdge};
use crate::config::ListenAddress;

/// The data plane's listening service: see the module docs.
pub struct Workers {
    http: Arc<HttpEdge>,
    /// The listening sockets, each with whom it serves.
    binds: Vec<(ListenAddress, Serves)>,
    workers: usize,
    placement: Arc<Placement>,
}

/// Whom a listening socket's connections go to: the HTTP edge's socket of that index, or the
/// stream edge's listener of that index (its datagrams, for a UDP one).
#[derive(Clone)]
enum Serves {
    Http(usize),
    Stream(Arc<StreamEdge>, usize),
    Datagrams(Arc<StreamEdge>, usize),
}

/// The fd-table name of the socket on `bind` that serves `serves`.
fn key(bind: &ListenAddress, serves: &Serves) -> String {
    match serves {
        Serves::Datagrams(..) => crate::process::sockets::udp_key(bind),
        _ => crate::process::sockets::key(bind),
    }
}

impl Workers {
    /// `http_binds` in the HTTP edge's order of sockets; the stream's come from its edge.
    pub fn new(
        http: HttpEdge,
        http_binds: Vec<ListenAddress>,
        stream: Option<StreamEdge>,
        workers: usize,
        placement: Arc<Placement>,
    ) -> Workers {
        let mut binds: Vec<_> = http_binds
            .into_iter()
            .enumerate()
            .map(|(index, bind)| (bind, Serves::Http(index)))
            .collect();
        if let Some(stream) = stream.map(Arc::new) {
            for (index, (bind, udp)) in stream.binds().into_iter().enumerate() {
                let serves = match udp {
                    true => Serves::Datagrams(stream.clone(), index),
                    false => Serves::Stream(stream.clone(), index),
                };
                binds.push((bind, serves));
            }
        }
        Workers {
            http: Arc::new(http),
            binds,
            workers: workers.max(1),
            placement,
        }
    }
}

/// A worker thread: its event loop, and how many connections it serves now.
struct Worker {
    handle: Handle,
    connections: Arc<AtomicUsize>,
}

/// Counts a connection on its worker while it lives.
struct OnWorker(Arc<AtomicUsize>);

impl Drop for OnWorker {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Starts `count` worker threads, each with its own single-threaded runtime and placed on its
/// CPUs, alive until the process exits.
fn start_workers(count: usize, placement: &Arc<Placement>) -> io::Result<Vec<Worker>> {
    (0..count)
        .map(|index| {
            let (tx, rx) = std::sync::mpsc::channel();
            let placement = placement.clone();
            std::thread::Builder::new()
                .name(format!("worker-{index}"))
                .spawn(move || {
                    placement.place_this_thread(index);
                    let runtime = match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        Ok(runtime) => runtime,
                        Err(e) => {
                            let _ = tx.send(Err(e));
                            return;
                        }
                    };
                    let _ = tx.send(Ok(runtime.handle().clone()));
                    runtime.block_on(std::future::pending::<()>());
                })?;
            let handle = rx
                .recv()
                .map_err(|_| io::Error::other("a worker thread ended at its start"))??;
            Ok(Worker {
                handle,
                connections: Arc::new(AtomicUsize::new(0)),
            })
        })
        .collect()
}

const READABLE: Interest = Interest::READABLE;

/// One listening socket, as an accept loop polls it.
enum Listener {
    Tcp(AsyncFd<std::net::TcpListener>),
    Unix(AsyncFd<std::os::unix::net::UnixListener>),
    /// A UDP socket, which a receive loop reads instead.
    Udp(tokio::net::UdpSocket),
}

impl Listener {
    /// A duplicate of the listening socket `fd`, for this runtime's epoll.
    fn of(bind: &ListenAddress, serves: &Serves, fd: std::os::fd::RawFd) -> io::Result<Listener> {
        // SAFETY: `fd` is a listening socket in Pingora's fd table, open for the life of the
        // process; it is only borrowed to duplicate it.
        let duplicate: OwnedFd = unsafe { BorrowedFd::borrow_raw(fd) }.try_clone_to_owned()?;
        if let Serves::Datagrams(..) = serves {
            let socket = std::net::UdpSocket::from(duplicate);
            socket.set_nonblocking(true)?;
            return Ok(Listener::Udp(tokio::net::UdpSocket::from_std(socket)?));
        }
        Ok(match bind {
            ListenAddress::Tcp(_) => {
                let listener = std::net::TcpListener::from(duplicate);
                listener.set_nonblocking(true)?;
                // SAFETY: the listener owns its descriptor until it is dropped with the AsyncFd.
                Listener::Tcp(unsafe { AsyncFd::register_with_interest(listener, READABLE) }?)
            }
            ListenAddress::Unix(_) => {
                let listener = std::os::unix::net::UnixListener::from(duplicate);
                listener.set_nonblocking(true)?;
                // SAFETY: as above.
                Listener::Unix(unsafe { AsyncFd::register_with_interest(listener, READABLE) }?)
            }
        })
    }

    /// The next connection, not registered with any event loop yet.
    async fn accept(&self) -> io::Result<Accepted> {
        match self {
            Listener::Udp(_) => std::future::pending().await,
            Listener::Tcp(fd) => loop {
                let mut ready = fd.readable().await?;
                match ready.try_io(|l| accept4(l.get_ref().as_raw_fd())) {
                    Ok(result) => {
                        let (socket, peer) = result?;
                        let _ = socket.set_nodelay(true);
                        return Ok(Accepted::Tcp(socket, peer));
                    }
                    Err(_would_block) => continue,
                }
            },
            Listener::Unix(fd) => loop {
                let mut ready = fd.readable().await?;
                match ready.try_io(|l| l.get_ref().accept()) {
                    Ok(result) => {
                        let (socket, _) = result?;
                        socket.set_nonblocking(true)?;
                        return Ok(Accepted::Unix(socket));
                    }
                    Err(_would_block) => continue,
                }
            },
        }
    }
}

/// accept4 with the new socket non-blocking and close-on-exec in the one system call.
fn accept4(
    listener: std::os::fd::RawFd,
) -> io::Result<(std::net::TcpStream, std::net::SocketAddr)> {
    // SAFETY: accept4 writes at most `len` bytes of address into the storage socket2 provides
    // and sets `len`; the descriptor it returns is new and owned by nobody else.
    let (fd, addr) = unsafe {
        socket2::SockAddr::try_init(|storage, len| {
            let fd = libc::accept4(
                listener,
                storage.cast(),
                len,
                libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            );
            if fd < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(fd)
            }
        })?
    };
    // SAFETY: see above: `fd` is a new descriptor that this function alone owns.
    let socket = unsafe { std::net::TcpStream::from_raw_fd(fd) };
    let peer = addr
        .as_socket()
        .ok_or_else(|| io::Error::other("accept4 gave no IP address"))?;
    Ok((socket, peer))
}

/// Accept loops running now. A graceful stop waits until they have ended before it counts
/// the connections still to serve: one accepted in the instant the stop began is counted
/// (`Fresh`) only once its loop has handed it over.
static ACCEPTING: AtomicUsize = AtomicUsize::new(0);

pub fn accept_loops_running() -> usize {
    ACCEPTING.load(Ordering::SeqCst)
}

/// Accepts on `listener` until a graceful stop begins, handing each connection to the worker
/// with the fewest.
async fn accept_loop(
    listener: Listener,
    serves: Serves,
    http: Arc<HttpEdge>,
    workers: Arc<Vec<Worker>>,
    mut shutdown: ShutdownWatch,
) {
    let _running = crate::sync::Counted::enter(&ACCEPTING);
    loop {
        if *shutdown.borrow_and_update() {
            return;
        }
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            changed = shutdown.changed() => {
                if changed.is_err() {
                    return;
                }
                continue;
            }
        };
        let conn = match accepted {
            Ok(conn) => conn,
            Err(e) => {
                tracing::error!("accept() failed ({e})");
                // EMFILE and ENFILE do not clear by themselves: give other connections time to
                // close, as nginx disables accepting for a while.
                if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) {
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                }
                continue;
            }
        };
        let (worker, on_worker) = least_busy(&workers);
        match &serves {
            Serves::Http(index) => {
                // Counted for the graceful stop from now on (see `edge::awaiting_first_byte`).
                let fresh = Fresh::arrived();
                let (edge, shutdown, index) = (http.clone(), shutdown.clone(), *index);
                worker.handle.spawn(async move {
                    edge.serve(conn, index, fresh, shutdown).await;
                    drop(on_worker);
                });
            }
            Serves::Stream(edge, index) => {
                let (edge, index) = (edge.clone(), *index);
                worker.handle.spawn(async move {
                    edge.serve(conn, index).await;
                    drop(on_worker);
                });
            }
            // A UDP socket has a receive loop, not this one.
            Serves::Datagrams(..) => {}
        }
    }
}

/// The worker with the fewest connections, which counts one more until the guard drops.
fn least_busy(workers: &[Worker]) -> (&Worker, OnWorker) {
    let worker = workers
        .iter()
        .min_by_key(|w| w.connections.load(Ordering::Relaxed))
        .expect("there is at least one worker");
    worker.connections.fetch_add(1, Ordering::Relaxed);
    (worker, OnWorker(worker.connections.clone()))
}

/// Datagrams waiting for their session at most: a client that sends faster than its session
/// passes them on loses the rest, as it would to a full socket buffer.
const SESSION_QUEUE: usize = 64;

/// Receives on a UDP listening socket until a graceful stop: each datagram goes to its client's
/// session (nginx keys UDP sessions by the client's address), and one from a client without a
/// session, or whose session takes no more, starts one on the worker with the fewest
/// connections. A session that stops taking datagrams hands back those still queued for it,
/// which start the next session: a client that answers an answer at once loses nothing.
async fn receive_loop(
    socket: tokio::net::UdpSocket,
    edge: Arc<StreamEdge>,
    index: usize,
    workers: Arc<Vec<Worker>>,
    mut shutdown: ShutdownWatch,
) {
    let _running = crate::sync::Counted::enter(&ACCEPTING);
    let socket = Arc::new(socket);
    let (hand_back, mut handed_back) = mpsc::unbounded_channel();
    let mut sessions: HashMap<std::net::SocketAddr, mpsc::Sender<Bytes>> = HashMap::new();
    // Sessions that have ended are dropped from the table when it has doubled since.
    let mut swept = 0;
    let mut buf = vec![0u8; 65_535];
    loop {
        if *shutdown.borrow_and_update() {
            return;
        }
        let (client, datagram) = tokio::select! {
            received = socket.recv_from(&mut buf) => match received {
                Ok((n, client)) => (client, Bytes::copy_from_slice(&buf[..n])),
                Err(e) => {
                    tracing::error!("recvmsg() failed ({e})");
                    continue;
                }
            },
            Some(returned) = handed_back.recv() => returned,
            changed = shutdown.changed() => {
                if changed.is_err() {
                    return;
                }
                continue;
            }
        };
        let datagram = match sessions.get(&client) {
            Some(session) => match session.try_send(datagram) {
                Ok(()) | Err(TrySendError::Full(_)) => continue,
                // That session takes no more: this datagram starts the next.
                Err(TrySendError::Closed(datagram)) => datagram,
            },
            None => datagram,
        };
        if sessions.len() >= 2 * swept.max(512) {
            sessions.retain(|_, s| !s.is_closed());
            swept = sessions.len();
        }
        let (sender, datagrams) = mpsc::channel(SESSION_QUEUE);
        // A new channel has room.
        let _ = sender.try_send(datagram);
        sessions.insert(client, sender);
        let from = FromClient {
            datagrams,
            socket: socket.clone(),
            addr: client,
            hand_back: hand_back.clone(),
        };
        let (worker, on_worker) = least_busy(&workers);
        let (edge, shutdown) = (edge.clone(), shutdown.clone());
        worker.handle.spawn(async move {
            edge.serve_datagrams(index, from, shutdown).await;
            drop(on_worker);
        });
    }
}

impl Workers {
    /// A graceful stop closes the listening sockets, as nginx's master and workers close
    /// theirs: a new client is refused at once instead of waiting in the backlog of a process
    /// that will never accept it. The accept loops have closed their duplicates; this closes
    /// the originals and takes them out of the fd table, so that a binary upgrade begun during
    /// the stop cannot hand over a descriptor number that now names something else. A
    /// successor that took the sockets over has descriptors of its own for them: they stay
    /// open there, with their backlogs.
    fn close_listening_sockets(&self, fds: &ListenFds) {
        let ours: HashSet<String> = self
            .binds
            .iter()
            .map(|(bind, serves)| key(bind, serves))
            .collect();
        let mut table = fds.lock();
        let (all, _) = table.serialize();
        let keep: HashSet<String> = all.into_iter().filter(|k| !ours.contains(k)).collect();
        let closed = table.close_unclaimed(&keep);
        tracing::info!("closed {} listening socket(s)", closed.len());
    }
}

#[async_trait]
impl ServiceWithDependents for Workers {
    async fn start_service(
        &mut self,
        fds: Option<ListenFds>,
        mut shutdown: ShutdownWatch,
        _listeners_per_fd: usize,
        ready: ServiceReadyNotifier,
    ) {
        let workers = match start_workers(self.workers, &self.placement) {
            Ok(workers) => Arc::new(workers),
            Err(e) => {
                tracing::error!("cannot start the worker threads: {e}");
                return;
            }
        };
        let table: Vec<Option<std::os::fd::RawFd>> = {
            let fds = fds.as_ref().map(|f| f.lock());
            self.binds
                .iter()
                .map(|(b, serves)| fds.as_ref()?.get(&key(b, serves)).copied())
                .collect()
        };
        // The accept loops run on the first worker, as nginx's accept on a worker: with one
        // worker, a connection never changes threads.
        let first = &workers[0].handle;
        for ((bind, serves), fd) in self.binds.iter().zip(table) {
            let Some(fd) = fd else {
                tracing::error!("the listening socket {} is not in the fd table", bind);
                continue;
            };
            let (http, workers, shutdown, bind, serves) = (
                self.http.clone(),
                workers.clone(),
                shutdown.clone(),
                bind.clone(),
                serves.clone(),
            );
            first.spawn(async move {
                match (Listener::of(&bind, &serves, fd), serves) {
                    (Ok(Listener::Udp(socket)), Serves::Datagrams(edge, index)) => {
                        receive_loop(socket, edge, index, workers, shutdown).await
                    }
                    (Ok(listener), serves) => {
                        accept_loop(listener, serves, http, workers, shutdown).await
                    }
                    (Err(e), _) => tracing::error!("cannot listen on {bind}: {e}"),
                }
            });
        }
        ready.notify_ready();
        while !*shutdown.borrow_and_update() {
            if shutdown.changed().await.is_err() {
                break;
            }
        }
        if let Some(fds) = &fds {
            self.close_listening_sockets(fds);
        }
        // As Pingora's services do once their accept loops end: HTTP/1 keep-alive waits in
        // Pingora's sessions end now.
        self.http.cleanup().await;
    }

    fn name(&self) -> &str {
        "listeners"
    }

    fn threads(&self) -> Option<usize> {
        // Only this function runs there; the connections run on the worker threads.
        Some(1)
    }

    fn listen_addresses(&self) -> Option<Vec<String>> {
        Some(
            self.binds
                .iter()
                .map(|(bind, serves)| key(bind, serves))
                .collect(),
        )
    }
}
