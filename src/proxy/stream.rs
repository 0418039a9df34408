//! TCP load balancing: nginx's `stream {}` proxy and ELB's TCP and SSL listeners (UDP
//! sessions are in [`udp`]).
//!
//! A connection is matched to its stream server by the listening socket; a PROXY header is read
//! if the listen says `proxy_protocol`; TLS is terminated if it says `ssl` (otherwise TLS passes
//! through untouched: bytes are bytes). With `ssl_preread`, the client's ClientHello is read
//! next, for variables. A server that has `return` then sends its text and closes. Otherwise a
//! server is chosen by the pool's balancer, as nginx's stream upstreams do, and tried again
//! elsewhere while connecting fails (`proxy_next_upstream`, `_tries`, `_timeout`, each connect
//! bounded by `proxy_connect_timeout`). The backend may get a PROXY header (`proxy_protocol
//! on`, ELB's ProxyProtocolPolicyType) and TLS (`proxy_ssl on`). Bytes then flow both ways
//! until either side closes or nothing moves for `proxy_timeout`; like nginx 1.22 without
//! `proxy_half_close`, the first close ends the session.

mod udp;

pub use udp::FromClient;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::BufMut;
use pingora::protocols::l4::stream::Stream as L4Stream;
use pingora::tls::ssl::{SslAcceptor, SslConnector, SslMethod, SslVerifyMode};
use pingora::tls::x509::X509VerifyResult;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::access::AccessRules;
use super::balance::{Outcome, PeerAddr, SelectKey};
use super::client_cert::{self, ClientCertificate, ClientVerification};
use super::client_request::ClientRequest;
use super::edge::Accepted;
use super::error_context::{os_error, InSession};
use super::limits::{Held, Limits, Zones};
use super::logging::{write_access, AccessLogs, Formats};
use super::proxy_protocol;
use super::proxy_protocol::HeaderError;
use super::pump::pump;
use super::realip::RealIpConf;
use super::resolver::NameResolver;
use super::runtime::{self, Runtime, UpstreamPool};
use super::ssl_preread::{self, Preread, Scan};
use super::tables::Tables;
use super::tls::{self, PickKeys, ServerKeys};
use super::vars::{eval_to_vec, RequestVars, SessionVars, Tried};
use crate::compile::diag::Diagnostic;
use crate::config::template::{Context, Template};
use crate::config::{self, Defined, Listen, ListenAddress, LogLevel, ProxyProtocol, StreamServer};

/// nginx's `proxy_protocol_timeout` and `ssl_handshake_timeout` defaults.
const PROXY_HEADER_TIMEOUT: Duration = Duration::from_secs(30);
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(60);
/// nginx's `preread_timeout` and `preread_buffer_size` defaults.
const PREREAD_TIMEOUT: Duration = Duration::from_secs(30);
const PREREAD_BUFFER: usize = 16 * 1024;

/// A stream server as the data plane uses it.
pub struct StreamConf {
    pub origin: Option<config::Origin>,
    pub listen: Vec<Listen>,
    pub tls: config::Tls,
    pub tls_keys: Option<Arc<ServerKeys>>,
    pub pass: Pass,
    /// `ssl_preread on`: how long to wait for the ClientHello, and how much to read at most.
    pub preread: Option<(Duration, usize)>,
    /// The stream's `map`, `geo` and `split_clients` variables.
    pub tables: Arc<Tables>,
    /// Where `proxy_pass $name` looks a host name up.
    pub resolver: Option<Arc<NameResolver>>,
    pub connect_timeout: Duration,
    pub timeout: Duration,
    pub next_upstream: bool,
    pub next_upstream_tries: u32,
    pub next_upstream_timeout: Option<Duration>,
    pub proxy_protocol: Option<ProxyProtocol>,
    /// `proxy_ssl on`, and how the backend is checked.
    pub upstream_tls: Option<UpstreamTls>,
    pub access: AccessRules,
    /// `limit_conn`, when the server has any.
    pub limits: Option<Arc<Limits>>,
    /// Where each session is written when it ends: empty for none.
    pub access_log: AccessLogs,
    /// `set_real_ip_from`: whose PROXY header names the client.
    pub real_ip: Option<RealIpConf>,
    pub proxy_protocol_timeout: Duration,
    pub handshake_timeout: Duration,
    /// `proxy_half_close on`.
    pub half_close: bool,
    /// UDP: `proxy_responses` (`None`: no limit) and `proxy_requests` (`None`: no limit).
    pub responses: Option<u32>,
    pub requests: Option<u32>,
}

/// TLS to the backends: nginx's stream defaults check nothing and send no SNI.
pub struct UpstreamTls {
    /// With `proxy_ssl_verify on`, its trusted certificates, verification and depth.
    connector: SslConnector,
    verify: bool,
    /// `proxy_ssl_name`; by default the host of `proxy_pass`.
    name: Option<Template>,
    /// `proxy_ssl_server_name on`.
    server_name: bool,
}

/// Where a stream server's connections go.
pub enum Pass {
    /// An upstream, or an address, named in the config.
    Fixed(Arc<UpstreamPool>),
    /// `proxy_pass $name;`: evaluated for each connection, to an upstream of the stream (by
    /// its name) or an address, as ngx_stream_proxy_eval does.
    Variable { target: Template, pools: Arc<Pools> },
    /// `return TEXT;`: the client is sent the text and closed.
    Return(Template),
}

/// The stream's pools by name: its upstreams, and the addresses servers name directly.
type Pools = HashMap<String, Arc<UpstreamPool>>;

/// Compiles `stream {}`. Pools are per config, like the HTTP ones, so the balancer's state is
/// shared by every connection of a server.
pub fn build(
    model: &config::Stream,
    next_id: &mut u64,
) -> Result<Vec<Arc<StreamConf>>, Diagnostic> {
    let declared = config::validate::stream_variables(model);
    let scope = (Context::Stream, Defined::Names(&declared));
    let mut pools = HashMap::new();
    for upstream in &model.upstreams {
        let pool = runtime::build_pool(upstream, *next_id, None, scope)?;
        *next_id += 1;
        pools.insert(upstream.name.clone(), Arc::new(pool));
    }
    let fixed = model
        .servers
        .iter()
        .filter_map(|s| Some((s.pass.as_ref()?, s)));
    for (pass, s) in fixed.filter(|(pass, _)| !pass.contains('$')) {
        if !pools.contains_key(pass) {
            let at = s.origin.as_ref();
            let pool = Arc::new(runtime::implicit_pool(pass, 0, at, *next_id)?);
            *next_id += 1;
            pools.insert(pass.clone(), pool);
        }
    }
    let pools = Arc::new(pools);
    let tables = Arc::new(Tables::of_stream(model, scope.1)?);
    let zones = Zones::of_stream(model, scope.1)?;
    let formats = Formats::of(Context::Stream, &model.log_format, &declared)?;
    let mut servers = Vec::new();
    for s in &model.servers {
        let at = s.origin.as_ref();
        let template = |text: &str| {
            Template::parse_for(Context::Stream, text, scope.1)
                .map_err(|e| Diagnostic::error(e.to_string()).at_opt(at))
        };
        let pass = match (&s.pass, &s.respond) {
            (_, Some(text)) => Pass::Return(template(text)?),
            (Some(pass), None) if pass.contains('$') => Pass::Variable {
                target: template(pass)?,
                pools: pools.clone(),
            },
            // Every name a server passes to is in the pools: added just above.
            (Some(pass), None) => {
                Pass::Fixed(pools.get(pass).cloned().ok_or_else(|| {
                    Diagnostic::error(format!("no upstream \"{pass}\"")).at_opt(at)
                })?)
            }
            (None, None) => {
                return Err(Diagnostic::error("a stream server without pass or return").at_opt(at))
            }
        };
        let mut conf = server(s, pass, tables.clone(), scope.1)?;
        conf.limits = zones.limits(&s.limits);
        conf.access_log = formats.targets(s.access_log.as_deref(), at)?;
        servers.push(Arc::new(conf));
    }
    Ok(servers)
}

fn server(
    s: &StreamServer,
    pass: Pass,
    tables: Arc<Tables>,
    defined: Defined<'_>,
) -> Result<StreamConf, Diagnostic> {
    let at = s.origin.as_ref();
    let tls_keys = match s.tls.certificates.as_deref() {
        Some(c) if !c.is_empty() => {
            let verification = ClientVerification::load(&s.tls, at)?;
            Some(Arc::new(
                ServerKeys::load(c, at)?.verifying_clients(verification),
            ))
        }
        _ => None,
    };
    let upstream_tls = match s.upstream_tls {
        true => Some(upstream_tls(&s.upstream_tls_check, at, defined)?),
        false => None,
    };
    let d = |v: Option<config::Duration>, default: u64| {
        v.map_or(Duration::from_secs(default), |d| d.get())
    };
    Ok(StreamConf {
        origin: s.origin.clone(),
        listen: s.listen.clone(),
        tls: s.tls.clone(),
        tls_keys,
        pass,
        preread: s.ssl_preread.then(|| {
            let size = s
                .preread_buffer_size
                .map_or(PREREAD_BUFFER, |b| b.0 as usize);
            (d(s.preread_timeout, PREREAD_TIMEOUT.as_secs()), size)
        }),
        tables,
        resolver: NameResolver::shared(&s.resolver, at)?,
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
        access_log: Arc::new([]),
        real_ip: RealIpConf::new(&config::RealIp {
            from: s.real_ip_from.clone(),
            header: Some("proxy_protocol".into()),
            recursive: None,
        }),
        proxy_protocol_timeout: d(s.proxy_protocol_timeout, PROXY_HEADER_TIMEOUT.as_secs()),
        handshake_timeout: d(s.handshake_timeout, HANDSHAKE_TIMEOUT.as_secs()),
        half_close: s.half_close,
        responses: s.responses,
        requests: s.requests.filter(|n| *n > 0),
    })
}

/// The client side of `proxy_ssl on`, as ngx_stream_proxy_set_ssl sets it up.
fn upstream_tls(
    check: &config::UpstreamTlsCheck,
    at: Option<&config::Origin>,
    defined: Defined<'_>,
) -> Result<UpstreamTls, Diagnostic> {
    let mut b = SslConnector::builder(SslMethod::tls_client()).map_err(|e| {
        Diagnostic::error(format!("cannot create an OpenSSL client context: {e}")).at_opt(at)
    })?;
    let verify = check.verify.unwrap_or(false);
    if verify {
        let Some(path) = &check.trusted_certificate else {
            let message = "no proxy_ssl_trusted_certificate for proxy_ssl_verify";
            return Err(Diagnostic::error(message).at_opt(at));
        };
        for cert in tls::load_ca(path, at)?.iter() {
            b.cert_store_mut().add_cert(cert.clone()).map_err(|e| {
                let message = format!("cannot trust a certificate of \"{}\": {e}", path.display());
                Diagnostic::error(message).at_opt(at)
            })?;
        }
        // As nginx's callback, let every handshake finish; the result is judged after it.
        b.set_verify_callback(SslVerifyMode::PEER, |_, _| true);
        b.set_verify_depth(check.verify_depth.unwrap_or(1));
    } else {
        b.set_verify(SslVerifyMode::NONE);
    }
    let name = match &check.name {
        Some(text) => Some(
            Template::parse_for(Context::Stream, text, defined)
                .map_err(|e| Diagnostic::error(e.to_string()).at_opt(at))?,
        ),
        None => None,
    };
    Ok(UpstreamTls {
        connector: b.build(),
        verify,
        name,
        server_name: check.server_name.unwrap_or(false),
    })
}

/// OpenSSL's X509_V_ERR_HOSTNAME_MISMATCH: the certificate does not name `proxy_ssl_name`.
const X509_V_ERR_HOSTNAME_MISMATCH: i32 = 62;

/// The name TLS to a backend checks and sends, as ngx_stream_proxy_ssl_name makes it: without
/// a port (an IPv6 address keeps its brackets).
fn without_port(name: &str) -> &str {
    let from = match name.starts_with('[') {
        true => name.find(']').unwrap_or(0),
        false => 0,
    };
    match name[from..].find(':') {
        Some(i) => &name[..from + i],
        None => name,
    }
}

/// One stream listening socket.
struct Listener {
    bind: ListenAddress,
    server: usize,
    proxy_protocol: bool,
    acceptor: Option<SslAcceptor>,
    /// A UDP socket: its datagrams are served by [`udp`].
    udp: bool,
}

/// Serves the connections of every stream listener; the accept loops of
/// [`workers`](super::workers) hand them over on the worker thread that serves them.
pub struct StreamEdge {
    runtime: Arc<ArcSwap<Runtime>>,
    listeners: Vec<Listener>,
}

impl StreamEdge {
    pub fn new(runtime: Arc<ArcSwap<Runtime>>) -> Result<StreamEdge, Diagnostic> {
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
                    udp: l.udp,
                });
            }
        }
        Ok(StreamEdge { runtime, listeners })
    }

    /// The addresses to listen on, and whether each is UDP, in the order
    /// [`serve`](Self::serve) and [`serve_datagrams`](Self::serve_datagrams) number them.
    pub fn binds(&self) -> Vec<(ListenAddress, bool)> {
        self.listeners
            .iter()
            .map(|l| (l.bind.clone(), l.udp))
            .collect()
    }
}

/// Stream sessions open now. A graceful stop waits until there are none, as nginx's workers
/// wait for their stream sessions, which are never idle to them.
static OPEN_SESSIONS: AtomicUsize = AtomicUsize::new(0);

pub fn open_sessions() -> usize {
    OPEN_SESSIONS.load(Ordering::SeqCst)
}

/// What a stream session knows about its client: for the PROXY header, and for variables
/// (`hash` and `limit_conn` keys, maps, `proxy_pass $name`).
struct Client {
    /// The connection's number (`$connection`).
    number: u64,
    /// The listening address it came to, as error lines name it.
    server: ListenAddress,
    /// The client: the connecting address, or the one a trusted PROXY header names.
    addr: Option<SocketAddr>,
    /// The connecting address, when a PROXY header replaced it (`$realip_remote_addr`).
    connecting: Option<SocketAddr>,
    local: Option<SocketAddr>,
    proxy: Option<proxy_protocol::ProxyInfo>,
    /// The TLS handshake's protocol, cipher and server name, on an `ssl` listener.
    tls: Option<(String, String, Option<String>)>,
    /// The client's certificate, when the server asked for one (`ssl_verify_client`).
    certificate: Option<Arc<ClientCertificate>>,
    preread: Option<Preread>,
    /// A UDP session's client: nginx's error lines say `udp client:`.
    udp: bool,
}

impl Client {
    /// Logs an error of the session as nginx does (see [`error_context`]); `proxied` once the
    /// session proxies: the backend, if one was chosen, and the bytes so far.
    fn log(
        &self,
        level: LogLevel,
        proxied: Option<(Option<&dyn std::fmt::Display>, [u64; 4])>,
        message: std::fmt::Arguments<'_>,
    ) {
        let at = InSession {
            number: self.number,
            udp: self.udp,
            client: self.addr.map(|a| a.ip()),
            server: &self.server,
            proxied,
        };
        at.log(level, message);
    }

    /// The session's variables, evaluated as a request's are, with no request.
    fn vars<'a>(&'a self, tables: &'a Tables) -> RequestVars<'a> {
        static NO_REQUEST_ID: OnceLock<String> = OnceLock::new();
        let pair = |a: Option<SocketAddr>| a.map(|a| (a.ip(), a.port()));
        let tls = self.tls.as_ref();
        RequestVars {
            client: pair(self.addr),
            connecting: pair(self.connecting.or(self.addr)),
            local: pair(self.local),
            tls: tls.is_some(),
            ssl_protocol: tls.map(|t| t.0.as_str()),
            ssl_cipher: tls.map(|t| t.1.as_str()),
            ssl_server_name: tls.and_then(|t| t.2.as_deref()),
            ssl_client: self.certificate.as_deref(),
            proxy_protocol: self.proxy,
            preread: self.preread.as_ref(),
            connection: self.number,
            ..RequestVars::empty(tables, &NO_REQUEST_ID)
        }
    }
}

/// An accepted connection, registered with the serving worker's event loop.
enum Socket {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
}

impl Socket {
    /// Pingora's stream of the socket, which its TLS handshake takes, with `read` put back in
    /// front of what comes next.
    fn into_l4(self, read: &[u8]) -> L4Stream {
        let mut l4 = match self {
            Socket::Tcp(s) => L4Stream::from(s),
            Socket::Unix(s) => L4Stream::from(s),
        };
        if !read.is_empty() {
            l4.rewind(read);
        }
        l4
    }

    fn into_duplex(self) -> Box<dyn Duplex> {
        match self {
            Socket::Tcp(s) => Box::new(s),
            Socket::Unix(s) => Box::new(s),
        }
    }

    /// The PROXY protocol header, and what the client sent after it.
    async fn read_proxy_header(
        &mut self,
        timeout: Duration,
    ) -> Result<(proxy_protocol::ProxyInfo, Vec<u8>), HeaderError> {
        match self {
            Socket::Tcp(s) => proxy_protocol::read_header_from(s, timeout).await,
            Socket::Unix(s) => proxy_protocol::read_header_from(s, timeout).await,
        }
    }
}

impl StreamEdge {
    /// Listener `index`, and the server it serves under the config in force now.
    fn served_by(&self, index: usize) -> Option<(&Listener, Arc<StreamConf>)> {
        let listener = self.listeners.get(index)?;
        let conf = self.runtime.load().streams.get(listener.server).cloned()?;
        Some((listener, conf))
    }

    /// Serves a connection accepted on listener `index`, on the calling worker's event loop.
    pub async fn serve(self: Arc<Self>, conn: Accepted, index: usize) {
        let _open = crate::sync::Counted::enter(&OPEN_SESSIONS);
        let started = Instant::now();
        let Some((listener, conf)) = self.served_by(index) else {
            return;
        };
        let number = super::connection_tag::next_number();
        let registered = match conn {
            Accepted::Tcp(tcp, peer) => {
                // The listening address is the local one, unless it is a wildcard.
                let local = match &listener.bind {
                    ListenAddress::Tcp(a) if !a.ip().is_unspecified() => Some(*a),
                    _ => tcp.local_addr().ok(),
                };
                tokio::net::TcpStream::from_std(tcp).map(|s| (Socket::Tcp(s), Some(peer), local))
            }
            Accepted::Unix(unix) => {
                tokio::net::UnixStream::from_std(unix).map(|s| (Socket::Unix(s), None, None))
            }
        };
        let (socket, addr, local) = match registered {
            Ok(registered) => registered,
            Err(e) => {
                tracing::error!("{e} while registering an accepted connection");
                return;
            }
        };
        let mut client = Client {
            number,
            server: listener.bind.clone(),
            addr,
            connecting: None,
            local,
            proxy: None,
            tls: None,
            certificate: None,
            preread: None,
            udp: false,
        };
        let mut outcome = SessionVars::new(started);
        outcome.status = session(listener, &conf, &mut client, socket, &mut outcome).await;
        log_session(&conf, &client, &mut outcome);
    }
}

/// nginx's log phase for a session, however it ended; its last try ends with it, as nginx's
/// stream proxy finalizes it.
fn log_session(conf: &StreamConf, client: &Client, outcome: &mut SessionVars) {
    outcome.end_try(Instant::now());
    if !conf.access_log.is_empty() {
        let vars = RequestVars {
            status: outcome.status,
            session: Some(outcome),
            ..client.vars(&conf.tables)
        };
        write_access(&conf.access_log, &vars);
    }
}

/// nginx's stream statuses (`$status`).
const OK: u16 = 200;
const BAD_REQUEST: u16 = 400;
const FORBIDDEN: u16 = 403;
const INTERNAL_SERVER_ERROR: u16 = 500;
const BAD_GATEWAY: u16 = 502;

/// One stream session, from the PROXY header to the last byte (see the module docs); returns
/// its status, which is nginx's wherever nginx would end the session too.
async fn session(
    listener: &Listener,
    conf: &StreamConf,
    client: &mut Client,
    mut socket: Socket,
    outcome: &mut SessionVars,
) -> u16 {
    // Bytes read from the client ahead of the session, sent to the backend first.
    let mut early = Vec::new();
    if listener.proxy_protocol {
        match socket.read_proxy_header(conf.proxy_protocol_timeout).await {
            Ok((info, rest)) => {
                client.proxy = Some(info);
                early = rest;
                // nginx's post-accept phase (realip): from a trusted address, the header's
                // source is the client from here on.
                let named = conf
                    .real_ip
                    .as_ref()
                    .and_then(|r| r.client(client.addr, ClientRequest::none(), Some(&info)));
                if let Some(named) = named {
                    client.connecting = client.addr;
                    client.addr = Some(named);
                }
            }
            // nginx: a broken header is an error and a 400; a client that sends none in time,
            // or whose connection fails, is noted at info level and ends with 200.
            Err(e @ HeaderError::Broken(_)) => {
                client.log(
                    LogLevel::Error,
                    None,
                    format_args!("{e} while reading PROXY protocol header"),
                );
                return BAD_REQUEST;
            }
            Err(e) => {
                client.log(
                    LogLevel::Info,
                    None,
                    format_args!("{e} while reading PROXY protocol header"),
                );
                return OK;
            }
        }
    }
    // nginx's pre-access phase (limit_conn), then its access phase: after the PROXY header
    // (which does not change the address without realip), before the TLS handshake. The
    // connection counts in the zones until it ends.
    let mut held = Held::default();
    if let Err(status) = admit(conf, client, &mut held) {
        return status;
    }
    let mut downstream: Box<dyn Duplex> = match &listener.acceptor {
        Some(acceptor) => {
            let keys = conf.tls_keys.clone();
            let pick: PickKeys = Box::new(move |_| keys.clone());
            let l4 = socket.into_l4(&std::mem::take(&mut early));
            match tls::accept_within(acceptor, l4, pick, conf.handshake_timeout).await {
                Ok(s) => {
                    let handshaken = s.ssl_digest().and_then(|d| {
                        let h = d.extension.get::<tls::Handshaken>();
                        client.tls = Some((
                            d.version.to_string(),
                            d.cipher.to_string(),
                            h.and_then(|h| h.server_name.clone()),
                        ));
                        h.cloned()
                    });
                    client.certificate = handshaken.and_then(|h| h.client_certificate);
                    // ngx_stream_ssl_handler: the client's certificate, once the handshake is
                    // done; a refusal ends the session.
                    let mode = conf.tls.verify_client.unwrap_or_default();
                    let certificate = client.certificate.as_deref();
                    if let Some(refusal) = client_cert::refusal(mode, certificate) {
                        let message = format_args!("{} while SSL handshaking", refusal.message);
                        client.log(LogLevel::Info, None, message);
                        return INTERNAL_SERVER_ERROR;
                    }
                    Box::new(s)
                }
                Err(e) => {
                    client.log(
                        LogLevel::Info,
                        None,
                        format_args!("{e} while SSL handshaking"),
                    );
                    return INTERNAL_SERVER_ERROR;
                }
            }
        }
        // Plain TCP is pumped straight from the socket.
        None => socket.into_duplex(),
    };
    // nginx's preread phase: what the client sends first is kept, and sent on first. nginx
    // does not count it in $bytes_received; bytes that came with a PROXY header it does.
    match conf.preread {
        Some((timeout, size)) => match preread(&mut downstream, early, timeout, size).await {
            Ok((found, read)) => {
                client.preread = found;
                early = read;
            }
            Err((status, why)) => {
                if let Some((level, message)) = why {
                    client.log(level, None, format_args!("{message}"));
                }
                return status;
            }
        },
        None => outcome.bytes_received += early.len() as u64,
    }
    let pool = match &conf.pass {
        Pass::Return(text) => {
            let text = eval_to_vec(text, &client.vars(&conf.tables));
            let sent = async {
                downstream.write_all(&text).await?;
                downstream.shutdown().await
            };
            return match tokio::time::timeout(conf.timeout, sent).await {
                Ok(Ok(())) => {
                    outcome.bytes_sent = text.len() as u64;
                    OK
                }
                _ => INTERNAL_SERVER_ERROR,
            };
        }
        pass => match pool_of(pass, conf, client, outcome).await {
            Some(pool) => pool,
            None => return INTERNAL_SERVER_ERROR,
        },
    };
    let (name, client): (&str, &Client) = (&pool.name, client);
    let opened = connect(conf, &pool, client, outcome, |addr| async move {
        open(conf, &addr, name, client)
            .await
            .map_err(|e| e.to_string())
    });
    let Some((mut upstream, mut attempt, _)) = opened.await else {
        return BAD_GATEWAY;
    };
    if !early.is_empty() {
        let sent = tokio::time::timeout(conf.timeout, upstream.write_all(&early)).await;
        if !matches!(sent, Ok(Ok(()))) {
            pool.balancer
                .finish(&mut attempt, Outcome::Success, Instant::now());
            return OK;
        }
        if let Some(t) = outcome.current_try() {
            t.bytes_sent += early.len() as u64;
        }
    }
    let (up, down) = pump(
        &mut downstream,
        &mut upstream,
        conf.timeout,
        conf.half_close,
    )
    .await;
    let now = Instant::now();
    outcome.bytes_received += up.read;
    outcome.bytes_sent += down.written;
    if let Some(t) = outcome.current_try() {
        t.bytes_sent += up.written;
        t.bytes_received += down.read;
        t.first_byte_time = down
            .first_read
            .map(|at| at.saturating_duration_since(t.started));
    }
    pool.balancer.finish(&mut attempt, Outcome::Success, now);
    OK
}

/// Reads what the client sends first, after the bytes in `read`, until `ssl_preread` knows
/// whether it is a ClientHello and what it says, and returns that and all the bytes read.
/// An error is the status the session ends with: the client closed or failed first, or
/// `timeout` passed (200, as in nginx), or a ClientHello larger than the buffer ("preread
/// buffer full", as nginx logs it: 400). nginx 1.22 does not proxy such connections either.
async fn preread(
    client: &mut (impl AsyncRead + Unpin + ?Sized),
    read: Vec<u8>,
    timeout: Duration,
    size: usize,
) -> Result<(Option<Preread>, Vec<u8>), (u16, Option<(LogLevel, &'static str)>)> {
    let deadline = tokio::time::Instant::now() + timeout;
    // Read into the buffer's spare room as it is: nothing to zero first, as in nginx.
    let mut buf = read;
    buf.reserve(size.saturating_sub(buf.len()));
    loop {
        match ssl_preread::scan(&buf) {
            Scan::Done(found) => return Ok((Some(found), buf)),
            Scan::NotTls => return Ok((None, buf)),
            Scan::Partial => {}
        }
        let room = size.saturating_sub(buf.len());
        if room == 0 {
            let why = "preread buffer full while prereading client data";
            return Err((BAD_REQUEST, Some((LogLevel::Error, why))));
        }
        let mut room = (&mut buf).limit(room);
        match tokio::time::timeout_at(deadline, client.read_buf(&mut room)).await {
            Ok(Ok(n)) if n > 0 => {}
            Ok(_) => return Err((OK, None)),
            Err(_) => {
                let why = "client timed out while prereading client data";
                return Err((OK, Some((LogLevel::Info, why))));
            }
        }
    }
}

/// The pool `proxy_pass $name` names for this connection: an upstream of the stream, an
/// address, the addresses the resolver has for a name, or (logged as nginx logs it) nothing,
/// and the connection is closed.
async fn destination(
    value: &str,
    pools: &Pools,
    conf: &StreamConf,
    log: &(dyn Fn(std::fmt::Arguments<'_>) + Sync),
) -> Option<Arc<UpstreamPool>> {
    let at = conf.origin.as_ref();
    let fresh = |text: &str| match runtime::implicit_pool(text, 0, at, next_dynamic_pool_id()) {
        Ok(pool) => Some(Arc::new(pool)),
        Err(e) => {
            log(format_args!("{} in upstream \"{value}\"", e.message));
            None
        }
    };
    if value.starts_with("unix:") {
        return fresh(value);
    }
    let (host, port) = match config::validate::server_address(value, 0) {
        Ok(parsed) => parsed,
        Err(e) => {
            log(format_args!("{e}"));
            return None;
        }
    };
    let literal = host.parse::<IpAddr>().is_ok();
    if !literal {
        // An upstream block matches a name without a port; a server's `proxy_pass host:port`
        // made a pool of that name and port.
        let name = if port == 0 { host.as_str() } else { value };
        let known = pools
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name) && (port != 0 || !key.contains(':')));
        if let Some((_, pool)) = known {
            return Some(pool.clone());
        }
    }
    if port == 0 {
        log(format_args!("no port in upstream \"{value}\""));
        return None;
    }
    if literal {
        // An address: a pool of its own for this connection, as nginx's resolved peer is.
        return fresh(value);
    }
    let Some(resolver) = &conf.resolver else {
        log(format_args!("no resolver defined to resolve {host}"));
        return None;
    };
    let addresses: Vec<SocketAddr> = match resolver.resolve(&host).await {
        Ok(ips) => ips
            .into_iter()
            .map(|ip| SocketAddr::new(ip, port))
            .collect(),
        Err(why) => {
            log(format_args!("{host} could not be resolved ({why})"));
            return None;
        }
    };
    match runtime::resolved_pool(value, &addresses, at, next_dynamic_pool_id()) {
        Ok(pool) => Some(Arc::new(pool)),
        Err(e) => {
            log(format_args!("{} in upstream \"{value}\"", e.message));
            None
        }
    }
}

/// Pools made for one connection get ids apart from the config's.
fn next_dynamic_pool_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1 << 49);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// A byte stream to a backend: TCP or a Unix socket, maybe inside TLS.
trait Duplex: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Duplex for T {}

/// nginx's pre-access phase (`limit_conn`: the session counts in the zones while `held` lives),
/// then its access phase (`allow`, `deny`); `Err` is the status a refusal ends the session with.
fn admit(conf: &StreamConf, client: &Client, held: &mut Held) -> Result<(), u16> {
    if let Some(limits) = &conf.limits {
        let vars = client.vars(&conf.tables);
        let log = |level, message: std::fmt::Arguments<'_>| client.log(level, None, message);
        let (_, admitted) = limits.check_connections(|key| eval_to_vec(key, &vars), held, &log);
        admitted?;
    }
    if !conf.access.allows(client.addr.map(|a| a.ip())) {
        // nginx runs a UDP session's access phase as it initializes the session.
        let message = match client.udp {
            true => format_args!("access forbidden by rule while initializing session"),
            false => format_args!("access forbidden by rule"),
        };
        client.log(LogLevel::Error, None, message);
        return Err(FORBIDDEN);
    }
    Ok(())
}

/// The pool a `proxy_pass` names for this session: its fixed one, or what its variables name
/// (see [`destination`]); `None` when they name nothing usable (logged).
async fn pool_of(
    pass: &Pass,
    conf: &StreamConf,
    client: &Client,
    outcome: &SessionVars,
) -> Option<Arc<UpstreamPool>> {
    match pass {
        Pass::Fixed(pool) => Some(pool.clone()),
        Pass::Variable { target, pools } => {
            let value = eval_to_vec(target, &client.vars(&conf.tables));
            // Said with the proxy's part of the line, no backend yet (ngx_stream_proxy_handler
            // sets its log handler first).
            let bytes = [outcome.bytes_received, outcome.bytes_sent, 0, 0];
            let log = |message: std::fmt::Arguments<'_>| {
                client.log(LogLevel::Error, Some((None, bytes)), message)
            };
            destination(&String::from_utf8_lossy(&value), pools, conf, &log).await
        }
        Pass::Return(_) => None,
    }
}

/// Picks a backend with the pool's balancer and opens a connection to it with `open` (which
/// gives the connection and the bytes it sent opening it, a PROXY header's), moving on to the
/// next one on failure as `proxy_next_upstream` allows, each try bounded by
/// `proxy_connect_timeout`. `None` when no backend could be reached; the failure is logged as
/// nginx logs it.
async fn connect<T, F>(
    conf: &StreamConf,
    pool: &UpstreamPool,
    client: &Client,
    outcome: &mut SessionVars,
    open: impl Fn(PeerAddr) -> F,
) -> Option<(T, super::balance::Attempt, PeerAddr)>
where
    F: std::future::Future<Output = Result<(T, usize), String>>,
{
    let hash_key = pool
        .hash_key
        .as_ref()
        .map(|t| eval_to_vec(t, &client.vars(&conf.tables)))
        .unwrap_or_default();
    let key = SelectKey::new(client.addr.map(|a| a.ip()), &hash_key);
    let mut attempt = pool.balancer.begin();
    attempt.limit_tries(conf.next_upstream_tries);
    let started = Instant::now();
    loop {
        let now = Instant::now();
        let bytes = [outcome.bytes_received, outcome.bytes_sent, 0, 0];
        let id = match pool.balancer.select(&mut attempt, &key, now) {
            Ok(id) => id,
            Err(no_live) => {
                client.log(
                    LogLevel::Error,
                    Some((Some(&pool.name), bytes)),
                    format_args!("{no_live} while connecting to upstream"),
                );
                outcome.begin_try(Tried::NoLiveServerIn(pool.name.clone()), now);
                return None;
            }
        };
        let addr = pool.balancer.peer(id)?.addr.clone();
        outcome.begin_try(Tried::Peer(addr.clone()), now);
        // A connection opened takes a number, as nginx's ngx_event_connect_peer gives it one.
        super::connection_tag::next_number();
        match tokio::time::timeout(conf.connect_timeout, open(addr.clone())).await {
            Ok(Ok((stream, header_len))) => {
                if let Some(t) = outcome.current_try() {
                    t.connect_time = Some(t.started.elapsed());
                    t.bytes_sent = header_len as u64;
                }
                return Some((stream, attempt, addr));
            }
            failed => {
                let why = match failed {
                    Ok(Err(why)) => why,
                    _ => "upstream timed out (110: Connection timed out)".to_string(),
                };
                client.log(
                    LogLevel::Error,
                    Some((Some(&addr), bytes)),
                    format_args!("{why} while connecting to upstream"),
                );
            }
        }
        if pool
            .balancer
            .finish(&mut attempt, Outcome::Failed, Instant::now())
        {
            // ngx_stream_upstream_free_round_robin_peer's warning.
            client.log(
                LogLevel::Warn,
                Some((Some(&addr), bytes)),
                format_args!("upstream server temporarily disabled while connecting to upstream"),
            );
        }
        let in_time = conf
            .next_upstream_timeout
            .is_none_or(|limit| started.elapsed() < limit);
        if !conf.next_upstream || attempt.tries_left() == 0 || !in_time {
            return None;
        }
    }
}

/// Opens one backend connection: connect, PROXY header, then TLS. Returns the connection and
/// the length of the PROXY header sent, which nginx counts in `$upstream_bytes_sent`.
async fn open(
    conf: &StreamConf,
    addr: &PeerAddr,
    upstream: &str,
    client: &Client,
) -> std::io::Result<(Box<dyn Duplex>, usize)> {
    // Said as nginx says it: `connect() failed (111: Connection refused)`.
    let failed = |e: std::io::Error| {
        std::io::Error::new(e.kind(), format!("connect() failed ({})", os_error(&e)))
    };
    let mut raw: Box<dyn Duplex> = match addr {
        PeerAddr::Inet(a) => {
            let s = tokio::net::TcpStream::connect(a).await.map_err(failed)?;
            s.set_nodelay(true)?;
            Box::new(s)
        }
        PeerAddr::Unix(p) => Box::new(tokio::net::UnixStream::connect(p).await.map_err(failed)?),
    };
    let mut header_len = 0;
    if let Some(version) = conf.proxy_protocol {
        // nginx writes the session's client (realip's, when a trusted header named one) and
        // the connection's local address.
        let header = proxy_protocol::header(version, client.addr, client.local);
        raw.write_all(&header).await?;
        raw.flush().await?;
        header_len = header.len();
    }
    let Some(upstream_tls) = &conf.upstream_tls else {
        return Ok((raw, header_len));
    };
    let name = match &upstream_tls.name {
        Some(t) => String::from_utf8_lossy(&eval_to_vec(t, &client.vars(&conf.tables))).into(),
        None => upstream.to_string(),
    };
    let name = without_port(&name);
    // No SNI for an address (RFC 6066), as nginx.
    let sni = upstream_tls.server_name
        && !name.is_empty()
        && !name.starts_with('[')
        && name.parse::<std::net::Ipv4Addr>().is_err();
    let ssl = upstream_tls
        .connector
        .configure()
        .and_then(|mut c| {
            c.set_use_server_name_indication(sni);
            c.set_verify_hostname(upstream_tls.verify);
            c.into_ssl(name)
        })
        .map_err(std::io::Error::other)?;
    let mut tls =
        pingora::tls::tokio_ssl::SslStream::new(ssl, raw).map_err(std::io::Error::other)?;
    Pin::new(&mut tls)
        .connect()
        .await
        .map_err(|e| std::io::Error::other(format!("SSL handshake with upstream: {e}")))?;
    if upstream_tls.verify {
        // ngx_stream_proxy_ssl_handshake: a backend that fails is closed, and the next tried.
        let result = tls.ssl().verify_result();
        if result.as_raw() == X509_V_ERR_HOSTNAME_MISMATCH {
            let message = format!("upstream SSL certificate does not match \"{name}\"");
            return Err(std::io::Error::other(message));
        }
        if result != X509VerifyResult::OK {
            let (code, why) = (result.as_raw(), result.error_string());
            let message = format!("upstream SSL certificate verify error: ({code}:{why})");
            return Err(std::io::Error::other(message));
        }
    }
    Ok((Box::new(tls), header_len))
}
