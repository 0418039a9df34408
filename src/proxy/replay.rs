//! A stream with bytes put back in front of it: what the fast path read of a TLS connection's
//! request, handed over to Pingora (which takes any [`IO`](pingora::protocols::IO)) as if
//! never read. Plain TCP streams have Pingora's own `rewind`; a TLS stream has no such thing,
//! since the bytes read are already decrypted.
//!
//! Everything but reading is the inner stream's: its TLS, socket and timing digests, its id.

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use async_trait::async_trait;
use bytes::{Buf, BytesMut};
use pingora::protocols::raw_connect::ProxyDigest;
use pingora::protocols::tls::{SslDigest, TlsRef};
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl,
    TimingDigest, UniqueID, UniqueIDType, ALPN,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

pub struct Replay<S> {
    front: BytesMut,
    inner: S,
}

impl<S> Replay<S> {
    /// `inner`, read from after `front`.
    pub fn new(inner: S, front: BytesMut) -> Replay<S> {
        Replay { front, inner }
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
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[async_trait]
impl<S: Shutdown + Send> Shutdown for Replay<S> {
    async fn shutdown(&mut self) {
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
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn the_bytes_put_back_come_first() {
        let inner: &[u8] = b" world";
        let mut replay = Replay::new(inner, BytesMut::from(&b"hello"[..]));
        let mut all = String::new();
        replay.read_to_string(&mut all).await.unwrap();
        assert_eq!(all, "hello world");
    }
}
