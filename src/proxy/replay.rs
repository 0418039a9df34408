//! The stream Pingora gets (it takes any [`IO`](pingora::protocols::IO)) when the fast path
//! hands a connection over: what the fast path read of the request put back in front of it,
//! as if never read, and writes gathered up to one segment.
//!
//! Why gather writes: Pingora's own listeners give each connection a 1460-byte write buffer,
//! so that a response's head and a short body leave in one segment; the appliance accepts its
//! connections itself, and without the buffer every head and every body was a `sendto` of its
//! own (strace of a file served: two per request, where nginx makes one). Pingora flushes as
//! its buffered streams need: after a head with no body, and at the end of a body.
//!
//! Everything but reading and writing is the inner stream's: its TLS, socket and timing
//! digests, its id.

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use async_trait::async_trait;
use bytes::{Buf, BytesMut};
use pingora::protocols::raw_connect::ProxyDigest;
use pingora::protocols::tls::{SslDigest, TlsRef};
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl,
    TimingDigest, UniqueID, UniqueIDType, ALPN,
};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};

use super::connection_tag;

/// Pingora's DEFAULT_L4_WRITE_BUFFER_SIZE: one Ethernet segment's payload.
const WRITE_BUFFER: usize = 1460;

pub struct Replay<S> {
    front: BytesMut,
    inner: S,
    /// Written, not yet passed to `inner`.
    pending: Vec<u8>,
    /// Where the connection's tag is, to count the bytes written in it: Pingora counts a
    /// body's bytes without a chunked body's framing, which nginx's `$body_bytes_sent` counts.
    tagged: Option<Arc<ProxyDigest>>,
}

impl<S> Replay<S> {
    /// `inner`, read from after `front`; bytes written are counted in the connection tag that
    /// `tagged` holds, if any.
    pub fn new(inner: S, front: BytesMut, tagged: Option<Arc<ProxyDigest>>) -> Replay<S> {
        Replay {
            front,
            inner,
            pending: Vec::new(),
            tagged,
        }
    }

    fn count_written(&self, n: usize) {
        if let Some(tag) = connection_tag::of(self.tagged.as_ref()) {
            tag.count_written(n);
        }
    }
}

impl<S: AsyncWrite + Unpin> Replay<S> {
    /// Passes what is pending to the inner stream.
    fn poll_write_pending(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        while !self.pending.is_empty() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.pending))?;
            if n == 0 {
                return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
            }
            self.pending.drain(..n);
        }
        Poll::Ready(Ok(()))
    }
}

/// Moves what it can of `front` (bytes put back) into `buf`; false when `front` is empty, and
/// the stream itself is to be read.
pub(super) fn read_front(front: &mut BytesMut, buf: &mut ReadBuf<'_>) -> bool {
    if front.is_empty() {
        return false;
    }
    let n = front.len().min(buf.remaining());
    buf.put_slice(&front[..n]);
    front.advance(n);
    true
}

impl<S> fmt::Debug for Replay<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Replay")
            .field("front", &self.front.len())
            .finish_non_exhaustive()
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Replay<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if read_front(&mut self.front, buf) {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Replay<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if self.pending.len() + buf.len() > WRITE_BUFFER {
            ready!(self.poll_write_pending(cx))?;
        }
        if buf.len() >= WRITE_BUFFER {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, buf))?;
            self.count_written(n);
            return Poll::Ready(Ok(n));
        }
        self.pending.extend_from_slice(buf);
        self.count_written(buf.len());
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        ready!(self.poll_write_pending(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        ready!(self.poll_write_pending(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[async_trait]
impl<S: Shutdown + AsyncWrite + Unpin + Send> Shutdown for Replay<S> {
    async fn shutdown(&mut self) {
        // What is still gathered goes out before the connection ends.
        let _ = self.flush().await;
        self.inner.shutdown().await
    }
}

impl<S: UniqueID> UniqueID for Replay<S> {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl<S: Ssl> Ssl for Replay<S> {
    fn get_ssl(&self) -> Option<&TlsRef> {
        self.inner.get_ssl()
    }

    fn get_ssl_digest(&self) -> Option<Arc<SslDigest>> {
        self.inner.get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl<S: GetTimingDigest> GetTimingDigest for Replay<S> {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }
}

impl<S: GetProxyDigest> GetProxyDigest for Replay<S> {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.get_proxy_digest()
    }
}

impl<S: GetSocketDigest> GetSocketDigest for Replay<S> {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }
}

/// Peeking is for protocol detection before any byte is read; nothing peeks here.
#[async_trait]
impl<S: Send> Peek for Replay<S> {}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn writes_are_gathered_until_flushed_or_full() {
        let (client, mut server) = tokio::io::duplex(64 * 1024);
        let mut replay = Replay::new(client, BytesMut::new(), None);
        replay.write_all(b"head\r\n\r\n").await.unwrap();
        replay.write_all(b"body").await.unwrap();
        let mut got = [0u8; 64];
        let nothing =
            tokio::time::timeout(std::time::Duration::from_millis(20), server.read(&mut got)).await;
        assert!(nothing.is_err(), "nothing leaves before a flush");
        replay.flush().await.unwrap();
        let n = server.read(&mut got).await.unwrap();
        assert_eq!(&got[..n], b"head\r\n\r\nbody", "one write");
        // A write that would not fit sends what is gathered, then itself.
        let big = vec![b'x'; 4000];
        replay.write_all(b"small").await.unwrap();
        replay.write_all(&big).await.unwrap();
        replay.flush().await.unwrap();
        let mut all = vec![0u8; 4005];
        server.read_exact(&mut all).await.unwrap();
        assert_eq!(&all[..5], b"small");
        assert!(all[5..].iter().all(|&b| b == b'x'));
    }

    #[tokio::test]
    async fn the_bytes_put_back_come_first() {
        let inner: &[u8] = b" world";
        let mut replay = Replay::new(inner, BytesMut::from(&b"hello"[..]), None);
        let mut all = String::new();
        replay.read_to_string(&mut all).await.unwrap();
        assert_eq!(all, "hello world");
    }
}
