//! sendfile(2) for files on the fast path's cleartext connections, as nginx's `sendfile on`
//! sends them: the file's bytes go from the page cache to the socket without being copied
//! through the process.
//!
//! Why: a file read into a buffer and written out is copied twice more than it needs to be;
//! for large files that copying is most of the CPU a file server spends (docs/BENCHMARKS.md,
//! "sendfile"). TLS connections have no socket to hand the file to (without kernel TLS, which
//! nginx 1.22 does not use either), so they keep reading into a buffer, as nginx's do.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

use tokio::io::Interest;
use tokio::net::TcpStream;

/// A client stream that may have a socket sendfile(2) can write to directly.
pub trait SendFile {
    /// The socket, when what is written to the stream goes to it unchanged.
    fn sendfile_socket(&self) -> Option<&TcpStream> {
        None
    }
}

/// Sends `head` and keeps its last segment open for the file's first bytes (`MSG_MORE`), so
/// that a small response still leaves in one segment, as one write of both would.
pub async fn send_head(tcp: &TcpStream, mut head: &[u8]) -> io::Result<()> {
    let socket = socket2::SockRef::from(tcp);
    while !head.is_empty() {
        let n = tcp
            .async_io(Interest::WRITABLE, || {
                socket.send_with_flags(head, libc::MSG_MORE | libc::MSG_NOSIGNAL)
            })
            .await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        head = &head[n..];
    }
    Ok(())
}

/// One sendfile(2) call's worth of `file` from `offset`, at most `len` bytes, when the socket
/// can take some: how many it took. Zero means the file ended before `offset + len` (it was
/// truncated while being sent).
pub async fn send_some(tcp: &TcpStream, file: &File, offset: u64, len: u64) -> io::Result<u64> {
    let count = usize::try_from(len).unwrap_or(usize::MAX);
    let mut off = libc::off_t::try_from(offset).map_err(|_| io::ErrorKind::InvalidInput)?;
    tcp.async_io(Interest::WRITABLE, || {
        // SAFETY: both descriptors are open for the call (borrowed), and `off` outlives it.
        let n = unsafe { libc::sendfile(tcp.as_raw_fd(), file.as_raw_fd(), &mut off, count) };
        match n {
            -1 => Err(io::Error::last_os_error()),
            n => Ok(n as u64),
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    /// A connected pair of loopback sockets.
    async fn pair() -> (TcpStream, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap());
        let (client, accepted) = tokio::join!(client, listener.accept());
        (accepted.unwrap().0, client.unwrap())
    }

    fn file_of(bytes: &[u8]) -> File {
        let path = std::env::temp_dir().join(format!("sendfile-test-{}", std::process::id()));
        std::fs::write(&path, bytes).unwrap();
        let file = File::open(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        file
    }

    #[tokio::test]
    async fn head_then_a_part_of_the_file() {
        let (server, mut client) = pair().await;
        let file = file_of(b"0123456789");
        send_head(&server, b"HEAD\r\n").await.unwrap();
        assert_eq!(send_some(&server, &file, 3, 4).await.unwrap(), 4);
        // Past the file's end: what there is, then nothing (a file that shrank).
        assert_eq!(send_some(&server, &file, 8, 5).await.unwrap(), 2);
        assert_eq!(send_some(&server, &file, 10, 5).await.unwrap(), 0);
        drop(server);
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"HEAD\r\n345689");
    }

    #[tokio::test]
    async fn a_closed_peer_is_an_error_not_a_signal() {
        let (server, client) = pair().await;
        drop(client);
        let file = file_of(&vec![b'x'; 1 << 20]);
        let mut failed = false;
        // The first write may still be taken (the reset comes back after it).
        for _ in 0..3 {
            if send_some(&server, &file, 0, 1 << 20).await.is_err() {
                failed = true;
                break;
            }
        }
        assert!(failed);
    }
}
