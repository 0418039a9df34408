//! What happens to an HTTP connection before HTTP: which listening socket it arrived on, its
//! PROXY header (`listen ... proxy_protocol`), its TLS handshake (`listen ... ssl`, certificate
//! by SNI), then HTTP/1.x or HTTP/2 (ALPN `h2` on TLS, the client preface on a cleartext
//! `http2` listener), all served by the one Pingora HTTP proxy and its upstream connection pool.
//!
//! Pingora's listeners are plain sockets here; the handshake is done per connection, because
//! the certificate and the PROXY header depend on the socket and the local address, which a
//! Pingora TLS listener does not tell its callbacks.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use pingora::apps::{HttpServerApp, ServerApp};
use pingora::protocols::http::ServerSession;
use pingora::protocols::l4::socket::SocketAddr as PingoraAddr;
use pingora::protocols::l4::stream::Stream as L4Stream;
use pingora::protocols::raw_connect::ProxyDigest;
use pingora::protocols::tls::SslStream;
use pingora::protocols::{GetProxyDigest, GetSocketDigest, Peek, Ssl, Stream, ALPN};
use pingora::server::ShutdownWatch;
use pingora::tls::ssl::SslAcceptor;

use super::connection_tag::{self, ConnectionTag, Tagged};
use super::error_context::InSession;
use super::http::{self, HttpProxy, Served};
use super::plain::PlainStream;
use super::proxy_protocol;
use super::replay::Replay;
use super::runtime::Runtime;
use super::sendfile::SendFile;
use super::tls::{self, PickKeys};
use crate::compile::diag::Diagnostic;
use crate::config::{ListenAddress, LogLevel};

/// How long a front balancer may take to send its PROXY header (nginx reads it within
/// `client_header_timeout`, 60s by default).
const PROXY_HEADER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// How long a connection may take to send its first byte (nginx's `client_header_timeout`).
const FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a connection accepted before a graceful stop still has to send its first byte:
/// nginx serves such a connection; so does this, within that bound.
const FIRST_BYTE_AFTER_STOP: Duration = Duration::from_secs(2);

/// Connections accepted whose first request has not started: a graceful stop waits for them
/// as for requests in flight (Pingora would drop them as idle).
static AWAITING_FIRST_BYTE: AtomicUsize = AtomicUsize::new(0);

/// How many accepted connections have not sent their first byte (or finished their handshake).
pub fn awaiting_first_byte() -> usize {
    AWAITING_FIRST_BYTE.load(Ordering::SeqCst)
}

/// Counts a connection in [`awaiting_first_byte`] while it lives (until dropped).
pub struct Fresh {
    _counted: crate::sync::Counted,
}

impl Fresh {
    /// A connection just accepted.
    pub fn arrived() -> Fresh {
        Fresh {
            _counted: crate::sync::Counted::enter(&AWAITING_FIRST_BYTE),
        }
    }
}

/// Waits until the client has sent its first byte (`peek`, which leaves it in the stream),
/// the timeout passes, or a stop began and the short grace after it passed. False when no byte
/// came.
async fn first_byte(
    peek: impl std::future::Future<Output = std::io::Result<bool>>,
    shutdown: &ShutdownWatch,
) -> bool {
    let mut shutdown = shutdown.clone();
    let stopping = async {
        if !*shutdown.borrow() {
            let _ = shutdown.changed().await;
        }
        tokio::time::sleep(FIRST_BYTE_AFTER_STOP).await;
    };
    tokio::select! {
        peeked = tokio::time::timeout(FIRST_BYTE_TIMEOUT, peek) => {
            matches!(peeked, Ok(Ok(true)))
        }
        _ = stopping => false,
    }
}

/// The Pingora application of every HTTP listener.
pub struct HttpEdge {
    runtime: Arc<ArcSwap<Runtime>>,
    proxy: Arc<pingora::proxy::HttpProxy<HttpProxy>>,
    /// The same data plane, for the requests the fast path takes ([`http::serve_fast`]).
    fast: HttpProxy,
    sockets: Vec<SocketEdge>,
}

/// One listening socket's connection setup, fixed when the server starts (a reload keeps the
/// sockets; certificates are read from the current runtime at each handshake).
struct SocketEdge {
    /// The address it listens on, as error lines name it (`server: 0.0.0.0:443`).
    bind: ListenAddress,
    acceptor: Option<SslAcceptor>,
    http2: bool,
    proxy_protocol: bool,
}

impl HttpEdge {
    /// `proxy` must have h2c enabled in its server options when any cleartext socket has
    /// `http2` (see [`wants_h2c`](Self::wants_h2c)).
    pub fn new(
        runtime: Arc<ArcSwap<Runtime>>,
        proxy: pingora::proxy::HttpProxy<HttpProxy>,
    ) -> Result<HttpEdge, Diagnostic> {
        let current = runtime.load();
        let mut sockets = Vec::new();
        for (index, socket) in current.sockets.iter().enumerate() {
            let acceptor = if socket.ssl {
                // The protocols and ciphers of a socket are those of the default server of its
                // wildcard (or only) address, as in nginx.
                let addr = current
                    .addr_conf(index, None)
                    .or_else(|| socket.addrs.first());
                let Some(addr) = addr else {
                    return Err(Diagnostic::error(format!(
                        "listen {}: no server on this address",
                        socket.bind
                    )));
                };
                for a in socket.addrs.iter().filter(|a| a.ssl) {
                    let default = &a.servers[a.names.default_server()];
                    if default.tls_keys.is_none() {
                        return Err(Diagnostic::error(format!(
                            "no \"ssl_certificate\" is defined for the \"listen ... ssl\" \
                             directive ({}) of the default server",
                            a.addr
                        ))
                        .at_opt(default.origin.as_ref()));
                    }
                }
                let default = &addr.servers[addr.names.default_server()];
                Some(tls::acceptor(
                    &default.tls,
                    Some(socket.http2),
                    default.origin.as_ref(),
                )?)
            } else {
                None
            };
            sockets.push(SocketEdge {
                bind: socket.bind.clone(),
                acceptor,
                http2: socket.http2,
                proxy_protocol: socket.proxy_protocol,
            });
        }
        drop(current);
        Ok(HttpEdge {
            fast: HttpProxy::new(runtime.clone()),
            runtime,
            proxy: Arc::new(proxy),
            sockets,
        })
    }

    /// Whether a cleartext socket speaks HTTP/2 (h2c, by the client's preface).
    pub fn wants_h2c(runtime: &Runtime) -> bool {
        runtime.sockets.iter().any(|s| s.http2 && !s.ssl)
    }

    /// Serves HTTP/1.x on a cleartext connection: the fast path while its requests suit it,
    /// then Pingora from the first one that does not, for the rest of the connection. Pingora
    /// may read past that request (a pipelined next one) and keeps what it read to itself, so
    /// the connection cannot come back.
    /// `fresh` counts the connection as awaited by a graceful stop until its first request is
    /// counted in flight.
    async fn serve_http1<S: IntoL4>(&self, stream: S, fresh: Fresh, shutdown: &ShutdownWatch) {
        if let Served::ToPingora(stream, read, requests) =
            http::serve_fast(&self.fast, stream, fresh, shutdown).await
        {
            let l4 = stream.into_l4();
            let tagged = served_before(&l4, requests);
            // In front of what the stream kept itself (read after that), with writes gathered.
            let stream = Replay::new(l4, read, tagged);
            self.serve_http1_pingora(Box::new(stream), shutdown).await;
        }
    }

    /// The same for a TLS connection that did not choose HTTP/2: what the fast path read is
    /// put back in front of the stream for Pingora ([`Replay`]).
    async fn serve_https1(
        &self,
        stream: SslStream<L4Stream>,
        fresh: Fresh,
        shutdown: &ShutdownWatch,
    ) {
        if let Served::ToPingora(stream, read, requests) =
            http::serve_fast(&self.fast, stream, fresh, shutdown).await
        {
            let tagged = served_before(&stream, requests);
            let stream = Replay::new(stream, read, tagged);
            self.serve_http1_pingora(Box::new(stream), shutdown).await;
        }
    }

    /// Serves HTTP/1.x through Pingora's session, as Pingora's own loop does (without looking
    /// for an HTTP/2 preface), pipelined requests included: the connections the fast path
    /// handed over.
    async fn serve_http1_pingora(&self, stream: Stream, shutdown: &ShutdownWatch) {
        let mut session = ServerSession::new_http1(stream);
        session.set_keepalive(if *shutdown.borrow() { None } else { Some(60) });
        session.set_pipelining_enabled(true);
        let mut result = self.proxy.process_new_http(session, shutdown).await;
        while let Some((stream, persistent)) = result.map(|r| r.consume()) {
            let mut session = ServerSession::new_http1(stream);
            if let Some(persistent) = persistent {
                persistent.apply_to_session(&mut session);
            }
            result = self.proxy.process_new_http(session, shutdown).await;
        }
    }
}

/// A connection as its error lines before a request name it: its number and client.
struct Who {
    number: u64,
    client: Option<std::net::IpAddr>,
}

impl Who {
    fn of(stream: &(impl Tagged + GetSocketDigest)) -> Who {
        let digest = stream.get_socket_digest();
        let peer = digest.as_ref().and_then(|d| d.peer_addr());
        Who {
            number: stream.number_and_proxy().0,
            client: peer.and_then(PingoraAddr::as_inet).map(|a| a.ip()),
        }
    }

    /// Logs an error as nginx does before a request: the number, then `, client: 10.0.0.9,
    /// server: 0.0.0.0:443` (see [`error_context`](super::error_context)).
    fn log(&self, bind: &ListenAddress, level: LogLevel, message: std::fmt::Arguments<'_>) {
        let at = InSession {
            number: self.number,
            udp: false,
            client: self.client,
            server: bind,
            proxied: None,
        };
        at.log(level, message);
    }
}

/// Tells the connection's tag how many requests the fast path served before handing it over;
/// returns where the tag is, for [`Replay`] to count the bytes written in it.
fn served_before(stream: &impl GetProxyDigest, requests: u64) -> Option<Arc<ProxyDigest>> {
    let digest = stream.get_proxy_digest();
    if let Some(tag) = connection_tag::of(digest.as_ref()) {
        tag.served_before(requests);
    }
    digest
}

/// A connection as an accept loop hands it over: not yet registered with any event loop.
pub enum Accepted {
    Tcp(std::net::TcpStream, std::net::SocketAddr),
    Unix(std::os::unix::net::UnixStream),
}

/// A cleartext connection the fast path serves, and what it becomes when Pingora takes it over.
trait IntoL4:
    tokio::io::AsyncRead
    + tokio::io::AsyncWrite
    + GetSocketDigest
    + GetProxyDigest
    + Tagged
    + Ssl
    + SendFile
    + Unpin
    + Send
    + Sized
{
    fn into_l4(self) -> L4Stream;
    /// Puts bytes read ahead back in front of the stream.
    fn put_back(&mut self, bytes: &[u8]);
    /// Keeps what the connection's PROXY header said.
    fn keep_proxy_info(&mut self, info: proxy_protocol::ProxyInfo);
}

impl IntoL4 for PlainStream {
    fn into_l4(self) -> L4Stream {
        PlainStream::into_l4(self)
    }

    fn put_back(&mut self, bytes: &[u8]) {
        self.rewind(bytes);
    }

    fn keep_proxy_info(&mut self, info: proxy_protocol::ProxyInfo) {
        self.set_proxy_info(info);
    }
}

// Pingora's stream buffers and wraps the socket: what is written goes through it (a Unix socket's
// connections, where nginx's sendfile would work, are rare enough to keep the copy).
impl SendFile for L4Stream {}

/// Without kernel TLS, what is written must be encrypted first.
impl SendFile for SslStream<L4Stream> {}

impl IntoL4 for L4Stream {
    fn into_l4(self) -> L4Stream {
        self
    }

    fn put_back(&mut self, bytes: &[u8]) {
        self.rewind(bytes);
    }

    fn keep_proxy_info(&mut self, info: proxy_protocol::ProxyInfo) {
        let digest = self.get_proxy_digest();
        let number = connection_tag::of(digest.as_ref()).map_or(0, |t| t.number);
        connection_tag::attach(self, ConnectionTag::new(number, Some(info), 0));
    }
}

impl HttpEdge {
    /// Serves a connection accepted on listening socket `index`, on the calling thread's event
    /// loop: its first byte, its PROXY header (`listen ... proxy_protocol`), then HTTP/1.x
    /// (the fast path, then Pingora), TLS or HTTP/2.
    pub async fn serve(
        self: Arc<Self>,
        conn: Accepted,
        index: usize,
        fresh: Fresh,
        shutdown: ShutdownWatch,
    ) {
        if index >= self.sockets.len() {
            return;
        }
        let number = connection_tag::next_number();
        match conn {
            Accepted::Tcp(tcp, peer) => {
                let tcp = match tokio::net::TcpStream::from_std(tcp) {
                    Ok(tcp) => tcp,
                    Err(e) => {
                        tracing::error!("{e} while registering an accepted connection");
                        return;
                    }
                };
                let plain = PlainStream::new(tcp, peer, number);
                if !first_byte(plain.has_data(), &shutdown).await {
                    return;
                }
                self.serve_stream(plain, index, fresh, &shutdown).await;
            }
            Accepted::Unix(unix) => {
                let unix = match tokio::net::UnixStream::from_std(unix) {
                    Ok(unix) => unix,
                    Err(e) => {
                        tracing::error!("{e} while registering an accepted connection");
                        return;
                    }
                };
                let mut l4 = L4Stream::from(unix);
                let fd = std::os::fd::AsRawFd::as_raw_fd(&l4);
                l4.set_socket_digest(pingora::protocols::SocketDigest::from_raw_fd(fd));
                connection_tag::attach(&mut l4, ConnectionTag::new(number, None, 0));
                let mut byte = [0u8; 1];
                if !first_byte(l4.try_peek(&mut byte), &shutdown).await {
                    return;
                }
                self.serve_stream(l4, index, fresh, &shutdown).await;
            }
        }
    }

    /// A connection whose first byte has come: its PROXY header, then HTTP/1.x, TLS or h2c.
    async fn serve_stream<S: IntoL4>(
        &self,
        mut stream: S,
        index: usize,
        fresh: Fresh,
        shutdown: &ShutdownWatch,
    ) {
        let socket = &self.sockets[index];
        if socket.proxy_protocol {
            match proxy_protocol::read_header_from(&mut stream, PROXY_HEADER_TIMEOUT).await {
                Ok((info, rest)) => {
                    stream.put_back(&rest);
                    stream.keep_proxy_info(info);
                }
                Err(e) => {
                    let message = format_args!("{e} while reading PROXY protocol header");
                    Who::of(&stream).log(&socket.bind, LogLevel::Error, message);
                    return;
                }
            }
        }
        if socket.acceptor.is_none() && !socket.http2 {
            self.serve_http1(stream, fresh, shutdown).await;
        } else {
            self.serve_tls_or_h2c(stream.into_l4(), index, fresh, shutdown)
                .await;
        }
    }

    /// A connection of a `listen ... ssl` or `listen ... http2` socket: TLS, then HTTP/2 or
    /// HTTP/1.x as ALPN says; cleartext HTTP/2 (h2c) by the client's preface.
    async fn serve_tls_or_h2c(
        &self,
        l4: L4Stream,
        index: usize,
        fresh: Fresh,
        shutdown: &ShutdownWatch,
    ) {
        let socket = &self.sockets[index];
        let Some(acceptor) = &socket.acceptor else {
            // The request's first bytes are in the stream: Pingora reads them before it looks
            // at a stop, so the connection is served.
            drop(fresh);
            self.serve_pingora(Box::new(l4), shutdown).await;
            return;
        };
        // ngx_http_ssl_handshake: a first byte that starts no TLS record (nor an SSLv2 hello)
        // is plain HTTP sent to an HTTPS port. It is read as HTTP, and its request refused
        // with nginx's 400 page (497).
        let mut l4 = l4;
        let mut first = [0u8; 1];
        match tokio::time::timeout(tls::HANDSHAKE_TIMEOUT, l4.try_peek(&mut first)).await {
            Ok(Ok(_)) if first[0] != 0x16 && first[0] & 0x80 == 0 => {
                self.serve_http1(l4, fresh, shutdown).await;
                return;
            }
            Ok(Ok(_)) => {}
            _ => return,
        }
        let local = l4.get_socket_digest().and_then(|d| d.local_addr().cloned());
        let runtime = self.runtime.load_full();
        let inet = local.as_ref().and_then(PingoraAddr::as_inet).copied();
        let pick: PickKeys = Box::new(move |name| {
            let addr = runtime.addr_conf(index, inet)?;
            let default = addr.names.default_server();
            let server = name.map_or(default, |n| addr.names.find(Some(n)));
            addr.servers
                .get(server)
                .and_then(|s| s.tls_keys.clone())
                .or_else(|| addr.servers.get(default)?.tls_keys.clone())
        });
        let who = Who::of(&l4);
        match tls::accept(acceptor, l4, pick).await {
            Ok(tls_stream) if tls_stream.selected_alpn_proto() == Some(ALPN::H2) => {
                drop(fresh);
                self.serve_pingora(Box::new(tls_stream), shutdown).await;
            }
            Ok(tls_stream) => self.serve_https1(tls_stream, fresh, shutdown).await,
            Err(e) => {
                let message = format_args!("{e} while SSL handshaking");
                who.log(&socket.bind, LogLevel::Info, message);
            }
        }
    }

    /// Hands a connection to Pingora's own HTTP service (HTTP/2, h2c), again while it gives
    /// the connection back for reuse, as Pingora's listening service does.
    async fn serve_pingora(&self, stream: Stream, shutdown: &ShutdownWatch) {
        let mut next = self.proxy.process_new(stream, shutdown).await;
        while let Some(stream) = next {
            next = self.proxy.process_new(stream, shutdown).await;
        }
    }

    /// Ends the keep-alive waits of Pingora's sessions: a graceful stop began.
    pub async fn cleanup(&self) {
        self.proxy.http_cleanup().await;
    }
}
