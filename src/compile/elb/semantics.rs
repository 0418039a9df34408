//! The commands applied in script order to the state of each load balancer, with the ELB API's
//! own validation (ranges, required options, listeners and policies that must exist), so that a
//! script the API would have refused is refused here, at the offending option value.
//!
//! A command may name a load balancer the script did not create: the script then changes an
//! existing one. What the script says about it is kept and the report says the rest is unknown.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::path::PathBuf;

use indexmap::IndexMap;

use super::command::{Command, Kind};
use super::script::{Item, Script};
use super::values::{boolean, number_in, Env, Value};
use super::Source;
use crate::compile::diag::Diagnostic;
use crate::compile::{Impact, Options, Report, Support};
use crate::config::HealthTarget;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Protocol {
    Http,
    Https,
    Tcp,
    Ssl,
}

impl Protocol {
    fn parse(s: &str) -> Option<Protocol> {
        match s.to_ascii_uppercase().as_str() {
            "HTTP" => Some(Protocol::Http),
            "HTTPS" => Some(Protocol::Https),
            "TCP" => Some(Protocol::Tcp),
            "SSL" => Some(Protocol::Ssl),
            _ => None,
        }
    }

    /// HTTP and HTTPS listeners are proxied request by request; TCP and SSL byte by byte.
    pub fn is_http(self) -> bool {
        matches!(self, Protocol::Http | Protocol::Https)
    }

    pub fn is_tls(self) -> bool {
        matches!(self, Protocol::Https | Protocol::Ssl)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Http => "HTTP",
            Protocol::Https => "HTTPS",
            Protocol::Tcp => "TCP",
            Protocol::Ssl => "SSL",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listener {
    pub protocol: Protocol,
    pub lb_port: u16,
    pub instance_protocol: Protocol,
    pub instance_port: u16,
    pub cert: Option<CertRef>,
    /// Policies attached with elb-set-lb-policies-of-listener.
    pub policies: Vec<String>,
    /// Where the `--listener` value is.
    pub at: usize,
}

/// A certificate named by ARN, and the name it is looked up by.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertRef {
    pub id: String,
    /// The IAM server certificate's name (the ARN's last path segment) or the ACM certificate ID.
    pub name: String,
    pub acm: bool,
    pub span: Range<usize>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Health {
    pub target: HealthTarget,
    pub interval: u64,
    pub timeout: u64,
    pub healthy: u64,
    pub unhealthy: u64,
    pub at: usize,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PolicyKind {
    LbCookie {
        expires: Option<u64>,
    },
    AppCookie {
        cookie: String,
    },
    ProxyProtocol {
        enabled: bool,
    },
    SslNegotiation(SslPolicy),
    /// A type the appliance has no counterpart for (back-end authentication, public keys).
    Other(String),
}

#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct SslPolicy {
    /// `Protocol-TLSv1.2` and the like, with their setting.
    pub protocols: Vec<(String, bool)>,
    /// Ciphers set to true, in the order written.
    pub ciphers: Vec<String>,
    pub server_order: bool,
    /// `Reference-Security-Policy=ELBSecurityPolicy-...` and where it is written.
    pub reference: Option<(String, Range<usize>)>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    pub kind: PolicyKind,
    pub at: usize,
}

#[derive(Clone, Debug, Default)]
pub struct Lb {
    pub name: String,
    /// Where elb-create-lb made it; `None` for a load balancer the script only changes.
    pub created: Option<usize>,
    pub listeners: IndexMap<u16, Listener>,
    pub health: Option<Health>,
    /// Registered instances and where each was named.
    pub instances: IndexMap<String, Range<usize>>,
    pub policies: IndexMap<String, Policy>,
    /// Policies per instance port (elb-set-lb-policies-for-backend-server).
    pub backend: BTreeMap<u16, Vec<String>>,
    /// Connection draining timeout in seconds, when enabled.
    pub draining: Option<(u64, usize)>,
    pub idle_timeout: Option<(u64, usize)>,
}

/// A certificate the script uploads with iam-servercertupload: local PEM files.
#[derive(Clone, Debug)]
pub struct Upload {
    pub name: String,
    pub body: (PathBuf, Range<usize>),
    pub key: (PathBuf, Range<usize>),
    pub chain: Option<(PathBuf, Range<usize>)>,
    pub at: usize,
}

#[derive(Debug)]
pub struct State {
    pub lbs: IndexMap<String, Lb>,
    pub uploads: IndexMap<String, Upload>,
    pub report: Report,
    pub warnings: Vec<Diagnostic>,
    pub src: Source,
}

/// Applies the script's items in order.
pub fn apply(script: &Script, src: &Source, options: &Options) -> Result<State, Diagnostic> {
    let mut env = Env::new(&options.vars);
    let mut state = State {
        lbs: IndexMap::new(),
        uploads: IndexMap::new(),
        report: Report::default(),
        warnings: Vec::new(),
        src: src.clone(),
    };
    let mut deleted: HashMap<String, usize> = HashMap::new();
    for item in &script.items {
        match item {
            Item::Assign { name, value, at } => {
                if !env.assign(name, value, src) {
                    state.report.add(
                        src.origin(*at),
                        name,
                        Support::Skipped,
                        Impact::NoTrafficChange,
                        "overridden by --var",
                    );
                }
            }
            Item::Skipped { at, name, note } => state.report.add(
                src.origin(*at),
                name,
                Support::Skipped,
                Impact::NoTrafficChange,
                *note,
            ),
            Item::Command(command) => Ctx {
                state: &mut state,
                env: &env,
                src,
                cmd: command,
                deleted: &mut deleted,
            }
            .run()?,
        }
    }
    Ok(state)
}

struct Ctx<'a> {
    state: &'a mut State,
    env: &'a Env,
    src: &'a Source,
    cmd: &'a Command,
    deleted: &'a mut HashMap<String, usize>,
}

impl Ctx<'_> {
    fn name(&self) -> &'static str {
        self.cmd.name()
    }

    fn error(&self, message: impl Into<String>, span: Range<usize>) -> Diagnostic {
        self.src
            .error(format!("{}: {}", self.name(), message.into()), span)
    }

    fn report(&mut self, support: Support, impact: Impact, note: impl Into<String>) {
        let origin = self.src.origin(self.cmd.at);
        self.state
            .report
            .add(origin, self.name(), support, impact, note);
    }

    fn value(&self, key: &str) -> Result<Option<Value>, Diagnostic> {
        match self.cmd.get(key).and_then(|o| o.value.as_ref()) {
            Some(word) => self.env.expand(word, self.src).map(Some),
            None => Ok(None),
        }
    }

    fn required(&self, key: &str) -> Result<Value, Diagnostic> {
        self.value(key)?.ok_or_else(|| {
            self.error(
                format!("option --{key} is required"),
                self.cmd.name_span.clone(),
            )
        })
    }

    fn values(&self, key: &str) -> Result<Vec<Value>, Diagnostic> {
        self.cmd
            .values(key)
            .filter_map(|o| o.value.as_ref())
            .map(|w| self.env.expand(w, self.src))
            .collect()
    }

    /// What an option was written as, for the report (never expanded: not-applicable options
    /// may name variables nobody set).
    fn written(&self, key: &str) -> Option<String> {
        self.cmd
            .get(key)
            .and_then(|o| o.value.as_ref())
            .map(|w| w.display())
    }

    fn lb_name(&self) -> Result<String, Diagnostic> {
        let word = self.cmd.lb.as_ref().ok_or_else(|| {
            self.error(
                "the load balancer name is missing",
                self.cmd.name_span.clone(),
            )
        })?;
        let v = self.env.expand(word, self.src)?;
        let n = &v.text;
        let valid = !n.is_empty()
            && n.len() <= 32
            && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !n.starts_with('-')
            && !n.ends_with('-');
        if !valid {
            return Err(self.error(
                format!("\"{n}\" is not a load balancer name: ELB allows 1 to 32 letters, digits and inner hyphens"),
                v.span.clone(),
            ));
        }
        Ok(v.text)
    }

    /// The load balancer a command changes; one the script did not create is taken as existing.
    fn lb(&mut self, name: &str) -> Result<&mut Lb, Diagnostic> {
        if let Some(at) = self.deleted.get(name) {
            return Err(self.error(
                format!(
                    "load balancer \"{name}\" was deleted in {}",
                    self.src.origin(*at)
                ),
                self.cmd.name_span.clone(),
            ));
        }
        if !self.state.lbs.contains_key(name) {
            let note = format!(
                "load balancer \"{name}\" is not created by this script: its listeners, instances and settings made elsewhere are not known"
            );
            self.report(Support::Partial, Impact::ChangesTraffic, note);
            self.state.lbs.insert(
                name.to_string(),
                Lb {
                    name: name.to_string(),
                    ..Lb::default()
                },
            );
        }
        Ok(&mut self.state.lbs[name])
    }

    fn run(&mut self) -> Result<(), Diagnostic> {
        let mapped = match self.cmd.spec.kind {
            Kind::CreateLb => self.create_lb()?,
            Kind::CreateLbListeners => self.create_listeners()?,
            Kind::DeleteLbListeners => self.delete_listeners()?,
            Kind::ConfigureHealthcheck => self.health_check()?,
            Kind::RegisterInstances => self.register(true)?,
            Kind::DeregisterInstances => self.register(false)?,
            Kind::EnableZones | Kind::DisableZones => {
                let name = self.lb_name()?;
                self.lb(&name)?;
                self.not_applicable("availability zones: the appliance serves from where it runs");
                false
            }
            Kind::ApplySecurityGroups => {
                self.not_applicable("security groups belong to the appliance's own instance");
                false
            }
            Kind::AttachSubnets | Kind::DetachSubnets => {
                self.not_applicable("subnets belong to the appliance's own instance");
                false
            }
            Kind::AddTags | Kind::RemoveTags => {
                self.not_applicable("tags do not change traffic");
                false
            }
            Kind::CreateLbCookieStickinessPolicy => self.lb_cookie_policy()?,
            Kind::CreateAppCookieStickinessPolicy => self.app_cookie_policy()?,
            Kind::CreateLbPolicy => self.create_policy()?,
            Kind::DeleteLbPolicy => self.delete_policy()?,
            Kind::SetLbPoliciesOfListener => self.listener_policies()?,
            Kind::SetLbPoliciesForBackendServer => self.backend_policies()?,
            Kind::SetLbListenerSslCert => self.listener_cert()?,
            Kind::ModifyLbAttributes => self.attributes()?,
            Kind::DeleteLb => {
                let name = self.lb_name()?;
                if self.state.lbs.shift_remove(&name).is_none() {
                    self.report(
                        Support::Skipped,
                        Impact::NoTrafficChange,
                        format!("deletes \"{name}\", which this script does not serve"),
                    );
                }
                self.deleted.insert(name, self.cmd.at);
                true
            }
            Kind::ReadOnly => {
                self.report(
                    Support::Skipped,
                    Impact::NoTrafficChange,
                    "reads state and changes nothing",
                );
                false
            }
            Kind::IamServerCertUpload => self.upload()?,
        };
        if mapped {
            self.state.report.mapped(self.name());
        }
        Ok(())
    }

    fn not_applicable(&mut self, why: &str) {
        self.report(
            Support::Unsupported,
            Impact::NoTrafficChange,
            why.to_string(),
        );
    }

    fn create_lb(&mut self) -> Result<bool, Diagnostic> {
        let name = self.lb_name()?;
        if let Some(at) = self.state.lbs.get(&name).and_then(|lb| lb.created) {
            return Err(self.error(
                format!(
                    "load balancer \"{name}\" is already created in {} (every branch of an if is applied, in order)",
                    self.src.origin(at)
                ),
                self.cmd.lb.as_ref().map_or(self.cmd.name_span.clone(), |w| w.span.clone()),
            ));
        }
        let listeners = self.listeners()?;
        if listeners.is_empty() {
            return Err(self.error(
                "at least one --listener is required",
                self.cmd.name_span.clone(),
            ));
        }
        self.deleted.remove(&name);
        let at = self.cmd.at;
        let known = self.state.lbs.contains_key(&name);
        let lb = self.state.lbs.entry(name.clone()).or_insert_with(|| Lb {
            name: name.clone(),
            ..Lb::default()
        });
        lb.created = Some(at);
        if known {
            self.state.warnings.push(self.src.warning(
                format!("load balancer \"{name}\" is created after commands that changed it; they are kept"),
                self.cmd.name_span.clone(),
            ));
        }
        for l in listeners {
            self.add_listener(&name, l)?;
        }
        for (key, what) in [
            ("availability-zones", "availability zones"),
            ("subnets", "subnets"),
            ("security-groups", "security groups"),
        ] {
            if let Some(w) = self.written(key) {
                self.not_applicable(&format!("{what} \"{w}\": not applicable to one appliance"));
            }
        }
        if let Some(scheme) = self.written("scheme") {
            self.not_applicable(&format!(
                "scheme \"{scheme}\": the appliance is reachable where its addresses are"
            ));
        }
        Ok(true)
    }

    fn create_listeners(&mut self) -> Result<bool, Diagnostic> {
        let name = self.lb_name()?;
        self.lb(&name)?;
        let listeners = self.listeners()?;
        if listeners.is_empty() {
            return Err(self.error(
                "at least one --listener is required",
                self.cmd.name_span.clone(),
            ));
        }
        for l in listeners {
            self.add_listener(&name, l)?;
        }
        Ok(true)
    }

    fn add_listener(&mut self, lb: &str, l: Listener) -> Result<(), Diagnostic> {
        let lb = &mut self.state.lbs[lb];
        if let Some(old) = lb.listeners.get(&l.lb_port) {
            let same = old.protocol == l.protocol
                && old.instance_port == l.instance_port
                && old.instance_protocol == l.instance_protocol
                && old.cert.as_ref().map(|c| &c.id) == l.cert.as_ref().map(|c| &c.id);
            if !same {
                let (port, at) = (l.lb_port, old.at);
                return Err(self.error(
                    format!(
                        "a different listener on port {port} already exists (created in {}); delete it first",
                        self.src.origin(at)
                    ),
                    l.at..l.at,
                ));
            }
            return Ok(());
        }
        lb.listeners.insert(l.lb_port, l);
        Ok(())
    }

    /// The `--listener` values: `protocol=..., lb-port=..., instance-port=...[,
    /// instance-protocol=...][, cert-id=...]` in any order.
    fn listeners(&mut self) -> Result<Vec<Listener>, Diagnostic> {
        let mut out = Vec::new();
        for value in self.values("listener")? {
            let mut protocol = None;
            let mut instance_protocol = None;
            let (mut lb_port, mut instance_port, mut cert) = (None, None, None);
            for p in value.pairs(self.src, &format!("{}: --listener", self.name()))? {
                match p.key.as_str() {
                    "protocol" | "instance-protocol" => {
                        let proto = Protocol::parse(p.value).ok_or_else(|| {
                            self.error(
                                format!("{} \"{}\" is not HTTP, HTTPS, TCP or SSL", p.key, p.value),
                                p.span.clone(),
                            )
                        })?;
                        if p.key == "protocol" {
                            protocol = Some(proto);
                        } else {
                            instance_protocol = Some((proto, p.span.clone()));
                        }
                    }
                    "lb-port" | "instance-port" => {
                        let what = format!("{} {}", self.name(), p.key);
                        let port = number_in(p.value, p.span.clone(), 1..=65535, &what, "", self.src)?
                            as u16;
                        if p.key == "lb-port" {
                            lb_port = Some(port);
                        } else {
                            instance_port = Some(port);
                        }
                    }
                    "cert-id" => cert = Some(self.cert_ref(p.value, p.span.clone())?),
                    _ => {
                        return Err(self.error(
                            format!(
                                "unknown listener field \"{}\": expected protocol, lb-port, instance-port, instance-protocol or cert-id",
                                p.key
                            ),
                            p.key_span.clone(),
                        ))
                    }
                }
            }
            let missing = |what: &str| {
                self.error(
                    format!("--listener \"{}\" has no {what}", value.text),
                    value.text_span(),
                )
            };
            let protocol = protocol.ok_or_else(|| missing("protocol"))?;
            let lb_port = lb_port.ok_or_else(|| missing("lb-port"))?;
            let instance_port = instance_port.ok_or_else(|| missing("instance-port"))?;
            let instance_protocol = match instance_protocol {
                None if protocol.is_http() => Protocol::Http,
                None => Protocol::Tcp,
                Some((p, span)) => {
                    if p.is_http() != protocol.is_http() {
                        return Err(self.error(
                            format!(
                                "instance-protocol {} cannot follow a {} listener: HTTP and HTTPS go to HTTP or HTTPS, TCP and SSL to TCP or SSL",
                                p.as_str(),
                                protocol.as_str()
                            ),
                            span,
                        ));
                    }
                    p
                }
            };
            if protocol.is_tls() && cert.is_none() {
                return Err(self.error(
                    format!(
                        "the {} listener on port {lb_port} has no cert-id: an HTTPS or SSL listener needs a server certificate (cert-id=arn:aws:iam::ACCOUNT:server-certificate/NAME)",
                        protocol.as_str()
                    ),
                    value.text_span(),
                ));
            }
            if !protocol.is_tls() && cert.is_some() {
                self.state.warnings.push(self.src.warning(
                    format!(
                        "{}: the {} listener on port {lb_port} ignores its cert-id",
                        self.name(),
                        protocol.as_str()
                    ),
                    value.text_span(),
                ));
                cert = None;
            }
            out.push(Listener {
                protocol,
                lb_port,
                instance_protocol,
                instance_port,
                cert,
                policies: Vec::new(),
                at: value.span.start,
            });
        }
        Ok(out)
    }

    /// A certificate ARN: IAM (`arn:aws:iam::123456789012:server-certificate/path/name`) or ACM
    /// (`arn:aws:acm:region:123456789012:certificate/id`).
    fn cert_ref(&self, id: &str, span: Range<usize>) -> Result<CertRef, Diagnostic> {
        let parts: Vec<&str> = id.splitn(6, ':').collect();
        let parsed = match parts.as_slice() {
            ["arn", _, "iam", "", _, resource] => resource
                .strip_prefix("server-certificate/")
                .and_then(|p| p.rsplit('/').next())
                .filter(|n| !n.is_empty())
                .map(|n| (n.to_string(), false)),
            ["arn", _, "acm", _, _, resource] => resource
                .strip_prefix("certificate/")
                .filter(|n| !n.is_empty())
                .map(|n| (n.to_string(), true)),
            _ => None,
        };
        let (name, acm) = parsed.ok_or_else(|| {
            self.error(
                format!(
                    "cert-id \"{id}\" is not a certificate ARN: expected arn:aws:iam::ACCOUNT:server-certificate/NAME (or an ACM certificate ARN)"
                ),
                span.clone(),
            )
        })?;
        Ok(CertRef {
            id: id.to_string(),
            name,
            acm,
            span,
        })
    }

    fn delete_listeners(&mut self) -> Result<bool, Diagnostic> {
        let name = self.lb_name()?;
        let ports = self.required("lb-ports")?;
        let mut gone = Vec::new();
        for p in ports.list() {
            let port = number_in(
                p.text,
                p.span.clone(),
                1..=65535,
                "--lb-ports",
                "",
                self.src,
            )? as u16;
            gone.push(port);
        }
        let lb = self.lb(&name)?;
        let missing: Vec<u16> = gone
            .into_iter()
            .filter(|p| lb.listeners.shift_remove(p).is_none())
            .collect();
        if !missing.is_empty() {
            let list: Vec<String> = missing.iter().map(u16::to_string).collect();
            self.report(
                Support::Skipped,
                Impact::NoTrafficChange,
                format!("no listener on port {} in this script", list.join(", ")),
            );
        }
        Ok(true)
    }

    fn health_check(&mut self) -> Result<bool, Diagnostic> {
        let name = self.lb_name()?;
        let missing: Vec<&str> = [
            "target",
            "interval",
            "timeout",
            "healthy-threshold",
            "unhealthy-threshold",
        ]
        .into_iter()
        .filter(|k| self.cmd.get(k).is_none())
        .collect();
        if !missing.is_empty() {
            let list: Vec<String> = missing.iter().map(|k| format!("--{k}")).collect();
            return Err(self.error(
                format!("{} required: ELB needs all five settings", list.join(", ")),
                self.cmd.name_span.clone(),
            ));
        }
        let target = self.required("target")?;
        let parsed: HealthTarget = target
            .text
            .parse()
            .map_err(|e: String| self.error(e, target.span.clone()))?;
        if parsed
            .path
            .as_ref()
            .is_some_and(|p| p.chars().count() > 1024)
        {
            return Err(self.error(
                "the health check path is longer than ELB's 1024 characters",
                target.span.clone(),
            ));
        }
        let seconds = |key: &str, range| -> Result<(u64, Range<usize>), Diagnostic> {
            let v = self.required(key)?;
            let n = number_in(
                &v.text,
                v.span.clone(),
                range,
                &format!("{}: --{key}", self.name()),
                " seconds",
                self.src,
            )?;
            Ok((n, v.span.clone()))
        };
        let (interval, _) = seconds("interval", 5..=300)?;
        let (timeout, timeout_span) = seconds("timeout", 2..=60)?;
        if timeout >= interval {
            return Err(self.error(
                format!("--timeout {timeout} must be less than --interval {interval}"),
                timeout_span,
            ));
        }
        let threshold = |key: &str| -> Result<u64, Diagnostic> {
            let v = self.required(key)?;
            number_in(
                &v.text,
                v.span.clone(),
                2..=10,
                &format!("{}: --{key}", self.name()),
                "",
                self.src,
            )
        };
        let healthy = threshold("healthy-threshold")?;
        let unhealthy = threshold("unhealthy-threshold")?;
        let at = self.cmd.at;
        self.lb(&name)?.health = Some(Health {
            target: parsed,
            interval,
            timeout,
            healthy,
            unhealthy,
            at,
        });
        Ok(true)
    }

    fn register(&mut self, add: bool) -> Result<bool, Diagnostic> {
        let name = self.lb_name()?;
        let mut ids = Vec::new();
        for v in self.values("instances")? {
            for p in v.list() {
                ids.push((p.text.to_string(), p.span));
            }
        }
        if ids.is_empty() {
            return Err(self.error("--instances names no instance", self.cmd.name_span.clone()));
        }
        let odd: Vec<String> = ids
            .iter()
            .filter(|(id, _)| !looks_like_instance(id))
            .map(|(id, _)| format!("\"{id}\""))
            .collect();
        if !odd.is_empty() {
            let span = self.cmd.name_span.clone();
            self.state.warnings.push(self.src.warning(
                format!(
                    "{}: {} does not look like an instance ID (i-0123abcd): a placeholder, or an unquoted shell glob?",
                    self.name(),
                    odd.join(", ")
                ),
                span,
            ));
        }
        let lb = self.lb(&name)?;
        let mut absent = Vec::new();
        for (id, span) in ids {
            if add {
                lb.instances.entry(id).or_insert(span);
            } else if lb.instances.shift_remove(&id).is_none() {
                absent.push(id);
            }
        }
        if !absent.is_empty() {
            self.report(
                Support::Skipped,
                Impact::NoTrafficChange,
                format!("{} not registered by this script", absent.join(", ")),
            );
        }
        Ok(true)
    }

    fn policy_name(&self) -> Result<(String, Range<usize>), Diagnostic> {
        let v = self.required("policy-name")?;
        if v.text.is_empty()
            || !v
                .text
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-')
        {
            return Err(self.error(
                format!(
                    "policy name \"{}\" may hold only letters, digits and hyphens",
                    v.text
                ),
                v.span.clone(),
            ));
        }
        Ok((v.text, v.span))
    }

    fn add_policy(&mut self, kind: PolicyKind) -> Result<bool, Diagnostic> {
        let name = self.lb_name()?;
        let (policy, span) = self.policy_name()?;
        let at = self.cmd.at;
        if let Some(old) = self.lb(&name)?.policies.get(&policy).map(|p| p.at) {
            let first = self.src.origin(old);
            return Err(self.error(
                format!("policy \"{policy}\" already exists for \"{name}\" (created in {first})"),
                span,
            ));
        }
        self.lb(&name)?.policies.insert(policy, Policy { kind, at });
        Ok(true)
    }

    fn lb_cookie_policy(&mut self) -> Result<bool, Diagnostic> {
        let expires = match self.value("expiration-period")? {
            None => None,
            Some(v) => {
                let what = format!("{}: --expiration-period", self.name());
                // ELB's 0 means a session cookie; the appliance signs cookies for a week at most.
                match number_in(
                    &v.text,
                    v.span.clone(),
                    0..=604_800,
                    &what,
                    " seconds (the appliance's limit is 7 days)",
                    self.src,
                )? {
                    0 => None,
                    n => Some(n),
                }
            }
        };
        self.add_policy(PolicyKind::LbCookie { expires })
    }

    fn app_cookie_policy(&mut self) -> Result<bool, Diagnostic> {
        let cookie = self.required("cookie-name")?;
        if cookie.text.is_empty() {
            return Err(self.error("--cookie-name is empty", cookie.span.clone()));
        }
        self.add_policy(PolicyKind::AppCookie {
            cookie: cookie.text,
        })
    }

    /// elb-create-lb-policy: ProxyProtocolPolicyType, SSLNegotiationPolicyType, the two
    /// stickiness types, and types reported as having no counterpart.
    fn create_policy(&mut self) -> Result<bool, Diagnostic> {
        let kind_value = self.required("policy-type")?;
        let mut attributes: Vec<(String, String, Range<usize>, Range<usize>)> = Vec::new();
        for v in self.values("attribute")? {
            let (mut name, mut value) = (None, None);
            for p in v.pairs(self.src, &format!("{}: --attribute", self.name()))? {
                match p.key.as_str() {
                    "name" => name = Some((p.value.to_string(), p.span.clone())),
                    "value" => value = Some((p.value.to_string(), p.span.clone())),
                    _ => {
                        return Err(self.error(
                            format!(
                                "unknown attribute field \"{}\": expected name=..., value=...",
                                p.key
                            ),
                            p.key_span,
                        ))
                    }
                }
            }
            match (name, value) {
                (Some((n, ns)), Some((v, vs))) => attributes.push((n, v, ns, vs)),
                _ => {
                    return Err(self.error(
                        format!(
                            "--attribute \"{}\" needs both name=... and value=...",
                            v.text
                        ),
                        v.span.clone(),
                    ))
                }
            }
        }
        let attr = |n: &str| attributes.iter().find(|a| a.0.eq_ignore_ascii_case(n));
        let kind = match kind_value.text.as_str() {
            "ProxyProtocolPolicyType" => {
                let (_, v, _, vs) = attr("ProxyProtocol").ok_or_else(|| {
                    self.error(
                        "ProxyProtocolPolicyType needs --attribute \"name=ProxyProtocol, value=true\"",
                        kind_value.span.clone(),
                    )
                })?;
                PolicyKind::ProxyProtocol {
                    enabled: boolean(v, vs.clone(), "ProxyProtocol", self.src)?,
                }
            }
            "SSLNegotiationPolicyType" => {
                let mut ssl = SslPolicy::default();
                for (n, v, ns, vs) in &attributes {
                    if n == "Reference-Security-Policy" {
                        ssl.reference = Some((v.clone(), vs.clone()));
                        continue;
                    }
                    let on = boolean(v, vs.clone(), n, self.src)?;
                    if let Some(p) = n.strip_prefix("Protocol-") {
                        if !matches!(p, "SSLv2" | "SSLv3" | "TLSv1" | "TLSv1.1" | "TLSv1.2") {
                            return Err(self.error(format!("unknown protocol attribute \"{n}\""), ns.clone()));
                        }
                        ssl.protocols.push((p.to_string(), on));
                    } else if n == "Server-Defined-Cipher-Order" {
                        ssl.server_order = on;
                    } else if on {
                        ssl.ciphers.push(n.clone());
                    }
                }
                PolicyKind::SslNegotiation(ssl)
            }
            "LBCookieStickinessPolicyType" => {
                let expires = match attr("CookieExpirationPeriod") {
                    None => None,
                    Some((_, v, _, vs)) => match number_in(v, vs.clone(), 0..=604_800, "CookieExpirationPeriod", " seconds", self.src)? {
                        0 => None,
                        n => Some(n),
                    },
                };
                PolicyKind::LbCookie { expires }
            }
            "AppCookieStickinessPolicyType" => {
                let (_, v, _, _) = attr("CookieName").ok_or_else(|| {
                    self.error("AppCookieStickinessPolicyType needs the CookieName attribute", kind_value.span.clone())
                })?;
                PolicyKind::AppCookie { cookie: v.clone() }
            }
            t @ ("BackendServerAuthenticationPolicyType" | "PublicKeyPolicyType") => {
                PolicyKind::Other(t.to_string())
            }
            other => {
                return Err(self.error(
                    format!(
                        "unknown policy type \"{other}\": ELB's are ProxyProtocolPolicyType, SSLNegotiationPolicyType, LBCookieStickinessPolicyType, AppCookieStickinessPolicyType, BackendServerAuthenticationPolicyType and PublicKeyPolicyType"
                    ),
                    kind_value.span.clone(),
                ))
            }
        };
        self.add_policy(kind)
    }

    fn delete_policy(&mut self) -> Result<bool, Diagnostic> {
        let name = self.lb_name()?;
        let (policy, span) = self.policy_name()?;
        let lb = self.lb(&name)?;
        let in_use = lb.listeners.values().any(|l| l.policies.contains(&policy))
            || lb.backend.values().any(|p| p.contains(&policy));
        if in_use {
            return Err(self.error(
                format!("policy \"{policy}\" is in use; detach it before deleting it"),
                span,
            ));
        }
        if lb.policies.shift_remove(&policy).is_none() && lb.created.is_some() {
            return Err(self.error(
                format!("there is no policy \"{policy}\" on \"{name}\""),
                span,
            ));
        }
        Ok(true)
    }

    /// The policies named in `--policy-names` (empty clears), each known on the load balancer.
    /// `Ok(None)`: the load balancer is not created here and some are unknown; reported.
    fn named_policies(
        &mut self,
        lb: &str,
    ) -> Result<Option<Vec<(String, PolicyKind)>>, Diagnostic> {
        let names = self.required("policy-names")?;
        let mut out = Vec::new();
        for p in names.list() {
            let known = self.state.lbs[lb]
                .policies
                .get(p.text)
                .map(|x| x.kind.clone());
            match known {
                Some(kind) => out.push((p.text.to_string(), kind)),
                None if self.state.lbs[lb].created.is_none() => {
                    self.report(
                        Support::Unsupported,
                        Impact::ChangesTraffic,
                        format!(
                            "policy \"{}\" is not created by this script: not carried over",
                            p.text
                        ),
                    );
                    return Ok(None);
                }
                None => {
                    return Err(self.error(
                        format!("there is no policy \"{}\" on \"{lb}\"", p.text),
                        p.span.clone(),
                    ))
                }
            }
        }
        Ok(Some(out))
    }

    fn port(&self, key: &str) -> Result<(u16, Range<usize>), Diagnostic> {
        let v = self.required(key)?;
        let n = number_in(
            &v.text,
            v.span.clone(),
            1..=65535,
            &format!("{}: --{key}", self.name()),
            "",
            self.src,
        )?;
        Ok((n as u16, v.span))
    }

    /// The listener on `--lb-port`, or `None` (reported) when the load balancer is not created
    /// here and the listener is not known.
    fn listener_port(&mut self, lb: &str) -> Result<Option<u16>, Diagnostic> {
        let (port, span) = self.port("lb-port")?;
        if self.state.lbs[lb].listeners.contains_key(&port) {
            return Ok(Some(port));
        }
        if self.state.lbs[lb].created.is_some() {
            return Err(self.error(format!("\"{lb}\" has no listener on port {port}"), span));
        }
        self.report(
            Support::Unsupported,
            Impact::ChangesTraffic,
            format!("the listener on port {port} of \"{lb}\" is not defined in this script: not carried over"),
        );
        Ok(None)
    }

    fn listener_policies(&mut self) -> Result<bool, Diagnostic> {
        let name = self.lb_name()?;
        self.lb(&name)?;
        let Some(port) = self.listener_port(&name)? else {
            return Ok(false);
        };
        let Some(policies) = self.named_policies(&name)? else {
            return Ok(false);
        };
        let span = self
            .cmd
            .get("policy-names")
            .and_then(|o| o.value.as_ref())
            .map_or(self.cmd.name_span.clone(), |w| w.span.clone());
        let protocol = self.state.lbs[&name].listeners[&port].protocol;
        let mut sticky = 0;
        for (policy, kind) in &policies {
            let fits = match kind {
                PolicyKind::LbCookie { .. } | PolicyKind::AppCookie { .. } => {
                    sticky += 1;
                    protocol.is_http()
                }
                PolicyKind::SslNegotiation(_) => protocol.is_tls(),
                PolicyKind::ProxyProtocol { .. } | PolicyKind::Other(_) => false,
            };
            if !fits {
                return Err(self.error(
                    format!(
                        "policy \"{policy}\" cannot be attached to the {} listener on port {port}",
                        protocol.as_str()
                    ),
                    span,
                ));
            }
        }
        if sticky > 1 {
            return Err(self.error("a listener takes one stickiness policy at most", span));
        }
        self.state.lbs[&name].listeners[&port].policies =
            policies.into_iter().map(|(n, _)| n).collect();
        Ok(true)
    }

    fn backend_policies(&mut self) -> Result<bool, Diagnostic> {
        let name = self.lb_name()?;
        self.lb(&name)?;
        let (port, _) = self.port("instance-port")?;
        let Some(policies) = self.named_policies(&name)? else {
            return Ok(false);
        };
        for (policy, kind) in &policies {
            if matches!(
                kind,
                PolicyKind::LbCookie { .. }
                    | PolicyKind::AppCookie { .. }
                    | PolicyKind::SslNegotiation(_)
            ) {
                return Err(self.error(
                    format!("policy \"{policy}\" applies to listeners, not to back-end servers"),
                    self.cmd.name_span.clone(),
                ));
            }
        }
        self.state.lbs[&name]
            .backend
            .insert(port, policies.into_iter().map(|(n, _)| n).collect());
        Ok(true)
    }

    fn listener_cert(&mut self) -> Result<bool, Diagnostic> {
        let name = self.lb_name()?;
        self.lb(&name)?;
        let cert = self.required("cert-id")?;
        let cert = self.cert_ref(&cert.text, cert.span.clone())?;
        let Some(port) = self.listener_port(&name)? else {
            return Ok(false);
        };
        let listener = &self.state.lbs[&name].listeners[&port];
        if !listener.protocol.is_tls() {
            let proto = listener.protocol.as_str();
            return Err(self.error(
                format!("the listener on port {port} is {proto}: only HTTPS and SSL listeners take a certificate"),
                cert.span,
            ));
        }
        self.state.lbs[&name].listeners[&port].cert = Some(cert);
        Ok(true)
    }

    /// elb-modify-lb-attributes: `--connection-draining "enabled=true, timeout=300"`,
    /// `--connection-settings "idletimeout=60"`, `--crosszone-loadbalancing "enabled=true"`,
    /// `--access-log "enabled=..., ..."`.
    fn attributes(&mut self) -> Result<bool, Diagnostic> {
        let name = self.lb_name()?;
        self.lb(&name)?;
        let mut mapped = false;
        if let Some(v) = self.value("connection-draining")? {
            let mut enabled = None;
            let mut timeout = (300, v.span.start);
            for p in v.pairs(self.src, "--connection-draining")? {
                match p.key.as_str() {
                    "enabled" => {
                        enabled = Some(boolean(p.value, p.span.clone(), "enabled", self.src)?)
                    }
                    "timeout" => {
                        let what = format!("{}: connection draining timeout", self.name());
                        timeout = (
                            number_in(
                                p.value,
                                p.span.clone(),
                                1..=3600,
                                &what,
                                " seconds",
                                self.src,
                            )?,
                            p.span.start,
                        );
                    }
                    _ => {
                        return Err(self.error(
                            format!("unknown connection draining field \"{}\"", p.key),
                            p.key_span,
                        ))
                    }
                }
            }
            let enabled = enabled.ok_or_else(|| {
                self.error(
                    "--connection-draining needs enabled=true or enabled=false",
                    v.span.clone(),
                )
            })?;
            self.state.lbs[&name].draining = enabled.then_some(timeout);
            mapped = true;
        }
        if let Some(v) = self.value("connection-settings")? {
            for p in v.pairs(self.src, "--connection-settings")? {
                match p.key.as_str() {
                    "idletimeout" | "idle-timeout" => {
                        let what = format!("{}: idle timeout", self.name());
                        let n = number_in(
                            p.value,
                            p.span.clone(),
                            1..=3600,
                            &what,
                            " seconds",
                            self.src,
                        )?;
                        self.state.lbs[&name].idle_timeout = Some((n, p.span.start));
                    }
                    _ => {
                        return Err(self.error(
                            format!("unknown connection settings field \"{}\"", p.key),
                            p.key_span,
                        ))
                    }
                }
            }
            mapped = true;
        }
        if let Some(w) = self.written("crosszone-loadbalancing") {
            self.not_applicable(&format!(
                "cross-zone load balancing \"{w}\": one appliance balances over every instance"
            ));
        }
        if let Some(w) = self.written("access-log") {
            self.not_applicable(&format!(
                "access log to S3 \"{w}\": use the appliance's access_log"
            ));
        }
        Ok(mapped)
    }

    /// iam-servercertupload: remembers the local PEM files under the certificate's name.
    fn upload(&mut self) -> Result<bool, Diagnostic> {
        let name = self.required("server-certificate-name")?;
        let file = |key: &str| -> Result<Option<(PathBuf, Range<usize>)>, Diagnostic> {
            Ok(self
                .value(key)?
                .map(|v| (self.src.dir.join(&v.text), v.span)))
        };
        let body = file("certificate-body-file")?.ok_or_else(|| {
            self.error(
                "option -b (the certificate body) is required",
                self.cmd.name_span.clone(),
            )
        })?;
        let key = file("private-key-file")?.ok_or_else(|| {
            self.error(
                "option -k (the private key) is required",
                self.cmd.name_span.clone(),
            )
        })?;
        let chain = file("certificate-chain-file")?;
        if let Some(old) = self.state.uploads.get(&name.text) {
            let first = self.src.origin(old.at);
            self.state.warnings.push(self.src.warning(
                format!("server certificate \"{}\" is uploaded again (first in {first}); the later files are used", name.text),
                name.span.clone(),
            ));
        }
        if self.cmd.get("path").is_some() {
            self.report(
                Support::Partial,
                Impact::NoTrafficChange,
                "the IAM path (-p) only names the certificate in IAM",
            );
        }
        self.state.uploads.insert(
            name.text.clone(),
            Upload {
                name: name.text,
                body,
                key,
                chain,
                at: self.cmd.at,
            },
        );
        Ok(true)
    }
}

fn looks_like_instance(id: &str) -> bool {
    id.strip_prefix("i-")
        .is_some_and(|h| !h.is_empty() && h.chars().all(|c| c.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::super::script;
    use super::*;

    fn run(text: &str) -> Result<State, Diagnostic> {
        let src = Source::new("t.sh", text);
        let s = script::read(&src)?;
        apply(&s, &src, &Options::default())
    }

    fn err(text: &str) -> String {
        match run(text) {
            Ok(_) => panic!("accepted: {text}"),
            Err(d) => format!(
                "{}: {}",
                d.origin.map(|o| o.to_string()).unwrap_or_default(),
                d.message
            ),
        }
    }

    const LB: &str =
        "elb-create-lb web --listener \"protocol=HTTP, lb-port=80, instance-port=8080\"\n";

    #[test]
    fn create_lb_listeners_in_any_order() {
        let s = run("elb-create-lb web --listener \"instance-port=8443, lb-port=443,protocol=https, instance-protocol=HTTPS, cert-id=arn:aws:iam::123456789012:server-certificate/web\" --listener protocol=tcp,lb-port=22,instance-port=22 -z us-east-1a").unwrap();
        let lb = &s.lbs["web"];
        let l = &lb.listeners[&443];
        assert_eq!(
            (l.protocol, l.instance_protocol, l.instance_port),
            (Protocol::Https, Protocol::Https, 8443)
        );
        assert_eq!(l.cert.as_ref().unwrap().name, "web");
        assert_eq!(lb.listeners[&22].instance_protocol, Protocol::Tcp);
        assert!(s
            .report
            .items
            .iter()
            .any(|i| i.note.contains("availability zones")));
    }

    #[test]
    fn listener_mistakes() {
        assert_eq!(
            err("elb-create-lb web --listener \"protocol=HTTPS, lb-port=443, instance-port=80\""),
            "t.sh:1:31: elb-create-lb: the HTTPS listener on port 443 has no cert-id: an HTTPS or SSL listener needs a server certificate (cert-id=arn:aws:iam::ACCOUNT:server-certificate/NAME)"
        );
        assert!(
            err("elb-create-lb web --listener \"protocol=HTTP, lb-port=80\"")
                .contains("has no instance-port")
        );
        assert!(
            err("elb-create-lb web --listener \"protocol=UDP, lb-port=80, instance-port=80\"")
                .contains("t.sh:1:40: elb-create-lb: protocol \"UDP\" is not")
        );
        assert!(
            err("elb-create-lb web --listener \"protocol=HTTP, lb-port=0, instance-port=80\"")
                .contains("lb-port 0 is out of range")
        );
        assert!(err("elb-create-lb web --listener \"protocol=HTTP, lb-port=80, instance-port=80, instance-protocol=TCP\"").contains("cannot follow"));
        assert!(err("elb-create-lb web --listener \"protocol=HTTP, lb-port=80, instance-port=80, colour=red\"").contains("unknown listener field \"colour\""));
        assert!(err("elb-create-lb web").contains("at least one --listener"));
        assert!(err(&format!("{LB}{LB}")).contains("already created in t.sh:1:1"));
        let e = err("elb-create-lb-listeners x --listener \"protocol=HTTPS,lb-port=443,instance-port=80, cert-id=&<certificate name>\"");
        assert!(e.starts_with("t.sh:1:92: elb-create-lb-listeners: cert-id \"&<certificate name>\" is not a certificate ARN"), "{e}");
    }

    #[test]
    fn health_check_ranges() {
        let ok = "elb-configure-healthcheck web --target HTTP:8080/status?x=1 --interval 30 --timeout 5 --healthy-threshold 2 --unhealthy-threshold 10";
        let s = run(&format!("{LB}{ok}")).unwrap();
        let h = s.lbs["web"].health.as_ref().unwrap();
        assert_eq!(h.target.to_string(), "HTTP:8080/status?x=1");
        assert_eq!(
            (h.interval, h.timeout, h.healthy, h.unhealthy),
            (30, 5, 2, 10)
        );
        for (change, expected) in [
            ("--interval 30", "--interval 4 "),
            ("--interval 30", "--interval 301 "),
            ("--timeout 5", "--timeout 1 "),
            ("--timeout 5", "--timeout 61 "),
            ("--healthy-threshold 2", "--healthy-threshold 1 "),
            ("--unhealthy-threshold 10", "--unhealthy-threshold 11"),
        ] {
            let e = err(&format!("{LB}{}", ok.replace(change, expected.trim())));
            assert!(e.contains("is out of range: ELB accepts"), "{e}");
            assert!(e.starts_with("t.sh:2:"), "{e}");
        }
        let e = err(&format!(
            "{LB}{}",
            ok.replace("--timeout 5", "--timeout 30")
        ));
        assert!(
            e.contains("--timeout 30 must be less than --interval 30"),
            "{e}"
        );
        let e = err(&format!("{LB}{}", ok.replace(" --healthy-threshold 2", "")));
        assert!(e.contains("--healthy-threshold required"), "{e}");
        let e = err(&format!(
            "{LB}{}",
            ok.replace("HTTP:8080/status?x=1", "HTTP:8080")
        ));
        assert!(e.contains("needs a path"), "{e}");
    }

    #[test]
    fn instances_and_listeners_come_and_go() {
        let s = run(&format!(
            "{LB}elb-register-instances-with-lb web --instances i-1,i-2 --instances i-3\nelb-deregister-instances-from-lb web --instances i-2\nelb-create-lb-listeners web --listener \"protocol=TCP, lb-port=22, instance-port=22\"\nelb-delete-lb-listeners web --lb-ports 80"
        ))
        .unwrap();
        let lb = &s.lbs["web"];
        assert_eq!(lb.instances.keys().collect::<Vec<_>>(), ["i-1", "i-3"]);
        assert_eq!(lb.listeners.keys().collect::<Vec<_>>(), [&22]);
    }

    #[test]
    fn stickiness_policies() {
        let s = run(&format!(
            "{LB}elb-create-lb-cookie-stickiness-policy web --policy-name p1 --expiration-period 900\nelb-create-app-cookie-stickiness-policy web --policy-name p2 --cookie-name JSESSIONID\nelb-set-lb-policies-of-listener web --lb-port 80 --policy-names p2"
        ))
        .unwrap();
        let lb = &s.lbs["web"];
        assert_eq!(
            lb.policies["p1"].kind,
            PolicyKind::LbCookie { expires: Some(900) }
        );
        assert_eq!(lb.listeners[&80].policies, ["p2"]);
        let e = err(&format!(
            "{LB}elb-set-lb-policies-of-listener web --lb-port 80 --policy-names nope"
        ));
        assert!(e.contains("there is no policy \"nope\""), "{e}");
        let e = err(&format!(
            "{LB}elb-set-lb-policies-of-listener web --lb-port 81 --policy-names \"\""
        ));
        assert!(e.contains("no listener on port 81"), "{e}");
        let e = err(&format!(
            "{LB}elb-create-lb-cookie-stickiness-policy web --policy-name p --expiration-period -5"
        ));
        assert!(e.contains("not a whole number"), "{e}");
        let e = err(&format!(
            "{LB}elb-create-lb-cookie-stickiness-policy web --policy-name a_b"
        ));
        assert!(e.contains("letters, digits and hyphens"), "{e}");
    }

    #[test]
    fn proxy_protocol_and_ssl_policies() {
        let s = run("elb-create-lb-policy x --policy-name pp --policy-type ProxyProtocolPolicyType --attribute \"name=ProxyProtocol, value=true\"\nelb-set-lb-policies-for-backend-server x --policy-names pp --instance-port 443\nelb-create-lb-policy x --policy-name tls --policy-type SSLNegotiationPolicyType --attribute \"name=Protocol-TLSv1.2, value=true\" --attribute \"value=true, name=ECDHE-RSA-AES128-GCM-SHA256\" --attribute \"name=Protocol-TLSv1,value=false\"").unwrap();
        let lb = &s.lbs["x"];
        assert_eq!(lb.backend[&443], ["pp"]);
        let PolicyKind::SslNegotiation(ssl) = &lb.policies["tls"].kind else {
            panic!()
        };
        assert_eq!(
            ssl.protocols,
            [("TLSv1.2".to_string(), true), ("TLSv1".to_string(), false)]
        );
        assert_eq!(ssl.ciphers, ["ECDHE-RSA-AES128-GCM-SHA256"]);
        let e = err("elb-create-lb-policy x --policy-name a --policy-type MagicPolicyType");
        assert!(e.contains("unknown policy type \"MagicPolicyType\""), "{e}");
    }

    #[test]
    fn attributes() {
        let s = run(&format!("{LB}elb-modify-lb-attributes web --connection-draining \"enabled=true, timeout=120\" --connection-settings idletimeout=30 --crosszone-loadbalancing enabled=true")).unwrap();
        let lb = &s.lbs["web"];
        assert_eq!(lb.draining.map(|d| d.0), Some(120));
        assert_eq!(lb.idle_timeout.map(|d| d.0), Some(30));
        let e = err(&format!(
            "{LB}elb-modify-lb-attributes web --connection-draining \"enabled=true, timeout=3601\""
        ));
        assert!(
            e.contains(
                "connection draining timeout 3601 is out of range: ELB accepts 1 to 3600 seconds"
            ),
            "{e}"
        );
        let e = err(&format!(
            "{LB}elb-modify-lb-attributes web --connection-settings idletimeout=0"
        ));
        assert!(e.contains("idle timeout 0 is out of range"), "{e}");
    }

    #[test]
    fn deleted_load_balancers_are_gone() {
        let e = err(&format!("{LB}elb-delete-lb web\nelb-configure-healthcheck web -t TCP:1 --interval 5 --timeout 2 --healthy-threshold 2 --unhealthy-threshold 2"));
        assert!(e.contains("was deleted in t.sh:2:1"), "{e}");
    }

    #[test]
    fn certificates_policies_and_not_applicable_commands() {
        let arn = "arn:aws:iam::123456789012:server-certificate/a/b/site";
        let s = run(&format!(
            "elb-create-lb web --listener \"protocol=SSL, lb-port=443, instance-port=443, cert-id=arn:aws:iam::1:server-certificate/old\"\n\
             elb-set-lb-listener-ssl-cert web --lb-port 443 --cert-id {arn}\n\
             elb-create-lb-cookie-stickiness-policy web --policy-name session\n\
             elb-delete-lb-policy web --policy-name session\n\
             elb-enable-zones-for-lb web -z us-east-1b\n\
             elb-apply-security-groups-to-lb web --security-groups sg-1\n\
             elb-describe-lbs web --show-long\n\
             iam-servercertupload -b c.pem -k k.pem -s site"
        ))
        .unwrap();
        let lb = &s.lbs["web"];
        let cert = lb.listeners[&443].cert.as_ref().unwrap();
        assert_eq!((cert.id.as_str(), cert.name.as_str()), (arn, "site"));
        assert!(lb.policies.is_empty());
        let notes: Vec<(&str, Support)> = s
            .report
            .items
            .iter()
            .map(|i| (i.name.as_str(), i.support))
            .collect();
        assert_eq!(
            notes,
            [
                ("elb-enable-zones-for-lb", Support::Unsupported),
                ("elb-apply-security-groups-to-lb", Support::Unsupported),
                ("elb-describe-lbs", Support::Skipped)
            ]
        );
        assert_eq!(s.uploads["site"].body.0, std::path::PathBuf::from("c.pem"));
        let e = err(&format!(
            "{LB}elb-set-lb-listener-ssl-cert web --lb-port 80 --cert-id {arn}"
        ));
        assert!(
            e.contains("only HTTPS and SSL listeners take a certificate"),
            "{e}"
        );
        let e = err(&format!(
            "{LB}elb-register-instances-with-lb web --instances \"\""
        ));
        assert!(e.contains("--instances names no instance"), "{e}");
        let e = err("iam-servercertupload -b c.pem -s site");
        assert!(e.contains("option -k (the private key) is required"), "{e}");
        let e = err(&format!("{LB}elb-create-lb-cookie-stickiness-policy web --policy-name p\nelb-set-lb-policies-of-listener web --lb-port 80 --policy-names p\nelb-delete-lb-policy web --policy-name p"));
        assert!(e.contains("policy \"p\" is in use"), "{e}");
    }
}
