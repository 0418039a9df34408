//! TCP load balancing: nginx's `stream {}` proxy and ELB's TCP and SSL listeners.
//!
//! A connection is matched to its stream server by the listening socket; a PROXY header is read
//! if the listen says `proxy_protocol`; TLS is terminated if it says `ssl` (otherwise TLS passes
//! through untouched: bytes are bytes). A server is then chosen by the pool's balancer, as nginx's
//! stream upstreams do, and tried again elsewhere while connecting fails (`proxy_next_upstream`,
//! `_tries`, `_timeout`, each connect bounded by `proxy_connect_timeout`). The backend may get a
//! PROXY header (`proxy_protocol on`, ELB's ProxyProtocolPolicyType) and TLS (`proxy_ssl on`).
//! Bytes then flow both ways until either side closes or nothing moves for `proxy_timeout`;
//! like nginx 1.22 without `proxy_half_close`, the first close ends the session.

use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::protocols::l4::socket::SocketAddr as PingoraAddr;
use pingora::protocols::l4::stream::Stream as L4Stream;
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;
use pingora::tls::ssl::{SslAcceptor, SslConnector, SslMethod, SslVerifyMode};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::access::AccessRules;
use super::balance::{Outcome, PeerAddr, SelectKey};
use super::limits::{Held, Limits, Zones};
use super::placement::Placement;
use super::runtime::{self, Runtime, UpstreamPool};
use super::tls::{self, PickKeys, ServerKeys};
use super::{listen_match, proxy_protocol};
use crate::compile::diag::Diagnostic;
use crate::config::template::{Segment, Template, Variable};
use crate::config::{self, Listen, ListenAddress, ProxyProtocol, StreamServer};

/// nginx's `proxy_protocol_timeout` default.
const PROXY_HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// nginx's `proxy_buffer_size` default for stream.
const BUFFER: usize = 16 * 1024;

/// A stream server as the data plane uses it.
pub struct StreamConf {
    pub origin: Option<config::Origin>,
    pub listen: Vec<Listen>,
    pub tls: config::Tls,
    pub tls_keys: Option<Arc<ServerKeys>>,
    pub pool: Arc<UpstreamPool>,
    pub connect_timeout: Duration,
    pub timeout: Duration,
    pub next_upstream: bool,
    pub next_upstream_tries: u32,
    pub next_upstream_timeout: Option<Duration>,
    pub proxy_protocol: Option<ProxyProtocol>,
    /// `proxy_ssl on`: the connector (no verification, no SNI: nginx's stream defaults).
    pub upstream_tls: Option<SslConnector>,
    pub access: AccessRules,
    /// `limit_conn`, when the server has any.
    pub limits: Option<Arc<Limits>>,
}

/// Compiles `stream {}`. Pools are per config, like the HTTP ones, so the balancer's state is
/// shared by every connection of a server.
pub fn build(
    model: &config::Stream,
    next_id: &mut u64,
) -> Result<Vec<Arc<StreamConf>>, Diagnostic> {
    let mut pools = std::collections::HashMap::new();
    for upstream in &model.upstreams {
        let pool = runtime::build_pool(upstream, *next_id, None, config::Defined::NONE)?;
        *next_id += 1;
        pools.insert(upstream.name.clone(), Arc::new(pool));
    }
    let zones = Zones::of_stream(model)?;
    let mut servers = Vec::new();
    for s in &model.servers {
        let mut conf = server(s, &mut pools, next_id)?;
        conf.limits = zones.limits(&s.limits);
        servers.push(Arc::new(conf));
    }
    Ok(servers)
}

fn server(
    s: &StreamServer,
    pools: &mut std::collections::HashMap<String, Arc<UpstreamPool>>,
    next_id: &mut u64,
) -> Result<StreamConf, Diagnostic> {
    let at = s.origin.as_ref();
    let pool = match pools.get(&s.pass) {
        Some(p) => p.clone(),
        None => {
            let p = Arc::new(runtime::implicit_pool(&s.pass, 0, at, *next_id)?);
            *next_id += 1;
            pools.insert(s.pass.clone(), p.clone());
            p
        }
    };
    let tls_keys = match s.tls.certificates.as_deref() {
        Some(c) if !c.is_empty() => Some(Arc::new(ServerKeys::load(c, at)?)),
        _ => None,
    };
    let upstream_tls = if s.upstream_tls {
        let mut b = SslConnector::builder(SslMethod::tls_client()).map_err(|e| {
            Diagnostic::error(format!("cannot create an OpenSSL client context: {e}")).at_opt(at)
        })?;
        b.set_verify(SslVerifyMode::NONE);
        Some(b.build())
    } else {
        None
    };
    let d = |v: Option<config::Duration>, default: u64| {
        v.map_or(Duration::from_secs(default), |d| d.get())
    };
    Ok(StreamConf {
        origin: s.origin.clone(),
        listen: s.listen.clone(),
        tls: s.tls.clone(),
        tls_keys,
        pool,
        connect_timeout: d(s.connect_timeout, 60),
        timeout: d(s.timeout, 600),
        next_upstream: s.next_upstream.unwrap_or(true),
        next_upstream_tries: s.next_upstream_tries.unwrap_or(0),
        next_upstream_timeout: s
            .next_upstream_timeout
            .map(|d| d.get())
            .filter(|d| !d.is_zero()),
        proxy_protocol: s.proxy_protocol,
        upstream_tls,
        access: AccessRules::new(s.access.as_deref().unwrap_or_default()),
        limits: None,
    })
}

/// One stream listening socket.
struct Listener {
    bind: ListenAddress,
    server: usize,
    proxy_protocol: bool,
    acceptor: Option<SslAcceptor>,
}

/// The Pingora application of every stream listener.
pub struct StreamEdge {
    runtime: Arc<ArcSwap<Runtime>>,
    listeners: Vec<Listener>,
    /// Worker threads, each with its own runtime ([`rehome`](super::rehome)).
    workers: usize,
    /// Where those threads run: Pingora starts them, so each is placed on its first connection.
    placement: Arc<Placement>,
}

impl StreamEdge {
    pub fn new(
        runtime: Arc<ArcSwap<Runtime>>,
        workers: usize,
        placement: Arc<Placement>,
    ) -> Result<StreamEdge, Diagnostic> {
        let mut listeners = Vec::new();
        for (index, server) in runtime.load().streams.iter().enumerate() {
            for l in &server.listen {
                let acceptor = if l.ssl {
                    Some(tls::acceptor(&server.tls, None, server.origin.as_ref())?)
                } else {
                    None
                };
                listeners.push(Listener {
                    bind: l.address.clone(),
                    server: index,
                    proxy_protocol: l.proxy_protocol,
                    acceptor,
                });
            }
        }
        Ok(StreamEdge {
            runtime,
            listeners,
            workers,
            placement,
        })
    }

    /// The addresses to listen on and whether to set SO_REUSEPORT.
    pub fn binds(runtime: &Runtime) -> Vec<(ListenAddress, bool)> {
        runtime
            .streams
            .iter()
            .flat_map(|s| s.listen.iter().map(|l| (l.address.clone(), l.reuseport)))
            .collect()
    }
}

/// What a stream session knows about its client, for the PROXY header and `hash` keys.
struct Client {
    addr: Option<SocketAddr>,
    local: Option<SocketAddr>,
    proxy: Option<proxy_protocol::ProxyInfo>,
}

#[async_trait]
impl ServerApp for StreamEdge {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        _shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        self.placement.place_this_thread_once();
        let digest = stream.get_socket_digest();
        let local = digest.as_ref().and_then(|d| d.local_addr().cloned());
        let peer = digest.as_ref().and_then(|d| d.peer_addr().cloned());
        let Some(listener) = local
            .as_ref()
            .and_then(|l| listen_match(self.listeners.iter().map(|s| &s.bind), l))
            .map(|i| &self.listeners[i])
        else {
            tracing::error!("a stream connection arrived on {local:?}, which no listener has");
            return None;
        };
        let runtime = self.runtime.load_full();
        let conf = runtime.streams.get(listener.server).cloned()?;
        let Ok(l4) = stream.into_any().downcast::<L4Stream>() else {
            tracing::error!("an accepted stream connection is not a plain socket");
            return None;
        };
        let mut l4 = super::rehome::for_worker(*l4, local.as_ref(), self.workers)?;
        let mut client = Client {
            addr: peer.as_ref().and_then(PingoraAddr::as_inet).copied(),
            local: local.as_ref().and_then(PingoraAddr::as_inet).copied(),
            proxy: None,
        };
        if listener.proxy_protocol {
            match proxy_protocol::read_header(&mut l4, PROXY_HEADER_TIMEOUT).await {
                Ok(info) => client.proxy = Some(info),
                Err(e) => {
                    tracing::error!("{e} while reading PROXY protocol header");
                    return None;
                }
            }
        }
        // nginx's pre-access phase (limit_conn), then its access phase: after the PROXY
        // header (which does not change the address without realip), before the TLS
        // handshake. The connection counts in the zones until it ends.
        let mut held = Held::default();
        if let Some(limits) = &conf.limits {
            let ip = client.addr.map(|a| a.ip());
            let (_, admitted) = limits.check_connections(|key| eval(key, &client), &mut held, ip);
            if admitted.is_err() {
                return None;
            }
        }
        if !conf.access.allows(client.addr.map(|a| a.ip())) {
            match client.addr {
                Some(addr) => tracing::error!("access forbidden by rule, client: {}", addr.ip()),
                None => tracing::error!("access forbidden by rule, client: unix:"),
            }
            return None;
        }
        let mut downstream: Stream = match &listener.acceptor {
            Some(acceptor) => {
                let keys = conf.tls_keys.clone();
                let pick: PickKeys = Box::new(move |_| keys.clone());
                match tls::accept(acceptor, l4, pick).await {
                    Ok(s) => Box::new(s),
                    Err(e) => {
                        tracing::info!("{e} while SSL handshaking");
                        return None;
                    }
                }
            }
            None => Box::new(l4),
        };
        let (mut upstream, mut attempt) = connect(&conf, &client).await?;
        pump(&mut downstream, &mut upstream, conf.timeout).await;
        conf.pool
            .balancer
            .finish(&mut attempt, Outcome::Success, Instant::now());
        None
    }
}

/// A byte stream to a backend: TCP or a Unix socket, maybe inside TLS.
trait Duplex: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Duplex for T {}

/// Connects to a backend, moving on to the next one on failure as `proxy_next_upstream` allows.
/// `None` when no backend could be reached; the failure is logged as nginx logs it.
async fn connect(
    conf: &StreamConf,
    client: &Client,
) -> Option<(Box<dyn Duplex>, super::balance::Attempt)> {
    let pool = &conf.pool;
    let hash_key = pool
        .hash_key
        .as_ref()
        .map(|t| eval(t, client))
        .unwrap_or_default();
    let key = SelectKey::new(client.addr.map(|a| a.ip()), &hash_key);
    let mut attempt = pool.balancer.begin();
    attempt.limit_tries(conf.next_upstream_tries);
    let started = Instant::now();
    loop {
        let id = match pool.balancer.select(&mut attempt, &key, Instant::now()) {
            Ok(id) => id,
            Err(no_live) => {
                tracing::error!(upstream = %pool.name, "{no_live} while connecting to upstream");
                return None;
            }
        };
        let addr = pool.balancer.peer(id)?.addr.clone();
        match tokio::time::timeout(conf.connect_timeout, open(conf, &addr, client)).await {
            Ok(Ok(stream)) => return Some((stream, attempt)),
            Ok(Err(e)) => tracing::error!(upstream = %addr, "{e} while connecting to upstream"),
            Err(_) => tracing::error!(upstream = %addr, "upstream timed out while connecting"),
        }
        pool.balancer
            .finish(&mut attempt, Outcome::Failed, Instant::now());
        let in_time = conf
            .next_upstream_timeout
            .is_none_or(|limit| started.elapsed() < limit);
        if !conf.next_upstream || attempt.tries_left() == 0 || !in_time {
            return None;
        }
    }
}

/// Opens one backend connection: connect, PROXY header, then TLS.
async fn open(
    conf: &StreamConf,
    addr: &PeerAddr,
    client: &Client,
) -> std::io::Result<Box<dyn Duplex>> {
    let mut raw: Box<dyn Duplex> = match addr {
        PeerAddr::Inet(a) => {
            let s = tokio::net::TcpStream::connect(a).await?;
            s.set_nodelay(true)?;
            Box::new(s)
        }
        PeerAddr::Unix(p) => Box::new(tokio::net::UnixStream::connect(p).await?),
    };
    if let Some(version) = conf.proxy_protocol {
        // nginx writes the connection's own addresses (realip is not in the appliance).
        raw.write_all(&proxy_protocol::header(version, client.addr, client.local))
            .await?;
        raw.flush().await?;
    }
    let Some(connector) = &conf.upstream_tls else {
        return Ok(raw);
    };
    let ssl = connector
        .configure()
        .and_then(|mut c| {
            c.set_use_server_name_indication(false);
            c.set_verify_hostname(false);
            c.into_ssl("")
        })
        .map_err(std::io::Error::other)?;
    let mut tls =
        pingora::tls::tokio_ssl::SslStream::new(ssl, raw).map_err(std::io::Error::other)?;
    Pin::new(&mut tls)
        .connect()
        .await
        .map_err(|e| std::io::Error::other(format!("SSL handshake with upstream: {e}")))?;
    Ok(Box::new(tls))
}

/// Copies bytes both ways until one side closes, an error, or `idle` without traffic.
async fn pump<A, B>(a: &mut A, b: &mut B, idle: Duration)
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let (mut a_read, mut a_write) = tokio::io::split(a);
    let (mut b_read, mut b_write) = tokio::io::split(b);
    let mut from_a = vec![0u8; BUFFER];
    let mut from_b = vec![0u8; BUFFER];
    loop {
        let forwarded = tokio::select! {
            r = a_read.read(&mut from_a) => forward(r, &from_a, &mut b_write, idle).await,
            r = b_read.read(&mut from_b) => forward(r, &from_b, &mut a_write, idle).await,
            _ = tokio::time::sleep(idle) => false,
        };
        if !forwarded {
            break;
        }
    }
    let _ = tokio::time::timeout(idle, a_write.shutdown()).await;
    let _ = tokio::time::timeout(idle, b_write.shutdown()).await;
}

/// Writes what one read returned to the other side; false when the session is over.
async fn forward<W: AsyncWrite + Unpin>(
    read: std::io::Result<usize>,
    buf: &[u8],
    to: &mut W,
    idle: Duration,
) -> bool {
    let n = match read {
        Ok(0) | Err(_) => return false,
        Ok(n) => n,
    };
    let write = async {
        to.write_all(&buf[..n]).await?;
        to.flush().await
    };
    matches!(tokio::time::timeout(idle, write).await, Ok(Ok(())))
}

/// Evaluates a stream `hash` key: the connection variables nginx's stream module has; others
/// are empty.
fn eval(template: &Template, client: &Client) -> Vec<u8> {
    use std::io::Write;
    let mut out = Vec::new();
    let ip = |a: Option<SocketAddr>| a.map(|a| a.ip());
    for segment in &template.segments {
        match segment {
            Segment::Literal(text) => out.extend_from_slice(text.as_bytes()),
            Segment::Var(v) => match v {
                Variable::RemoteAddr => {
                    if let Some(a) = ip(client.addr) {
                        let _ = write!(out, "{a}");
                    }
                }
                Variable::RemotePort => {
                    if let Some(a) = client.addr {
                        let _ = write!(out, "{}", a.port());
                    }
                }
                Variable::BinaryRemoteAddr => match ip(client.addr) {
                    Some(IpAddr::V4(a)) => out.extend_from_slice(&a.octets()),
                    Some(IpAddr::V6(a)) => out.extend_from_slice(&a.octets()),
                    None => {}
                },
                Variable::ServerAddr => {
                    if let Some(a) = ip(client.local) {
                        let _ = write!(out, "{a}");
                    }
                }
                Variable::ServerPort => {
                    if let Some(a) = client.local {
                        let _ = write!(out, "{}", a.port());
                    }
                }
                Variable::ProxyProtocolAddr => {
                    if let Some(a) = client.proxy.and_then(|p| p.source) {
                        let _ = write!(out, "{}", a.ip());
                    }
                }
                Variable::ProxyProtocolPort => {
                    if let Some(a) = client.proxy.and_then(|p| p.source) {
                        let _ = write!(out, "{}", a.port());
                    }
                }
                _ => {}
            },
        }
    }
    out
}
