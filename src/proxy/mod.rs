//! The data plane: the model served on Pingora.
//!
//! [`runtime`] compiles the model into lookup tables; [`http`] is the `ProxyHttp` that serves
//! requests from them; [`balance`] chooses upstream servers exactly as nginx does. The
//! [`Runtime`](runtime::Runtime) sits behind an `ArcSwap`, so a reload swaps it without
//! touching the listening sockets, and requests in flight finish on the one they started with.

pub mod balance;
pub mod drain;
pub mod health;
pub mod http;
pub mod locations;
pub mod respond;
pub mod runtime;
pub mod server_names;
pub mod signals;
pub mod sticky;
pub mod upstream_request;
pub mod uri;
pub mod vars;

use std::sync::Arc;

use arc_swap::ArcSwap;
use pingora::listeners::TcpSocketOptions;
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::{RunArgs, Server};
use pingora::services::background::background_service;

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
    let mut service = pingora::proxy::http_proxy_service_with_name(
        &server.configuration,
        http::HttpProxy::new(runtime.clone()),
        "http",
    );
    for socket in &runtime.load().sockets {
        if socket.ssl {
            return Err(Diagnostic::error(format!(
                "listen {} ssl: TLS termination is not in this build yet",
                socket.bind
            )));
        }
        match &socket.bind {
            ListenAddress::Tcp(addr) => {
                let mut options = TcpSocketOptions::default();
                if addr.is_ipv6() {
                    options.ipv6_only = Some(true);
                }
                options.so_reuseport = Some(socket.reuseport);
                service.add_tcp_with_settings(&addr.to_string(), options);
            }
            ListenAddress::Unix(path) => {
                service.add_uds(&path.to_string_lossy(), None);
            }
        }
    }
    server.add_service(service);
    server.add_service(background_service(
        "health checks",
        health::HealthService(plane.health.clone()),
    ));
    Ok((server, plane))
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
