//! Moves an accepted connection to the event loop of the worker thread that serves it.
//!
//! With one single-threaded runtime per worker (see `build_server`), Pingora accepts on one
//! runtime and hands each connection to a worker chosen at random, but the socket stays
//! registered with the accepting runtime's epoll: every readiness event of that connection
//! would then be seen by the accepting thread and passed over through an eventfd: a system
//! call and a wake-up of the other thread per event, several per request. Registering the
//! socket again here, on the serving thread, gives each worker its own connections, as each
//! nginx worker process has. It costs four system calls per connection (dup, two epoll_ctl,
//! close), also for the half that Pingora happened to give to the accepting thread: nothing
//! tells which runtime a tokio socket is registered with.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

use pingora::protocols::l4::socket::SocketAddr as PingoraAddr;
use pingora::protocols::l4::stream::Stream as L4Stream;
use pingora::protocols::GetSocketDigest;
use pingora::protocols::SocketDigest;

/// `stream`, accepted on `local`, registered with the calling thread's runtime when there is
/// more than one worker thread (with one, it is there already). A TCP connection only; `None`
/// when that fails, which is logged.
pub fn for_worker(
    stream: L4Stream,
    local: Option<&PingoraAddr>,
    workers: usize,
) -> Option<L4Stream> {
    if workers < 2 || local.and_then(PingoraAddr::as_inet).is_none() {
        return Some(stream);
    }
    match to_this_thread(stream) {
        Ok(moved) => Some(moved),
        Err(e) => {
            tracing::error!("{e} while moving an accepted connection to its worker thread");
            None
        }
    }
}

/// The same connection, registered with the calling thread's runtime. Must be called before
/// anything is read from `stream` or attached to it (what Pingora's stream buffers or carries
/// besides the socket is not moved; its socket digest is made again).
fn to_this_thread(stream: L4Stream) -> io::Result<L4Stream> {
    // SAFETY: the descriptor belongs to `stream`, which is alive for the whole borrow; the
    // borrow only serves to duplicate it.
    let duplicate = unsafe { BorrowedFd::borrow_raw(stream.as_raw_fd()) }.try_clone_to_owned()?;
    // Dropping the original deregisters it from the accepting runtime's epoll and closes its
    // descriptor; the socket lives on in the duplicate, already non-blocking.
    drop(stream);
    let socket = tokio::net::TcpStream::from_std(std::net::TcpStream::from(duplicate))?;
    let mut moved = L4Stream::from(socket);
    let fd = moved.as_raw_fd();
    moved.set_socket_digest(SocketDigest::from_raw_fd(fd));
    Ok(moved)
}
