//! The load balancers' state to the model, the way ELB itself behaves:
//!
//! - an HTTP or HTTPS listener is an HTTP server on its lb-port with one location, `/`, proxying
//!   to a pool per (load balancer, instance port, instance protocol, stickiness) and setting
//!   X-Forwarded-For, -Proto and -Port as ELB does; pools balance by least outstanding requests,
//!   ELB's method for HTTP;
//! - a TCP or SSL listener is a stream server, round robin, as ELB does for TCP;
//! - the health check goes on each of the load balancer's pools and replaces passive failure
//!   counting (ELB has none); connection draining is the pools' drain timeout; the idle timeout
//!   is the client keep-alive and proxy timeouts (HTTP) or the session timeout (TCP); ELB's
//!   default of 60 s applies when the script sets none.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::path::PathBuf;

use indexmap::IndexMap;

use super::resolve::Resolved;
use super::security_policy::{self, DEFAULT};
use super::semantics::{CertRef, Lb, Listener, PolicyKind, Protocol, SslPolicy, State};
use crate::compile::diag::Diagnostic;
use crate::compile::{Impact, Report, Support};
use crate::config::*;

/// ELB's idle timeout when none is set.
const DEFAULT_IDLE_TIMEOUT: u64 = 60;

/// What the model needs from outside the script: instance addresses and certificate files.
#[derive(Debug, Default)]
pub struct Needs {
    /// Instance IDs and where the script registers each.
    pub instances: IndexMap<String, Range<usize>>,
    pub certs: Vec<CertRef>,
}

/// Only what the lowering will use is resolved: instances of load balancers with listeners, and
/// the certificates of their HTTPS and SSL listeners.
pub fn needs(state: &State) -> Needs {
    let mut needs = Needs::default();
    for lb in state.lbs.values().filter(|lb| !lb.listeners.is_empty()) {
        for (id, span) in &lb.instances {
            needs
                .instances
                .entry(id.clone())
                .or_insert_with(|| span.clone());
        }
        for cert in lb.listeners.values().filter_map(|l| l.cert.as_ref()) {
            if !needs.certs.iter().any(|c| c.id == cert.id) {
                needs.certs.push(cert.clone());
            }
        }
    }
    needs
}

pub fn lower(state: &State, resolved: &Resolved) -> Result<(Appliance, Report), Diagnostic> {
    let mut lowering = Lowering {
        state,
        resolved,
        model: Appliance::default(),
        report: state.report.clone(),
        ports: HashMap::new(),
    };
    for lb in state.lbs.values() {
        lowering.load_balancer(lb)?;
    }
    if state.lbs.values().all(|lb| lb.listeners.is_empty()) {
        lowering.report.warnings.push(Diagnostic::warning(format!(
            "{}: no listener is defined: the appliance would serve nothing",
            state.src.file
        )));
    }
    Ok((lowering.model, lowering.report))
}

struct Lowering<'a> {
    state: &'a State,
    resolved: &'a Resolved,
    model: Appliance,
    report: Report,
    /// Which load balancer listens on each port: one appliance has one address for all.
    ports: HashMap<u16, (String, usize)>,
}

impl Lowering<'_> {
    fn origin(&self, at: usize) -> Origin {
        self.state.src.origin(at)
    }

    fn note(&mut self, at: usize, name: &str, support: Support, impact: Impact, note: String) {
        let origin = self.origin(at);
        self.report.add(origin, name, support, impact, note);
    }

    fn load_balancer(&mut self, lb: &Lb) -> Result<(), Diagnostic> {
        if lb.listeners.is_empty() {
            if let Some(at) = lb.created {
                self.note(
                    at,
                    "elb-create-lb",
                    Support::Unsupported,
                    Impact::ChangesTraffic,
                    format!(
                        "\"{}\" has no listener left: nothing is served for it",
                        lb.name
                    ),
                );
            }
            return Ok(());
        }
        if lb.health.is_none() {
            let at = lb.created.unwrap_or(lb.listeners[0].at);
            self.note(
                at,
                "elb-configure-healthcheck",
                Support::Partial,
                Impact::ChangesTraffic,
                format!(
                    "\"{}\" has no health check in this script: its pools use passive failure detection instead of ELB's default check",
                    lb.name
                ),
            );
        }
        let mut pools: IndexMap<(u16, Protocol, Option<String>), String> = IndexMap::new();
        for listener in lb.listeners.values() {
            self.claim_port(lb, listener)?;
            let sticky = listener
                .policies
                .iter()
                .find(|p| {
                    matches!(
                        lb.policies.get(*p).map(|p| &p.kind),
                        Some(PolicyKind::LbCookie { .. } | PolicyKind::AppCookie { .. })
                    )
                })
                .cloned();
            let key = (
                listener.instance_port,
                listener.instance_protocol,
                sticky.clone(),
            );
            if lb.instances.is_empty() {
                self.no_instances(lb, listener)?;
                continue;
            }
            let pool = match pools.get(&key) {
                Some(name) => name.clone(),
                None => {
                    let mut name = format!("{}-{}", lb.name, listener.instance_port);
                    if listener.instance_protocol.is_tls() {
                        name.push_str("-tls");
                    }
                    if pools.values().any(|n| *n == name) {
                        name = format!("{name}-l{}", listener.lb_port);
                    }
                    let upstream = self.upstream(lb, listener, &name, sticky.as_deref());
                    if listener.protocol.is_http() {
                        self.model.http.upstreams.push(upstream);
                    } else {
                        self.model.stream.upstreams.push(upstream);
                    }
                    pools.insert(key, name.clone());
                    name
                }
            };
            if listener.protocol.is_http() {
                let server = self.http_server(lb, listener, &pool)?;
                self.model.http.servers.push(server);
            } else {
                let server = self.stream_server(lb, listener, &pool)?;
                self.model.stream.servers.push(server);
            }
        }
        self.backend_policies(lb);
        Ok(())
    }

    fn claim_port(&mut self, lb: &Lb, listener: &Listener) -> Result<(), Diagnostic> {
        if let Some((other, at)) = self.ports.get(&listener.lb_port) {
            return Err(Diagnostic::error(format!(
                "load balancers \"{}\" and \"{other}\" both listen on port {} (\"{other}\" in {}): one appliance serves every load balancer on the same addresses",
                lb.name,
                listener.lb_port,
                self.origin(*at)
            ))
            .at(self.origin(listener.at)));
        }
        self.ports
            .insert(listener.lb_port, (lb.name.clone(), listener.at));
        Ok(())
    }

    /// A listener with no registered instance: ELB answers HTTP with 503 and closes TCP.
    fn no_instances(&mut self, lb: &Lb, listener: &Listener) -> Result<(), Diagnostic> {
        let port = listener.lb_port;
        if listener.protocol.is_http() {
            let mut server = self.server_shell(lb, listener);
            server.locations = vec![location(
                self.origin(listener.at),
                Proxy::default(),
                Some(Return {
                    status: 503,
                    location: None,
                    body: None,
                }),
            )];
            server.tls = self.tls(lb, listener)?;
            self.model.http.servers.push(server);
            self.note(
                listener.at,
                "--listener",
                Support::Partial,
                Impact::NoTrafficChange,
                format!("no instance is registered with \"{}\" in this script: port {port} answers 503, as ELB does", lb.name),
            );
        } else {
            self.note(
                listener.at,
                "--listener",
                Support::Unsupported,
                Impact::ChangesTraffic,
                format!("no instance is registered with \"{}\" in this script: the {} listener on port {port} is left out", lb.name, listener.protocol.as_str()),
            );
        }
        Ok(())
    }

    fn upstream(&self, lb: &Lb, listener: &Listener, name: &str, sticky: Option<&str>) -> Upstream {
        let health_check = lb.health.as_ref().map(|h| {
            let mut check = HealthCheck::new(h.target.clone());
            check.origin = Some(self.origin(h.at));
            check.interval = Duration::from_secs(h.interval);
            check.timeout = Duration::from_secs(h.timeout);
            check.healthy_threshold = h.healthy as u32;
            check.unhealthy_threshold = h.unhealthy as u32;
            check
        });
        let servers = lb
            .instances
            .iter()
            .filter_map(|(id, span)| {
                let ip = self.resolved.addresses.get(id)?;
                let mut server =
                    UpstreamServer::new(SocketAddr::new(*ip, listener.instance_port).to_string());
                server.origin = Some(self.origin(span.start));
                if health_check.is_some() {
                    // ELB judges instances by its health check alone.
                    server.max_fails = 0;
                }
                Some(server)
            })
            .collect();
        let sticky = sticky
            .and_then(|p| lb.policies.get(p))
            .and_then(|p| match &p.kind {
                PolicyKind::LbCookie { expires } => Some(Sticky::LbCookie {
                    cookie: "AWSELB".to_string(),
                    expires: expires.map(Duration::from_secs),
                    domain: None,
                    path: None,
                    origin: Some(self.origin(p.at)),
                }),
                PolicyKind::AppCookie { cookie } => Some(Sticky::AppCookie {
                    cookie: cookie.clone(),
                    origin: Some(self.origin(p.at)),
                }),
                _ => None,
            });
        Upstream {
            name: name.to_string(),
            origin: Some(self.origin(listener.at)),
            balance: if listener.protocol.is_http() {
                Balance::LeastConn
            } else {
                Balance::RoundRobin
            },
            servers,
            keepalive: None,
            keepalive_timeout: None,
            keepalive_requests: None,
            health_check,
            sticky,
            drain_timeout: lb.draining.map(|(s, _)| Duration::from_secs(s)),
        }
    }

    fn server_shell(&self, lb: &Lb, listener: &Listener) -> VirtualServer {
        let mut listen = Listen::new(ListenAddress::Tcp(SocketAddr::new(
            IpAddr::from([0, 0, 0, 0]),
            listener.lb_port,
        )));
        listen.ssl = listener.protocol.is_tls();
        let idle = Duration::from_secs(idle_timeout(lb));
        VirtualServer {
            origin: Some(self.origin(listener.at)),
            listen: vec![listen],
            server_name: Vec::new(),
            tls: Tls::default(),
            proxy: Proxy {
                read_timeout: Some(idle),
                send_timeout: Some(idle),
                ..Proxy::default()
            },
            client: Client {
                keepalive_timeout: Some(idle),
                ..Client::default()
            },
            add_header: None,
            access_log: None,
            return_: None,
            locations: Vec::new(),
        }
    }

    fn http_server(
        &mut self,
        lb: &Lb,
        listener: &Listener,
        pool: &str,
    ) -> Result<VirtualServer, Diagnostic> {
        let mut server = self.server_shell(lb, listener);
        server.tls = self.tls(lb, listener)?;
        let scheme = if listener.instance_protocol == Protocol::Https {
            "https"
        } else {
            "http"
        };
        let pass: ProxyPass = format!("{scheme}://{pool}")
            .parse()
            .map_err(|e: String| Diagnostic::error(e).at(self.origin(listener.at)))?;
        let headers: IndexMap<String, String> = [
            ("X-Forwarded-For", "$proxy_add_x_forwarded_for"),
            ("X-Forwarded-Proto", "$scheme"),
            ("X-Forwarded-Port", "$server_port"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let proxy = Proxy {
            pass: Some(pass),
            set_header: Some(headers),
            ..Proxy::default()
        };
        server.locations = vec![location(self.origin(listener.at), proxy, None)];
        Ok(server)
    }

    fn stream_server(
        &mut self,
        lb: &Lb,
        listener: &Listener,
        pool: &str,
    ) -> Result<StreamServer, Diagnostic> {
        let mut listen = Listen::new(ListenAddress::Tcp(SocketAddr::new(
            IpAddr::from([0, 0, 0, 0]),
            listener.lb_port,
        )));
        listen.ssl = listener.protocol.is_tls();
        let proxy_protocol = self
            .backend_policy_kinds(lb, listener.instance_port)
            .any(|k| matches!(k, PolicyKind::ProxyProtocol { enabled: true }))
            .then_some(ProxyProtocol::V1);
        Ok(StreamServer {
            origin: Some(self.origin(listener.at)),
            listen: vec![listen],
            pass: pool.to_string(),
            tls: self.tls(lb, listener)?,
            connect_timeout: None,
            timeout: Some(Duration::from_secs(idle_timeout(lb))),
            next_upstream: None,
            next_upstream_tries: None,
            next_upstream_timeout: None,
            proxy_protocol,
            upstream_tls: listener.instance_protocol == Protocol::Ssl,
        })
    }

    fn backend_policy_kinds<'b>(
        &self,
        lb: &'b Lb,
        port: u16,
    ) -> impl Iterator<Item = &'b PolicyKind> + 'b {
        lb.backend
            .get(&port)
            .into_iter()
            .flatten()
            .filter_map(|name| lb.policies.get(name).map(|p| &p.kind))
    }

    /// Back-end policies with nothing to act on, or no counterpart, go in the report.
    fn backend_policies(&mut self, lb: &Lb) {
        for (port, names) in &lb.backend {
            for name in names {
                let Some(policy) = lb.policies.get(name) else {
                    continue;
                };
                match &policy.kind {
                    PolicyKind::ProxyProtocol { enabled: true } => {
                        let streams = lb
                            .listeners
                            .values()
                            .any(|l| !l.protocol.is_http() && l.instance_port == *port);
                        let http = lb
                            .listeners
                            .values()
                            .any(|l| l.protocol.is_http() && l.instance_port == *port);
                        if http {
                            self.note(policy.at, name, Support::Partial, Impact::NoTrafficChange,
                                format!("ELB sends the PROXY protocol only on TCP and SSL listeners; the HTTP listeners to port {port} do not"));
                        } else if !streams {
                            self.note(policy.at, name, Support::Skipped, Impact::NoTrafficChange,
                                format!("no TCP or SSL listener in this script sends to instance port {port}"));
                        }
                    }
                    PolicyKind::Other(kind) => {
                        self.note(policy.at, name, Support::Unsupported, Impact::ChangesTraffic,
                            format!("{kind} on instance port {port} has no counterpart in the appliance"));
                    }
                    _ => {}
                }
            }
        }
    }

    /// The listener's certificate and SSL negotiation settings.
    fn tls(&mut self, lb: &Lb, listener: &Listener) -> Result<Tls, Diagnostic> {
        let Some(cert) = &listener.cert else {
            return Ok(Tls::default());
        };
        let files = self.resolved.certs.get(&cert.id).ok_or_else(|| {
            Diagnostic::error(format!("certificate \"{}\" was not resolved", cert.id))
                .at(self.origin(cert.span.start))
        })?;
        let mut tls = Tls {
            certificates: Some(vec![Certificate {
                certificate: files.certificate.clone(),
                key: files.key.clone(),
                chain: files.chain.clone(),
                origin: Some(self.origin(cert.span.start)),
            }]),
            ..Tls::default()
        };
        let ssl = listener.policies.iter().find_map(|p| {
            match lb.policies.get(p).map(|p| (&p.kind, p.at)) {
                Some((PolicyKind::SslNegotiation(s), at)) => Some((p.clone(), s.clone(), at)),
                _ => None,
            }
        });
        let (name, policy, at) = match ssl {
            Some(found) => found,
            None => (
                DEFAULT.to_string(),
                SslPolicy {
                    reference: Some((DEFAULT.to_string(), 0..0)),
                    ..SslPolicy::default()
                },
                listener.at,
            ),
        };
        self.negotiation(&mut tls, &name, &policy, at)?;
        Ok(tls)
    }

    fn negotiation(
        &mut self,
        tls: &mut Tls,
        name: &str,
        policy: &SslPolicy,
        at: usize,
    ) -> Result<(), Diagnostic> {
        let (protocols, ciphers, server_order): (Vec<String>, Option<Vec<String>>, bool) =
            match &policy.reference {
                Some((reference, span)) => {
                    let known = security_policy::predefined(reference).ok_or_else(|| {
                    let names: Vec<&str> = security_policy::PREDEFINED.iter().map(|p| p.name).collect();
                    Diagnostic::error(format!(
                        "unknown predefined security policy \"{reference}\": the appliance knows {}",
                        names.join(", ")
                    ))
                    .at(self.origin(span.start))
                    .with_span(span.clone())
                })?;
                    if known.ciphers.is_none() {
                        self.note(at, name, Support::Partial, Impact::ChangesTraffic,
                        format!("{} is carried over as its protocols; its cipher list is not reproduced and the appliance's defaults apply", known.name));
                    }
                    (
                        known.protocols.iter().map(|p| p.to_string()).collect(),
                        known
                            .ciphers
                            .map(|c| c.iter().map(|s| s.to_string()).collect()),
                        known.server_order,
                    )
                }
                None => (
                    policy
                        .protocols
                        .iter()
                        .filter(|(_, on)| *on)
                        .map(|(p, _)| p.clone())
                        .collect(),
                    (!policy.ciphers.is_empty()).then(|| policy.ciphers.clone()),
                    policy.server_order,
                ),
            };
        let mut versions = Vec::new();
        for p in &protocols {
            match TlsVersion::from_nginx(p) {
                Some(v) => versions.push(v),
                None => self.note(
                    at,
                    name,
                    Support::Unsupported,
                    Impact::ChangesTraffic,
                    format!("{p} is not offered: the appliance speaks TLS 1.0 and later only"),
                ),
            }
        }
        if versions.is_empty() {
            return Err(Diagnostic::error(format!(
                "SSL negotiation policy \"{name}\" enables no protocol the appliance speaks (TLSv1, TLSv1.1, TLSv1.2)"
            ))
            .at(self.origin(at)));
        }
        tls.protocols = Some(versions);
        tls.ciphers = ciphers.map(|c| c.join(":"));
        tls.prefer_server_ciphers = Some(server_order);
        Ok(())
    }
}

fn idle_timeout(lb: &Lb) -> u64 {
    lb.idle_timeout.map_or(DEFAULT_IDLE_TIMEOUT, |(s, _)| s)
}

fn location(origin: Origin, proxy: Proxy, return_: Option<Return>) -> Location {
    Location {
        origin: Some(origin),
        kind: LocationKind::Prefix,
        path: "/".to_string(),
        proxy,
        client: Client::default(),
        add_header: None,
        access_log: None,
        return_,
        locations: Vec::new(),
    }
}

/// Certificate files a listener's certificate resolved to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertFiles {
    pub certificate: PathBuf,
    pub key: PathBuf,
    pub chain: Option<PathBuf>,
}
