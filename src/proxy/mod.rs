//! The data plane: the model served on Pingora.
//!
//! [`runtime`] compiles the model into lookup tables; [`http`] is the `ProxyHttp` that serves
//! requests from them; [`balance`] chooses upstream servers exactly as nginx does. The
//! [`Runtime`](runtime::Runtime) sits behind an `ArcSwap`, so a reload swaps it without
//! touching the listening sockets, and requests in flight finish on the one they started with.

pub mod balance;
pub mod drain;
pub mod edge;
pub mod health;
pub mod http;
pub mod locations;
pub mod proxy_protocol;
pub mod respond;
pub mod runtime;
pub mod server_names;
pub mod signals;
pub mod sticky;
pub mod stream;
pub mod tls;
pub mod upstream_request;
pub mod uri;
pub mod vars;

use std::sync::Arc;

use arc_swap::ArcSwap;
use pingora::listeners::TcpSocketOptions;
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::{RunArgs, Server};
use pingora::services::background::background_service;
use pingora::services::listening::Service;

use crate::compile::diag::Diagnostic;
use crate::config::{Appliance, ListenAddress};
use runtime::Runtime;

/// How `run` was asked to start.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Take the listening sockets over from a running instance (graceful upgrade).
    pub upgrade: bool,
    /// The socket an upgrade hands the listeners over.
    pub upgrade_sock: Option<std::path::PathBuf>,
}

/// A handle the reload path uses to swap in a new runtime.
#[derive(Clone)]
pub struct DataPlane {
    pub runtime: Arc<ArcSwap<Runtime>>,
    /// The active health checks and their state (for the admin side: [`health::HealthChecks::status`]).
    pub health: Arc<health::HealthChecks>,
}

/// Builds the Pingora server for a model, ready to `run`.
pub fn build_server(
    model: &Appliance,
    options: &RunOptions,
) -> Result<(Server, DataPlane), Diagnostic> {
    let runtime = Runtime::build(model)?;
    let mut conf = ServerConf {
        threads: model
            .global
            .worker_threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
        // nginx's tries are bounded by the pool; Pingora's own cap must not cut them short.
        max_retries: 1000,
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(10),
        ..ServerConf::default()
    };
    if let Some(sock) = &options.upgrade_sock {
        conf.upgrade_sock = sock.to_string_lossy().into_owned();
    }
    if let Some(pid) = &model.global.pid {
        conf.pid_file = pid.to_string_lossy().into_owned();
    }
    let opt = Opt {
        upgrade: options.upgrade,
        daemon: false,
        nocapture: false,
        test: false,
        conf: None,
    };
    let mut server = Server::new_with_opt_and_conf(opt, conf);
    server.bootstrap();

    let runtime = Arc::new(ArcSwap::from_pointee(runtime));
    let plane = DataPlane {
        runtime: runtime.clone(),
        health: Arc::new(health::HealthChecks::new(runtime.clone())),
    };
    let mut proxy =
        pingora::proxy::http_proxy(&server.configuration, http::HttpProxy::new(runtime.clone()));
    if edge::HttpEdge::wants_h2c(&runtime.load()) {
        let mut options = pingora::apps::HttpServerOptions::default();
        options.h2c = true;
        proxy.server_options = Some(options);
    }
    let mut service = Service::new(
        "http".to_string(),
        edge::HttpEdge::new(runtime.clone(), proxy)?,
    );
    for socket in &runtime.load().sockets {
        add_listener(&mut service, &socket.bind, socket.reuseport);
    }
    server.add_service(service);
    server.add_service(background_service(
        "health checks",
        health::HealthService(plane.health.clone()),
    ));
    let streams = stream::StreamEdge::binds(&runtime.load());
    if !streams.is_empty() {
        let mut service = Service::new(
            "stream".to_string(),
            stream::StreamEdge::new(runtime.clone())?,
        );
        for (bind, reuseport) in &streams {
            add_listener(&mut service, bind, *reuseport);
        }
        server.add_service(service);
    }
    Ok((server, plane))
}

/// Adds a plain listening socket: TLS and PROXY headers are handled per connection by the
/// service's application, which knows the socket.
fn add_listener<A>(service: &mut Service<A>, bind: &ListenAddress, reuseport: bool) {
    match bind {
        ListenAddress::Tcp(addr) => {
            let mut options = TcpSocketOptions::default();
            if addr.is_ipv6() {
                options.ipv6_only = Some(true);
            }
            options.so_reuseport = Some(reuseport);
            service.add_tcp_with_settings(&addr.to_string(), options);
        }
        ListenAddress::Unix(path) => {
            service.add_uds(&path.to_string_lossy(), None);
        }
    }
}

/// Which of `binds` a connection with this local address arrived on: the exact address, else
/// the wildcard of its port and family, or the Unix socket of that path.
pub fn listen_match<'a>(
    binds: impl Iterator<Item = &'a ListenAddress> + Clone,
    local: &pingora::protocols::l4::socket::SocketAddr,
) -> Option<usize> {
    if let Some(path) = local.as_unix().and_then(|u| u.as_pathname()) {
        return binds
            .clone()
            .position(|b| matches!(b, ListenAddress::Unix(p) if p == path));
    }
    let local = *local.as_inet()?;
    binds
        .clone()
        .position(|b| *b == ListenAddress::Tcp(local))
        .or_else(|| {
            binds.clone().position(|b| match b {
                ListenAddress::Tcp(a) => {
                    a.ip().is_unspecified()
                        && a.port() == local.port()
                        && a.is_ipv4() == local.is_ipv4()
                }
                ListenAddress::Unix(_) => false,
            })
        })
}

/// Runs a model until a shutdown signal. `reload` recompiles the config on SIGHUP.
pub fn serve(
    model: &Appliance,
    options: &RunOptions,
    reload: signals::Reload,
) -> Result<(), Diagnostic> {
    let (server, plane) = build_server(model, options)?;
    let watch = signals::NginxSignals::new(plane, reload);
    server.run(RunArgs {
        shutdown_signal: Box::new(watch),
    });
    Ok(())
}
