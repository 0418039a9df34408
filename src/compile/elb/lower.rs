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
            access: None,
            real_ip: Default::default(),
            limits: Default::default(),
            auth: Default::default(),
            secure_link: Default::default(),
            sub_filter: Default::default(),
            expires: None,
            valid_referers: None,
            gzip: Default::default(),
            charset: Default::default(),
            resolver: Default::default(),
            autoindex: Default::default(),
            conditional: Default::default(),
            access_log: None,
            root: None,
            default_type: None,
            types: None,
            index: None,
            try_files: None,
            error_page: None,
            recursive_error_pages: None,
            log_not_found: None,
            return_: None,
            script: Vec::new(),
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
            pass: Some(pool.to_string()),
            respond: None,
            ssl_preread: false,
            resolver: Default::default(),
            preread_timeout: None,
            preread_buffer_size: None,
            tls: self.tls(lb, listener)?,
            connect_timeout: None,
            timeout: Some(Duration::from_secs(idle_timeout(lb))),
            next_upstream: None,
            next_upstream_tries: None,
            next_upstream_timeout: None,
            proxy_protocol,
            upstream_tls: listener.instance_protocol == Protocol::Ssl,
            access: None,
            limits: Default::default(),
            access_log: None,
            real_ip_from: None,
            upstream_tls_check: Default::default(),
            proxy_protocol_timeout: None,
            handshake_timeout: None,
            half_close: false,
            responses: None,
            requests: None,
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
        internal: false,
        alias: None,
        proxy,
        client: Client::default(),
        add_header: None,
        access: None,
        real_ip: Default::default(),
        limits: Default::default(),
        auth: Default::default(),
        secure_link: Default::default(),
        sub_filter: Default::default(),
        expires: None,
        valid_referers: None,
        gzip: Default::default(),
        charset: Default::default(),
        resolver: Default::default(),
        autoindex: Default::default(),
        conditional: Default::default(),
        access_log: None,
        root: None,
        default_type: None,
        types: None,
        index: None,
        try_files: None,
        error_page: None,
        recursive_error_pages: None,
        log_not_found: None,
        return_,
        script: Vec::new(),
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

#[cfg(test)]
mod tests {
    use super::super::{script, semantics, Source};
    use super::*;
    use crate::compile::Options;

    /// Compiles a script with instances i-1, i-2 at 10.0.0.1, 10.0.0.2 and every certificate at
    /// /certs/NAME.crt.
    fn lower_text(text: &str) -> Result<(Appliance, Report), Diagnostic> {
        let src = Source::new("t.sh", text);
        let s = script::read(&src)?;
        let state = semantics::apply(&s, &src, &Options::default())?;
        let mut resolved = Resolved::default();
        for (i, id) in ["i-1", "i-2"].iter().enumerate() {
            resolved
                .addresses
                .insert(id.to_string(), IpAddr::from([10, 0, 0, i as u8 + 1]));
        }
        for cert in needs(&state).certs {
            resolved.certs.insert(
                cert.id.clone(),
                CertFiles {
                    certificate: format!("/certs/{}.crt", cert.name).into(),
                    key: format!("/certs/{}.key", cert.name).into(),
                    chain: None,
                },
            );
        }
        let lowered = lower(&state, &resolved)?;
        crate::config::validate(&lowered.0)?;
        Ok(lowered)
    }

    const ARN: &str = "arn:aws:iam::123456789012:server-certificate/site";

    #[test]
    fn https_to_https_instances_and_ssl_to_ssl() {
        let (m, _) = lower_text(&format!(
            "elb-create-lb a --listener \"protocol=HTTPS, lb-port=443, instance-port=8443, instance-protocol=HTTPS, cert-id={ARN}\" --listener \"protocol=SSL, lb-port=993, instance-port=993, instance-protocol=SSL, cert-id={ARN}\"\nelb-register-instances-with-lb a --instances i-1"
        ))
        .unwrap();
        let pass = m.http.servers[0].locations[0].proxy.pass.as_ref().unwrap();
        assert_eq!(pass.to_string(), "https://a-8443-tls");
        assert_eq!(m.http.upstreams[0].servers[0].address, "10.0.0.1:8443");
        let s = &m.stream.servers[0];
        assert!(s.listen[0].ssl && s.upstream_tls);
        assert_eq!(
            s.tls.certificates.as_ref().unwrap()[0].certificate,
            PathBuf::from("/certs/site.crt")
        );
    }

    #[test]
    fn stickiness_draining_and_idle_timeout() {
        let (m, _) = lower_text(
            "elb-create-lb a --listener \"protocol=HTTP, lb-port=80, instance-port=80\" --listener \"protocol=HTTP, lb-port=81, instance-port=80\" --listener \"protocol=TCP, lb-port=25, instance-port=25\"\n\
             elb-register-instances-with-lb a --instances i-1,i-2\n\
             elb-create-app-cookie-stickiness-policy a --policy-name app --cookie-name JSESSIONID\n\
             elb-set-lb-policies-of-listener a --lb-port 81 --policy-names app\n\
             elb-modify-lb-attributes a --connection-draining \"enabled=true, timeout=120\" --connection-settings \"idletimeout=300\"",
        )
        .unwrap();
        // Port 80 and 81 reach the same instance port, but only 81 is sticky: two pools.
        let names: Vec<&str> = m.http.upstreams.iter().map(|u| u.name.as_str()).collect();
        assert_eq!(names, ["a-80", "a-80-l81"]);
        assert_eq!(m.http.upstreams[0].sticky, None);
        assert!(matches!(
            &m.http.upstreams[1].sticky,
            Some(Sticky::AppCookie { cookie, .. }) if cookie == "JSESSIONID"
        ));
        for pool in m.http.upstreams.iter().chain(&m.stream.upstreams) {
            assert_eq!(pool.drain_timeout, Some(Duration::from_secs(120)));
            assert_eq!(pool.servers.len(), 2);
        }
        assert_eq!(
            m.http.servers[0].client.keepalive_timeout,
            Some(Duration::from_secs(300))
        );
        assert_eq!(m.stream.servers[0].timeout, Some(Duration::from_secs(300)));
    }

    #[test]
    fn proxy_protocol_goes_to_the_streams_on_its_port() {
        let (m, report) = lower_text(
            "elb-create-lb a --listener \"protocol=TCP, lb-port=443, instance-port=443\" --listener \"protocol=TCP, lb-port=22, instance-port=22\" --listener \"protocol=HTTP, lb-port=80, instance-port=443\"\n\
             elb-register-instances-with-lb a --instances i-1\n\
             elb-create-lb-policy a --policy-name pp --policy-type ProxyProtocolPolicyType --attribute \"name=ProxyProtocol, value=true\"\n\
             elb-set-lb-policies-for-backend-server a --instance-port 443 --policy-names pp",
        )
        .unwrap();
        let by_port: Vec<(String, Option<ProxyProtocol>)> = m
            .stream
            .servers
            .iter()
            .map(|s| (s.listen[0].address.to_string(), s.proxy_protocol))
            .collect();
        assert_eq!(
            by_port,
            [
                ("0.0.0.0:443".to_string(), Some(ProxyProtocol::V1)),
                ("0.0.0.0:22".to_string(), None)
            ]
        );
        assert!(report
            .items
            .iter()
            .any(|i| i.name == "pp" && i.note.contains("only on TCP and SSL")));
    }

    #[test]
    fn ssl_negotiation_policies() {
        let base = format!(
            "elb-create-lb a --listener \"protocol=HTTPS, lb-port=443, instance-port=80, cert-id={ARN}\"\nelb-register-instances-with-lb a --instances i-1\n"
        );
        let (m, _) = lower_text(&format!(
            "{base}elb-create-lb-policy a --policy-name tls --policy-type SSLNegotiationPolicyType --attribute \"name=Reference-Security-Policy, value=ELBSecurityPolicy-TLS-1-2-2017-01\"\nelb-set-lb-policies-of-listener a --lb-port 443 --policy-names tls"
        ))
        .unwrap();
        let tls = &m.http.servers[0].tls;
        assert_eq!(tls.protocols.as_deref(), Some(&[TlsVersion::Tls12][..]));
        assert!(tls
            .ciphers
            .as_deref()
            .unwrap()
            .starts_with("ECDHE-ECDSA-AES128-GCM-SHA256:"));
        let (m, report) = lower_text(&format!(
            "{base}elb-create-lb-policy a --policy-name custom --policy-type SSLNegotiationPolicyType --attribute \"name=Protocol-SSLv3, value=true\" --attribute \"name=Protocol-TLSv1.2, value=true\" --attribute \"name=AES128-SHA, value=true\" --attribute \"name=Server-Defined-Cipher-Order, value=false\"\nelb-set-lb-policies-of-listener a --lb-port 443 --policy-names custom"
        ))
        .unwrap();
        let tls = &m.http.servers[0].tls;
        assert_eq!(tls.protocols.as_deref(), Some(&[TlsVersion::Tls12][..]));
        assert_eq!(tls.ciphers.as_deref(), Some("AES128-SHA"));
        assert_eq!(tls.prefer_server_ciphers, Some(false));
        assert!(report
            .items
            .iter()
            .any(|i| i.note.starts_with("SSLv3 is not offered")));
        let e = lower_text(&format!(
            "{base}elb-create-lb-policy a --policy-name old --policy-type SSLNegotiationPolicyType --attribute \"name=Reference-Security-Policy, value=ELBSecurityPolicy-1999-01\"\nelb-set-lb-policies-of-listener a --lb-port 443 --policy-names old"
        ))
        .unwrap_err();
        assert!(
            e.message
                .starts_with("unknown predefined security policy \"ELBSecurityPolicy-1999-01\""),
            "{}",
            e.message
        );
        assert_eq!(e.origin.unwrap().line, 3);
    }

    #[test]
    fn several_load_balancers_are_several_services() {
        let (m, _) = lower_text(
            "elb-create-lb a --listener \"protocol=HTTP, lb-port=80, instance-port=80\"\n\
             elb-create-lb b --listener \"protocol=HTTP, lb-port=8080, instance-port=80\"\n\
             elb-register-instances-with-lb a --instances i-1\n\
             elb-register-instances-with-lb b --instances i-2",
        )
        .unwrap();
        let pools: Vec<(&str, &str)> = m
            .http
            .upstreams
            .iter()
            .map(|u| (u.name.as_str(), u.servers[0].address.as_str()))
            .collect();
        assert_eq!(pools, [("a-80", "10.0.0.1:80"), ("b-80", "10.0.0.2:80")]);
        assert_eq!(m.http.servers.len(), 2);
        let e = lower_text(
            "elb-create-lb a --listener \"protocol=HTTP, lb-port=80, instance-port=80\"\nelb-create-lb b --listener \"protocol=TCP, lb-port=80, instance-port=80\"",
        )
        .unwrap_err();
        assert!(
            e.message
                .starts_with("load balancers \"b\" and \"a\" both listen on port 80"),
            "{}",
            e.message
        );
        assert_eq!(e.origin.unwrap().line, 2);
    }

    #[test]
    fn only_what_is_served_is_resolved() {
        let src = Source::new(
            "t.sh",
            "elb-register-instances-with-lb elsewhere --instances i-9\nelb-create-lb a --listener \"protocol=HTTP, lb-port=80, instance-port=80\"\nelb-register-instances-with-lb a --instances i-1",
        );
        let s = script::read(&src).unwrap();
        let state = semantics::apply(&s, &src, &Options::default()).unwrap();
        let n = needs(&state);
        assert_eq!(n.instances.keys().collect::<Vec<_>>(), ["i-1"]);
    }
}
