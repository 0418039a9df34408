//! The listening sockets of the process. They are bound here, before Pingora starts, for three
//! reasons: a bind error is reported the way nginx reports it (and before `daemon on` forks, so
//! the operator sees it); a successor started by a reload or SIGUSR2 reuses the sockets the old
//! process hands it instead of binding again; and Pingora's listening services find every socket
//! in their fd table, where a later upgrade can collect them.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::time::Duration;

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::compile::describe_io_error;
use crate::compile::diag::Diagnostic;
use crate::config::{Appliance, ListenAddress, Origin};
use crate::proxy::runtime::Runtime;

/// nginx's default `backlog` on Linux (NGX_LISTEN_BACKLOG).
const DEFAULT_BACKLOG: i32 = 511;

/// One socket to listen on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SocketSpec {
    pub addr: ListenAddress,
    pub backlog: Option<u32>,
    pub reuseport: bool,
    /// A datagram socket (a stream server's `listen ... udp`).
    pub udp: bool,
    /// Where the socket is configured, for a bind error.
    pub origin: Option<Origin>,
}

impl SocketSpec {
    /// The name Pingora's fd table knows the socket by: what its services pass to `add_tcp`
    /// (`127.0.0.1:80`, `[::]:443`) or `add_uds` (the path); `udp:` and the address for UDP.
    pub fn key(&self) -> String {
        match self.udp {
            true => udp_key(&self.addr),
            false => key(&self.addr),
        }
    }
}

pub fn key(addr: &ListenAddress) -> String {
    match addr {
        ListenAddress::Tcp(a) => a.to_string(),
        ListenAddress::Unix(p) => p.to_string_lossy().into_owned(),
    }
}

/// The fd-table name of a UDP socket on `addr`.
pub fn udp_key(addr: &ListenAddress) -> String {
    format!("udp:{}", key(addr))
}

/// Every socket a model listens on: the HTTP sockets as the runtime groups them, the stream
/// servers' listens, and the admin listener. Keyed (and so deduplicated) by fd-table name.
pub fn specs(model: &Appliance, runtime: &Runtime) -> BTreeMap<String, SocketSpec> {
    let mut out = BTreeMap::new();
    for s in &runtime.sockets {
        let spec = SocketSpec {
            addr: s.bind.clone(),
            backlog: s.backlog,
            reuseport: s.reuseport,
            udp: false,
            origin: None,
        };
        out.entry(spec.key()).or_insert(spec);
    }
    for server in &model.stream.servers {
        for l in &server.listen {
            let spec = SocketSpec {
                addr: l.address.clone(),
                backlog: l.backlog,
                reuseport: l.reuseport,
                udp: l.udp,
                origin: server.origin.clone(),
            };
            out.entry(spec.key()).or_insert(spec);
        }
    }
    if let Some(admin) = &model.admin {
        let spec = SocketSpec {
            addr: ListenAddress::Tcp(admin.listen),
            backlog: None,
            reuseport: false,
            udp: false,
            origin: admin.origin.clone(),
        };
        out.entry(spec.key()).or_insert(spec);
    }
    out
}

/// Sockets bound and listening, by fd-table name, waiting to be handed to Pingora.
#[derive(Debug, Default)]
pub struct Bound {
    pub sockets: Vec<(String, OwnedFd)>,
    /// How many of them were inherited from the previous process.
    pub inherited: usize,
}

/// Binds every socket of `specs`, taking the ones `inherited` has instead of binding them again.
/// Inherited sockets the config no longer has are closed here (the old process closes its copy
/// when it exits), so nobody is left holding a socket that nothing accepts on.
pub fn bind_all(
    specs: &BTreeMap<String, SocketSpec>,
    mut inherited: HashMap<String, OwnedFd>,
) -> Result<Bound, Diagnostic> {
    let mut bound = Bound::default();
    for (key, spec) in specs {
        if let Some(fd) = inherited.remove(key) {
            bound.sockets.push((key.clone(), fd));
            bound.inherited += 1;
            continue;
        }
        let fd = bind(spec).map_err(|m| Diagnostic::error(m).at_opt(spec.origin.as_ref()))?;
        bound.sockets.push((key.clone(), fd));
    }
    for (key, _fd) in inherited {
        tracing::info!("closing the inherited socket {key}: the configuration no longer has it");
    }
    Ok(bound)
}

/// Turns a table received from the previous process into owned descriptors.
pub fn own(keys: Vec<String>, fds: Vec<RawFd>) -> HashMap<String, OwnedFd> {
    keys.into_iter()
        .zip(fds)
        // SAFETY: the descriptors were just received with SCM_RIGHTS: they are new in this
        // process and nothing else owns them.
        .map(|(k, fd)| (k, unsafe { OwnedFd::from_raw_fd(fd) }))
        .collect()
}

/// Hands the descriptors over (to Pingora's fd table, whose listeners take ownership).
pub fn into_raw(bound: Bound) -> Vec<(String, RawFd)> {
    bound
        .sockets
        .into_iter()
        .map(|(k, fd)| (k, fd.into_raw_fd()))
        .collect()
}

/// Binds one socket as nginx does, retrying an address in use a few times (nginx tries five
/// times, half a second apart), with nginx's error words.
fn bind(spec: &SocketSpec) -> Result<OwnedFd, String> {
    let mut tries = 0;
    loop {
        match try_bind(spec) {
            Ok(fd) => return Ok(fd),
            Err((step, e)) => {
                let shown = match &spec.addr {
                    ListenAddress::Tcp(a) => a.to_string(),
                    ListenAddress::Unix(p) => format!("unix:{}", p.display()),
                };
                let message = match step {
                    Step::Socket => format!("socket() {shown} failed ({})", describe_io_error(&e)),
                    Step::Bind => format!("bind() to {shown} failed ({})", describe_io_error(&e)),
                    Step::Listen => format!(
                        "listen() to {shown}, backlog {} failed ({})",
                        backlog(spec),
                        describe_io_error(&e)
                    ),
                };
                tries += 1;
                if e.kind() == std::io::ErrorKind::AddrInUse && tries < 5 {
                    tracing::error!("{message}");
                    std::thread::sleep(Duration::from_millis(500));
                    continue;
                }
                return Err(message);
            }
        }
    }
}

enum Step {
    Socket,
    Bind,
    Listen,
}

fn backlog(spec: &SocketSpec) -> i32 {
    spec.backlog
        .map_or(DEFAULT_BACKLOG, |b| i32::try_from(b).unwrap_or(i32::MAX))
}

fn try_bind(spec: &SocketSpec) -> Result<OwnedFd, (Step, std::io::Error)> {
    if let (true, ListenAddress::Tcp(addr)) = (spec.udp, &spec.addr) {
        let socket = inet_socket(addr, true, spec.reuseport)?;
        socket
            .bind(&SockAddr::from(*addr))
            .map_err(|e| (Step::Bind, e))?;
        socket.set_nonblocking(true).map_err(|e| (Step::Bind, e))?;
        return Ok(socket.into());
    }
    let (socket, addr) = match &spec.addr {
        ListenAddress::Tcp(a) => (inet_socket(a, false, spec.reuseport)?, SockAddr::from(*a)),
        ListenAddress::Unix(path) => {
            remove_stale_socket(path);
            let socket =
                Socket::new(Domain::UNIX, Type::STREAM, None).map_err(|e| (Step::Socket, e))?;
            let addr = SockAddr::unix(path).map_err(|e| (Step::Socket, e))?;
            (socket, addr)
        }
    };
    socket.bind(&addr).map_err(|e| (Step::Bind, e))?;
    socket
        .listen(backlog(spec))
        .map_err(|e| (Step::Listen, e))?;
    // Tokio, and so Pingora, expects listeners in non-blocking mode.
    socket
        .set_nonblocking(true)
        .map_err(|e| (Step::Listen, e))?;
    Ok(socket.into())
}

/// A TCP socket, or with `udp` a UDP one, set up as nginx sets up its listening sockets.
fn inet_socket(
    addr: &SocketAddr,
    udp: bool,
    reuseport: bool,
) -> Result<Socket, (Step, std::io::Error)> {
    let (kind, protocol) = match udp {
        true => (Type::DGRAM, Protocol::UDP),
        false => (Type::STREAM, Protocol::TCP),
    };
    let socket = Socket::new(Domain::for_address(*addr), kind, Some(protocol))
        .map_err(|e| (Step::Socket, e))?;
    let set = |r: std::io::Result<()>| r.map_err(|e| (Step::Socket, e));
    set(socket.set_reuse_address(true))?;
    if addr.is_ipv6() {
        // nginx binds `[::]:80` for IPv6 only; `0.0.0.0:80` is a listen of its own.
        set(socket.set_only_v6(true))?;
    }
    if reuseport {
        set(socket.set_reuse_port(true))?;
    }
    Ok(socket)
}

/// A socket file left by a process that is gone would make bind() fail.
fn remove_stale_socket(path: &Path) {
    use std::os::unix::fs::FileTypeExt;
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket())
        && std::os::unix::net::UnixStream::connect(path).is_err()
    {
        let _ = std::fs::remove_file(path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_in_use_is_reported_like_nginx() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        // SO_REUSEADDR does not let a second socket listen on a listening port.
        let spec = SocketSpec {
            addr: ListenAddress::Tcp(addr),
            backlog: None,
            reuseport: false,
            udp: false,
            origin: None,
        };
        let mut specs = BTreeMap::new();
        specs.insert(spec.key(), spec);
        let err = bind_all(&specs, HashMap::new()).unwrap_err();
        assert!(
            err.message
                .starts_with(&format!("bind() to {addr} failed (98: ")),
            "{}",
            err.message
        );
    }

    #[test]
    fn inherited_sockets_are_reused_and_unclaimed_ones_closed() {
        let spec_addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let keep = bind(&SocketSpec {
            addr: ListenAddress::Tcp(spec_addr),
            backlog: None,
            reuseport: false,
            udp: false,
            origin: None,
        })
        .unwrap();
        let keep_std = std::net::TcpListener::from(keep.try_clone().unwrap());
        let keep_addr = keep_std.local_addr().unwrap();
        let spec = SocketSpec {
            addr: ListenAddress::Tcp(keep_addr),
            backlog: None,
            reuseport: false,
            udp: false,
            origin: None,
        };
        let mut specs = BTreeMap::new();
        specs.insert(spec.key(), spec.clone());
        let mut inherited = HashMap::new();
        inherited.insert(spec.key(), keep);
        let bound = bind_all(&specs, inherited).unwrap();
        assert_eq!(bound.inherited, 1);
        assert_eq!(bound.sockets.len(), 1);
    }
}
