//! A cleartext TCP connection as the fast path serves it: the socket itself, and what Pingora's
//! stream would carry beside it (the socket's addresses, a PROXY header's, bytes read ahead).
//!
//! Why not Pingora's `l4::Stream`: its reads and writes go through a read buffer, a write
//! buffer and timing of every wait (two clock reads per request), a measurable share of a
//! request's CPU on the fast path. A connection handed to Pingora, or to TLS, becomes its
//! stream ([`PlainStream::into_l4`]).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::BytesMut;
use pingora::protocols::l4::stream::Stream as L4Stream;
use pingora::protocols::raw_connect::ProxyDigest;
use pingora::protocols::{GetProxyDigest, GetSocketDigest, SocketDigest, Ssl};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::connection_tag::{self, ConnectionTag, Tagged};
use super::proxy_protocol::ProxyInfo;

pub struct PlainStream {
    tcp: TcpStream,
    socket: Arc<SocketDigest>,
    /// Its connection number.
    number: u64,
    /// What its PROXY header said, if it had one.
    proxy: Option<ProxyInfo>,
    /// Read ahead of the socket and not consumed (what followed a PROXY header): read first.
    front: BytesMut,
}

impl PlainStream {
    /// An accepted connection, with the peer address `accept` gave and its number.
    pub fn new(tcp: TcpStream, peer: std::net::SocketAddr, number: u64) -> PlainStream {
        let digest = SocketDigest::from_raw_fd(std::os::fd::AsRawFd::as_raw_fd(&tcp));
        let _ = digest.peer_addr.set(Some(peer.into()));
        PlainStream {
            tcp,
            socket: Arc::new(digest),
            number,
            proxy: None,
            front: BytesMut::new(),
        }
    }

    pub fn tcp(&self) -> &TcpStream {
        &self.tcp
    }

    /// Puts `bytes` back in front of what is read next.
    pub fn rewind(&mut self, bytes: &[u8]) {
        let mut front = BytesMut::with_capacity(bytes.len() + self.front.len());
        front.extend_from_slice(bytes);
        front.extend_from_slice(&self.front);
        self.front = front;
    }

    /// Waits until the client has sent a byte (or closed); true when there is one to read.
    pub async fn has_data(&self) -> io::Result<bool> {
        if !self.front.is_empty() {
            return Ok(true);
        }
        let mut byte = [0u8; 1];
        Ok(self.tcp.peek(&mut byte).await? > 0)
    }

    /// Keeps what the connection's PROXY header said.
    pub fn set_proxy_info(&mut self, info: ProxyInfo) {
        self.proxy = Some(info);
    }

    /// The same connection as Pingora's stream, with its digests and unread bytes.
    pub fn into_l4(self) -> L4Stream {
        let mut l4 = L4Stream::from(self.tcp);
        let socket = Arc::try_unwrap(self.socket).unwrap_or_else(|shared| {
            // Still read elsewhere: a new one, with the peer address it had.
            let digest = SocketDigest::from_raw_fd(std::os::fd::AsRawFd::as_raw_fd(&l4));
            let _ = digest.peer_addr.set(shared.peer_addr().cloned());
            digest
        });
        l4.set_socket_digest(socket);
        connection_tag::attach(&mut l4, ConnectionTag::new(self.number, self.proxy, 0));
        l4.rewind(&self.front);
        l4
    }
}

impl AsyncRead for PlainStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if super::replay::read_front(&mut self.front, buf) {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for PlainStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }
}

impl GetSocketDigest for PlainStream {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        Some(self.socket.clone())
    }
}

impl GetProxyDigest for PlainStream {
    /// Made when asked: what [`connection_tag::of`] reads.
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        connection_tag::digest(ConnectionTag::new(self.number, self.proxy, 0)).map(Arc::new)
    }
}

/// Without making a digest: the fast path asks once per connection.
impl Tagged for PlainStream {
    fn number_and_proxy(&self) -> (u64, Option<ProxyInfo>) {
        (self.number, self.proxy)
    }
}

/// Cleartext: no TLS to tell of.
impl Ssl for PlainStream {}

impl crate::proxy::sendfile::SendFile for PlainStream {
    fn sendfile_socket(&self) -> Option<&TcpStream> {
        Some(&self.tcp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn pair() -> (PlainStream, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, peer) = listener.accept().await.unwrap();
        (PlainStream::new(server, peer, 7), client)
    }

    #[tokio::test]
    async fn bytes_put_back_come_first_and_go_with_the_stream_to_pingora() {
        let (mut plain, mut client) = pair().await;
        client.write_all(b"rest").await.unwrap();
        assert!(plain.has_data().await.unwrap());
        plain.rewind(b"later");
        plain.rewind(b"first ");
        let mut buf = [0u8; 6];
        plain.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"first ");
        plain.set_proxy_info(ProxyInfo {
            source: Some("1.2.3.4:5".parse().unwrap()),
            destination: None,
        });
        let peer = plain.get_socket_digest().unwrap().peer_addr().cloned();
        // Pingora's stream reads what was left in front, then the socket.
        let mut l4 = plain.into_l4();
        let mut all = vec![0u8; 9];
        l4.read_exact(&mut all).await.unwrap();
        assert_eq!(all, b"laterrest");
        assert_eq!(l4.get_socket_digest().unwrap().peer_addr().cloned(), peer);
        let digest = l4.get_proxy_digest();
        let tag = connection_tag::of(digest.as_ref()).unwrap();
        assert_eq!(tag.number, 7);
        assert_eq!(
            tag.proxy.and_then(|p| p.source),
            Some("1.2.3.4:5".parse().unwrap())
        );
    }
}
