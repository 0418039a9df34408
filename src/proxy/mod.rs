//! The data plane: the model served on Pingora.
//!
//! [`runtime`] compiles the model into lookup tables; [`http`] is the `ProxyHttp` that serves
//! requests from them; [`balance`] chooses upstream servers exactly as nginx does. The
//! [`Runtime`](runtime::Runtime) sits behind an `ArcSwap`, so a reload swaps it without
//! touching the listening sockets, and requests in flight finish on the one they started with.

pub mod access;
pub mod access_phase;
pub mod auth_basic;
pub mod autoindex;
pub mod balance;
pub mod body_filters;
pub mod charset;
pub mod client_cert;
pub mod client_request;
pub mod connection_tag;
mod crypt;
pub mod drain;
pub mod dynamic_pass;
pub mod edge;
pub mod error_context;
pub mod error_page;
pub mod expires;
pub mod files;
mod geo;
pub mod gunzip;
pub mod gzip;
pub mod header_names;
pub mod health;
pub mod http;
pub mod idle_stop;
pub mod keepalive;
pub mod limits;
pub mod locations;
pub mod logging;
mod maps;
pub mod metrics;
pub mod placement;
pub mod plain;
pub mod proxy_protocol;
mod pump;
pub mod realip;
pub mod recode;
pub mod redirect;
pub mod referers;
pub mod replay;
pub mod request_metrics;
pub mod resolver;
pub mod respond;
pub mod runtime;
pub mod script;
pub mod secure_link;
pub mod sendfile;
pub mod server_names;
pub mod signals;
mod split_clients;
pub mod ssl_preread;
pub mod sticky;
pub mod stream;
pub mod sub_filter;
pub mod tables;
pub mod timer_tick;
pub mod tls;
pub mod upstream_request;
pub mod uri;
pub mod vars;
pub mod workers;

use std::os::fd::RawFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use arc_swap::ArcSwap;
use pingora::server::configuration::ServerConf;
use pingora::server::{ListenFds, Server};
use pingora::services::background::background_service;
use pingora::services::ServiceHandle;

use crate::compile::diag::Diagnostic;
use crate::config::Appliance;
use crate::process::services::{HandOver, Ready};
use runtime::Runtime;

/// How `run` was asked to start.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Take the listening sockets over from a running instance (`--upgrade`), on
    /// `upgrade_sock`. A process started by a reload or SIGUSR2 is told through its environment.
    pub upgrade: bool,
    /// The socket an upgrade hands the listeners over.
    pub upgrade_sock: Option<PathBuf>,
    /// The pid file, when the config's `pid` does not say (nginx mode: `/run/nginx.pid`).
    pub default_pid_file: Option<PathBuf>,
    /// nginx's `daemon on`: fork, and let the parent exit once the daemon serves.
    pub daemon: bool,
    /// The program name messages start with (`nginx` or `appliance`).
    pub program: String,
    /// Startup errors as nginx's error log lines (`... [emerg] pid#tid: ...`) rather than
    /// `appliance: [emerg] ...`.
    pub nginx_messages: bool,
}

/// The configuration the data plane serves, besides the compiled [`Runtime`]: swapped whole
/// by a reload.
pub struct Loaded {
    pub model: Appliance,
    /// The bearer token the admin API wants, read from `admin.token_file` if need be.
    pub admin_token: Option<String>,
}

impl Loaded {
    pub fn new(model: Appliance) -> Result<Loaded, Diagnostic> {
        let admin_token = match &model.admin {
            Some(admin) => crate::admin::token(admin)?,
            None => None,
        };
        Ok(Loaded { model, admin_token })
    }
}

/// The running data plane's state, shared by the proxy, the admin API and the reload path.
#[derive(Clone)]
pub struct DataPlane {
    pub runtime: Arc<ArcSwap<Runtime>>,
    pub loaded: Arc<ArcSwap<Loaded>>,
    /// The active health checks and their state (for the admin side: [`health::HealthChecks::status`]).
    pub health: Arc<health::HealthChecks>,
    serving: Arc<AtomicBool>,
    listen_fds: Arc<OnceLock<ListenFds>>,
}

impl DataPlane {
    pub fn new(loaded: Loaded, runtime: Runtime) -> DataPlane {
        let runtime = Arc::new(ArcSwap::from_pointee(runtime));
        DataPlane {
            health: Arc::new(health::HealthChecks::new(runtime.clone())),
            runtime,
            loaded: Arc::new(ArcSwap::from_pointee(loaded)),
            serving: Arc::new(AtomicBool::new(false)),
            listen_fds: Arc::new(OnceLock::new()),
        }
    }

    /// Swaps in a reloaded configuration. Servers that leave a pool drain first (see
    /// [`drain::hand_over`]).
    pub fn apply(&self, loaded: Loaded, runtime: Runtime) {
        drain::hand_over(&self.runtime.load(), &runtime);
        self.runtime.store(Arc::new(runtime));
        self.loaded.store(Arc::new(loaded));
    }

    /// True from the moment the listeners are up until a stop begins.
    pub fn serving(&self) -> bool {
        self.serving.load(Ordering::SeqCst)
    }

    pub fn set_serving(&self, serving: bool) {
        self.serving.store(serving, Ordering::SeqCst);
    }

    /// Pingora's table of listening sockets, once the services started.
    pub fn listen_fds(&self) -> Option<ListenFds> {
        self.listen_fds.get().cloned()
    }
}

static DRAINING: AtomicBool = AtomicBool::new(false);

/// A graceful stop began: connections are not kept alive after their current request.
pub fn draining() -> bool {
    DRAINING.load(Ordering::Relaxed)
}

pub fn start_draining() {
    DRAINING.store(true, Ordering::Relaxed);
}

/// How long Pingora lets a graceful stop last: 300 s, or longer for a longer
/// `worker_shutdown_timeout` (the process exits when that passes, see `process::run`).
fn grace_period(global: &crate::config::Global) -> u64 {
    let limit = global.shutdown_timeout.map_or(0, |t| t.get().as_secs() + 1);
    limit.max(300)
}

/// Builds the Pingora server for a model, ready to `run`. `sockets` are the listening sockets,
/// bound already (see `process::sockets`): every listening service depends on the service that
/// puts them in Pingora's fd table, where it finds its own. `on_ready` runs once every
/// listening service has started.
pub fn build_server(
    loaded: Loaded,
    runtime: Runtime,
    sockets: Vec<(String, RawFd)>,
    on_ready: Box<dyn FnOnce() + Send>,
) -> Result<(Server, DataPlane), Diagnostic> {
    let model = &loaded.model;
    let conf = ServerConf {
        threads: model
            .global
            .worker_threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
        // nginx's tries are bounded by the pool; Pingora's own cap must not cut them short.
        max_retries: 1000,
        // A graceful stop waits for requests in flight and stream sessions (process::run ends
        // it as soon as there are none, or at `worker_shutdown_timeout`); this bounds one that
        // never ends, for a config without that timeout.
        grace_period_seconds: Some(grace_period(&model.global)),
        graceful_shutdown_timeout_seconds: Some(10),
        // One single-threaded runtime per worker thread, as nginx has one event loop per
        // worker process: a connection stays on the thread that accepted it (Pingora spreads
        // them at random), with its own timers and readiness events. A work-stealing runtime
        // moves tasks between threads, and the wake-ups that takes cost more CPU per request
        // than the balance gains (docs/BENCHMARKS.md).
        work_stealing: false,
        ..ServerConf::default()
    };
    let workers = conf.threads;
    let mut server = Server::new_with_opt_and_conf(None, conf);
    let admin = model.admin.clone();
    let placement = Arc::new(placement::Placement::new(&model.global));
    let plane = DataPlane::new(loaded, runtime);

    let hand_over = server.add_service(HandOver::new(sockets, plane.listen_fds.clone()));
    let mut listening: Vec<ServiceHandle> = Vec::new();
    let runtime = plane.runtime.clone();
    let mut proxy =
        pingora::proxy::http_proxy(&server.configuration, http::HttpProxy::new(runtime.clone()));
    if edge::HttpEdge::wants_h2c(&runtime.load()) {
        let mut options = pingora::apps::HttpServerOptions::default();
        options.h2c = true;
        proxy.server_options = Some(options);
    }
    // TLS and PROXY headers are handled per connection by the edge, which knows the socket a
    // connection came in on; the listeners themselves are plain, and accepted on worker
    // threads of the data plane's own (see `workers`).
    let binds = runtime
        .load()
        .sockets
        .iter()
        .map(|s| s.bind.clone())
        .collect();
    let streams = if runtime.load().streams.is_empty() {
        None
    } else {
        Some(stream::StreamEdge::new(runtime.clone())?)
    };
    listening.push(server.add_service(workers::Workers::new(
        edge::HttpEdge::new(runtime.clone(), proxy)?,
        binds,
        streams,
        workers,
        placement,
    )));
    server.add_service(background_service(
        "health checks",
        health::HealthService(plane.health.clone()),
    ));
    if let Some(admin) = &admin {
        listening.push(server.add_service(crate::admin::service(admin, plane.clone())));
    }
    for handle in &listening {
        handle.add_dependency(&hand_over);
    }
    let ready = server.add_service(Ready::new(plane.clone(), on_ready));
    ready.add_dependencies(&listening);
    Ok((server, plane))
}
