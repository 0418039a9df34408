//! Bytes both ways between a stream client and its backend, as nginx's stream proxy passes
//! them: each direction reads into its own buffer and writes it out before reading again,
//! both directions at once; the first side to close (or fail) ends the session, as in nginx
//! without `proxy_half_close`; so does `proxy_timeout` without a byte moving either way. With
//! `proxy_half_close on`, a side's close is passed on (the other side's write half is shut
//! down once what it sent is written) and the other direction carries on until its side
//! closes too.
//!
//! Why by hand rather than `tokio::io::copy_bidirectional`: that one always carries on after
//! the first close, and has no idle limit. And why one future polled by hand rather
//! than a `select!` of reads: a `select!` loop arms a fresh timer for every chunk passed, and
//! writes one direction while the other waits; here the idle timer is armed once and moved
//! only when it fires early (the last byte moved is noted, as nginx notes it).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::time::Instant;

/// nginx's `proxy_buffer_size` default for stream.
const BUFFER: usize = 16 * 1024;

/// What one direction of a session passed: for nginx's `$bytes_*` and `$upstream_bytes_*`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Passed {
    /// Bytes read from the side it reads.
    pub read: u64,
    /// Bytes written to the other side.
    pub written: u64,
    /// When the first read ended (with bytes, the end of the stream or an error), as nginx
    /// notes `$upstream_first_byte_time`.
    pub first_read: Option<std::time::Instant>,
}

/// Passes bytes both ways until a side closes (with `half_close`, both sides) or fails, or
/// nothing moves for `idle`; then shuts both down. Returns what passed from `a` to `b` and
/// from `b` to `a`.
pub async fn pump<A, B>(a: &mut A, b: &mut B, idle: Duration, half_close: bool) -> (Passed, Passed)
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let mut a_to_b = Direction::new();
    let mut b_to_a = Direction::new();
    let mut last_moved = Instant::now();
    let timer = tokio::time::sleep(idle);
    tokio::pin!(timer);
    std::future::poll_fn(|cx| {
        let mut moved = false;
        let over = match a_to_b.poll(
            cx,
            Pin::new(&mut *a),
            Pin::new(&mut *b),
            &mut moved,
            half_close,
        ) {
            Poll::Ready(End::Failed) => true,
            Poll::Ready(End::Closed) if !half_close => true,
            _ => match b_to_a.poll(
                cx,
                Pin::new(&mut *b),
                Pin::new(&mut *a),
                &mut moved,
                half_close,
            ) {
                Poll::Ready(End::Failed) => true,
                Poll::Ready(End::Closed) if !half_close => true,
                // With half-close, the session lasts until both sides have closed.
                _ => half_close && a_to_b.done && b_to_a.done,
            },
        };
        if over {
            return Poll::Ready(());
        }
        if moved {
            last_moved = Instant::now();
        }
        while timer.as_mut().poll(cx).is_ready() {
            let deadline = last_moved + idle;
            if deadline <= Instant::now() {
                return Poll::Ready(());
            }
            timer.as_mut().reset(deadline);
        }
        Poll::Pending
    })
    .await;
    let _ = tokio::time::timeout(idle, a.shutdown()).await;
    let _ = tokio::time::timeout(idle, b.shutdown()).await;
    (a_to_b.passed, b_to_a.passed)
}

/// How a direction ended.
enum End {
    /// Its reading side closed, and (with half-close) the close was passed on.
    Closed,
    /// Reading or writing failed.
    Failed,
}

/// One direction: what was read and is not written yet.
struct Direction {
    buf: Box<[u8]>,
    pos: usize,
    len: usize,
    unflushed: bool,
    /// The reading side has closed: what is left is written, then the other side's write
    /// half shut down (half-close).
    eof: bool,
    /// Ended with its side's close.
    done: bool,
    passed: Passed,
}

impl Direction {
    fn new() -> Direction {
        Direction {
            buf: vec![0; BUFFER].into_boxed_slice(),
            pos: 0,
            len: 0,
            unflushed: false,
            eof: false,
            done: false,
            passed: Passed::default(),
        }
    }

    /// Writes out what is buffered, then reads more, for as long as neither side makes it
    /// wait. `Ready` when the direction is over: its reading side closed (with `half_close`,
    /// and the other side's write half was shut down), or either side failed.
    fn poll<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        mut from: Pin<&mut R>,
        mut to: Pin<&mut W>,
        moved: &mut bool,
        half_close: bool,
    ) -> Poll<End>
    where
        R: AsyncRead + ?Sized,
        W: AsyncWrite + ?Sized,
    {
        if self.done {
            return Poll::Ready(End::Closed);
        }
        loop {
            while self.pos < self.len {
                match to.as_mut().poll_write(cx, &self.buf[self.pos..self.len]) {
                    Poll::Ready(Ok(n)) if n > 0 => {
                        self.pos += n;
                        self.passed.written += n as u64;
                        self.unflushed = true;
                        *moved = true;
                    }
                    Poll::Ready(_) => return Poll::Ready(End::Failed),
                    Poll::Pending => return Poll::Pending,
                }
            }
            if self.unflushed {
                match to.as_mut().poll_flush(cx) {
                    Poll::Ready(Ok(())) => self.unflushed = false,
                    Poll::Ready(Err(_)) => return Poll::Ready(End::Failed),
                    Poll::Pending => return Poll::Pending,
                }
            }
            if self.eof {
                return match to.as_mut().poll_shutdown(cx) {
                    Poll::Ready(Ok(())) => {
                        self.done = true;
                        Poll::Ready(End::Closed)
                    }
                    Poll::Ready(Err(_)) => Poll::Ready(End::Failed),
                    Poll::Pending => Poll::Pending,
                };
            }
            let mut read = ReadBuf::new(&mut self.buf);
            let result = from.as_mut().poll_read(cx, &mut read);
            if result.is_ready() && self.passed.first_read.is_none() {
                self.passed.first_read = Some(std::time::Instant::now());
            }
            match result {
                Poll::Ready(Ok(())) if !read.filled().is_empty() => {
                    self.len = read.filled().len();
                    self.pos = 0;
                    self.passed.read += self.len as u64;
                    *moved = true;
                }
                Poll::Ready(Ok(())) if half_close => {
                    self.eof = true;
                    *moved = true;
                }
                Poll::Ready(Ok(())) => {
                    self.done = true;
                    return Poll::Ready(End::Closed);
                }
                Poll::Ready(Err(_)) => return Poll::Ready(End::Failed),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn bytes_pass_both_ways_and_the_first_close_ends_it() {
        let (client, mut proxy_front) = tokio::io::duplex(64);
        let (mut proxy_back, server) = tokio::io::duplex(64);
        let pumping = tokio::spawn(async move {
            pump(
                &mut proxy_front,
                &mut proxy_back,
                Duration::from_secs(5),
                false,
            )
            .await
        });
        // More than either pipe holds, both ways at once: neither direction waits on the other.
        let big = vec![7u8; 100_000];
        let (mut client_read, mut client_write) = tokio::io::split(client);
        let (mut server_read, mut server_write) = tokio::io::split(server);
        let mut back = vec![0u8; big.len()];
        let mut got = vec![0u8; big.len()];
        let (sent_up, sent_down, read_back, read_got) = tokio::join!(
            client_write.write_all(&big),
            server_write.write_all(&big),
            client_read.read_exact(&mut back),
            server_read.read_exact(&mut got),
        );
        for result in [sent_up, sent_down] {
            result.unwrap();
        }
        for result in [read_back, read_got] {
            result.unwrap();
        }
        assert_eq!(back, big);
        assert_eq!(got, big);
        drop(client_read.unsplit(client_write));
        let (up, down) = pumping.await.unwrap();
        // Every byte read was written on: what nginx's $bytes_received and $bytes_sent (and
        // $upstream_bytes_sent and _received) report.
        for passed in [up, down] {
            assert_eq!((passed.read, passed.written), (100_000, 100_000));
            assert!(passed.first_read.is_some());
        }
        // The backend sees its side closed too.
        assert_eq!(server_read.read(&mut [0u8; 1]).await.unwrap(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn nothing_moving_for_the_idle_time_ends_it() {
        let (mut client, mut proxy_front) = tokio::io::duplex(64);
        let (mut proxy_back, _server) = tokio::io::duplex(64);
        let pumping = tokio::spawn(async move {
            pump(
                &mut proxy_front,
                &mut proxy_back,
                Duration::from_secs(10),
                false,
            )
            .await;
        });
        // Activity at 6 s moves the end to 16 s.
        tokio::time::sleep(Duration::from_secs(6)).await;
        client.write_all(b"x").await.unwrap();
        tokio::time::sleep(Duration::from_secs(8)).await;
        assert!(!pumping.is_finished());
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert!(pumping.is_finished());
    }

    #[tokio::test]
    async fn with_half_close_a_close_is_passed_on_and_the_answer_still_comes_back() {
        let (client, mut proxy_front) = tokio::io::duplex(64);
        let (mut proxy_back, mut server) = tokio::io::duplex(64);
        let pumping = tokio::spawn(async move {
            pump(
                &mut proxy_front,
                &mut proxy_back,
                Duration::from_secs(5),
                true,
            )
            .await
        });
        let (mut client_read, mut client_write) = tokio::io::split(client);
        client_write.write_all(b"ping").await.unwrap();
        client_write.shutdown().await.unwrap();
        // The backend sees the request, then the client's close, and answers after it.
        let mut request = Vec::new();
        server.read_to_end(&mut request).await.unwrap();
        assert_eq!(request, b"ping");
        server.write_all(b"pong").await.unwrap();
        drop(server);
        let mut answer = Vec::new();
        client_read.read_to_end(&mut answer).await.unwrap();
        assert_eq!(answer, b"pong");
        let (up, down) = pumping.await.unwrap();
        assert_eq!((up.read, down.written), (4, 4));
    }
}
