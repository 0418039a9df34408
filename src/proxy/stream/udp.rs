//! UDP load balancing: a stream server's `listen ... udp`, as nginx's stream proxy serves it.
//!
//! Datagrams from one client address are one session (the listener's receive loop, in
//! [`workers`](crate::proxy::workers), hands each to its session and starts a session for a
//! new address). A session goes through `limit_conn` and `allow`/`deny` as a TCP one does, then
//! picks a backend with the pool's balancer and sends the client's datagrams to it from a socket
//! of its own; what the backend sends back goes to the client from the listening socket.
//!
//! It ends, as ngx_stream_proxy_test_finalize and the timeout handler end it:
//! - once the backend has sent `proxy_responses` datagrams for each one sent ("udp done"), with
//!   `proxy_requests` datagrams sent first when it is set (after that many, the client's next
//!   datagram starts a new session);
//! - after `proxy_timeout` with nothing moving: a success when the answers came or no number
//!   was set ("udp timed out"), else a 502 ("upstream timed out"), the backend then counted as
//!   failed for `max_fails`;
//! - at a graceful stop ("disconnected on shutdown").
//!
//! A backend that refuses (an ICMP port unreachable: "recv() failed (111: Connection refused)")
//! is counted as failed too, and its refusal as an answer, as nginx counts it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use pingora::server::ShutdownWatch;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use super::{
    admit, connect, log_session, pool_of, Client, Pass, StreamConf, StreamEdge, BAD_GATEWAY,
    INTERNAL_SERVER_ERROR, OK, OPEN_SESSIONS,
};
use crate::config::{ListenAddress, LogLevel};
use crate::proxy::balance::{Outcome, PeerAddr};
use crate::proxy::error_context::os_error;
use crate::proxy::limits::Held;
use crate::proxy::vars::{eval_to_vec, SessionVars};

/// The largest datagram.
const DATAGRAM: usize = 65_535;

/// A session's side of the client: the datagrams the receive loop hands it, the listening
/// socket its answers go out of, and where datagrams it will not take go back to.
pub struct FromClient {
    pub datagrams: mpsc::Receiver<Bytes>,
    pub socket: Arc<UdpSocket>,
    pub addr: SocketAddr,
    pub hand_back: mpsc::UnboundedSender<(SocketAddr, Bytes)>,
}

impl FromClient {
    /// Takes no more datagrams: those queued already go back to the receive loop, to start
    /// the client's next session.
    fn stop_taking(&mut self) {
        self.datagrams.close();
        while let Ok(datagram) = self.datagrams.try_recv() {
            let _ = self.hand_back.send((self.addr, datagram));
        }
    }
}

impl Drop for FromClient {
    fn drop(&mut self) {
        self.stop_taking();
    }
}

impl StreamEdge {
    /// Serves one UDP session on listener `index`, from the client's first datagram (waiting in
    /// `from`) to its end, on the calling worker's event loop.
    pub async fn serve_datagrams(
        self: Arc<Self>,
        index: usize,
        mut from: FromClient,
        mut shutdown: ShutdownWatch,
    ) {
        let _open = crate::sync::Counted::enter(&OPEN_SESSIONS);
        let started = Instant::now();
        let Some((listener, conf)) = self.served_by(index) else {
            return;
        };
        let local = match &listener.bind {
            ListenAddress::Tcp(a) if !a.ip().is_unspecified() => Some(*a),
            _ => from.socket.local_addr().ok(),
        };
        let client = Client {
            number: crate::proxy::connection_tag::next_number(),
            server: listener.bind.clone(),
            addr: Some(from.addr),
            connecting: None,
            local,
            proxy: None,
            tls: None,
            certificate: None,
            preread: None,
            udp: true,
        };
        let mut outcome = SessionVars {
            udp: true,
            ..SessionVars::new(started)
        };
        outcome.status = session(&conf, &client, &mut from, &mut shutdown, &mut outcome).await;
        log_session(&conf, &client, &mut outcome);
    }
}

/// What a session has counted: datagrams each way (`packets from/to client`).
#[derive(Default)]
struct Packets {
    requests: u64,
    responses: u64,
}

/// One UDP session (see the module docs); returns its status.
async fn session(
    conf: &StreamConf,
    client: &Client,
    from: &mut FromClient,
    shutdown: &mut ShutdownWatch,
    outcome: &mut SessionVars,
) -> u16 {
    // The first datagram came with the session: nginx counts it received at once.
    let Some(first) = from.datagrams.recv().await else {
        return OK;
    };
    outcome.bytes_received += first.len() as u64;
    let mut held = Held::default();
    if let Err(status) = admit(conf, client, &mut held) {
        return status;
    }
    let pool = match &conf.pass {
        // nginx's stream `return`: the text, as one datagram.
        Pass::Return(text) => {
            let text = eval_to_vec(text, &client.vars(&conf.tables));
            return match from.socket.send_to(&text, from.addr).await {
                Ok(n) => {
                    outcome.bytes_sent += n as u64;
                    OK
                }
                Err(_) => INTERNAL_SERVER_ERROR,
            };
        }
        pass => match pool_of(pass, conf, client, outcome).await {
            Some(pool) => pool,
            None => return INTERNAL_SERVER_ERROR,
        },
    };
    let opened = connect(conf, &pool, client, outcome, |addr| async move {
        open(&addr).await.map(|socket| (socket, 0))
    });
    let Some((upstream, mut attempt, peer)) = opened.await else {
        return BAD_GATEWAY;
    };
    let io = (&upstream, &peer);
    let ended = relay(conf, client, from, shutdown, outcome, io, first).await;
    // What the client sent meanwhile goes to its next session.
    from.stop_taking();
    let outcome_of_peer = match ended.failed {
        true => Outcome::Failed,
        false => Outcome::Success,
    };
    if pool
        .balancer
        .finish(&mut attempt, outcome_of_peer, Instant::now())
    {
        client.log(
            LogLevel::Warn,
            Some((Some(&peer), ended.bytes)),
            format_args!("upstream server temporarily disabled while proxying connection"),
        );
    }
    ended.status
}

/// How a session's relaying ended.
struct Ended {
    status: u16,
    /// The backend refused, or never answered in time: a failure for `max_fails`.
    failed: bool,
    /// Bytes from and to the client, from and to the backend.
    bytes: [u64; 4],
}

/// Passes datagrams both ways until the session ends.
async fn relay(
    conf: &StreamConf,
    client: &Client,
    from: &mut FromClient,
    shutdown: &mut ShutdownWatch,
    outcome: &mut SessionVars,
    (upstream, peer): (&UdpSocket, &PeerAddr),
    first: Bytes,
) -> Ended {
    let mut packets = Packets::default();
    // Bytes from and to the client, from and to the backend, as nginx's lines give them.
    let mut bytes = [outcome.bytes_received, 0, 0, 0];
    let log = |level, bytes: [u64; 4], message: std::fmt::Arguments<'_>| {
        client.log(
            level,
            Some((Some(peer as &dyn std::fmt::Display), bytes)),
            message,
        )
    };
    let expected = conf.responses.map(u64::from);
    let done = |p: &Packets| expected.is_some_and(|r| p.responses >= r * p.requests);
    let mut taking = true;
    let mut upstream_open = true;
    let mut failed = false;
    let mut buf = vec![0u8; DATAGRAM];
    let mut pending = Some(first);
    let mut deadline = tokio::time::Instant::now() + conf.timeout;
    let status = loop {
        if let Some(datagram) = pending.take() {
            match upstream.send(&datagram).await {
                Ok(n) => {
                    packets.requests += 1;
                    bytes[3] += n as u64;
                    if let Some(t) = outcome.current_try() {
                        t.bytes_sent += n as u64;
                    }
                }
                Err(e) => {
                    let message = format_args!(
                        "send() failed ({}) while proxying and sending to upstream",
                        os_error(&e)
                    );
                    log(LogLevel::Error, bytes, message);
                    failed = true;
                    break OK;
                }
            }
        }
        // ngx_stream_proxy_test_finalize, after each datagram either way.
        if conf
            .requests
            .is_some_and(|n| packets.requests >= u64::from(n))
        {
            // The client's next datagram starts a new session.
            taking = false;
            from.stop_taking();
        }
        let all_sent = conf
            .requests
            .is_none_or(|n| packets.requests >= u64::from(n));
        if all_sent && done(&packets) {
            let message = format_args!("udp done{}", Summary(&packets, bytes));
            log(LogLevel::Info, bytes, message);
            break OK;
        }
        tokio::select! {
            datagram = from.datagrams.recv(), if taking => match datagram {
                Some(datagram) => {
                    outcome.bytes_received += datagram.len() as u64;
                    bytes[0] += datagram.len() as u64;
                    pending = Some(datagram);
                }
                // The receive loop has stopped: a graceful stop.
                None => taking = false,
            },
            received = upstream.recv(&mut buf), if upstream_open => {
                // nginx counts a failed read as a datagram, an empty one it does not send.
                packets.responses += 1;
                match received {
                    Ok(n) => {
                        bytes[2] += n as u64;
                        if let Some(t) = outcome.current_try() {
                            t.bytes_received += n as u64;
                            t.first_byte_time.get_or_insert(t.started.elapsed());
                        }
                        if let Ok(sent) = from.socket.send_to(&buf[..n], from.addr).await {
                            outcome.bytes_sent += sent as u64;
                            bytes[1] += sent as u64;
                        }
                    }
                    Err(e) => {
                        let message = format_args!(
                            "recv() failed ({}) while proxying and reading from upstream",
                            os_error(&e)
                        );
                        log(LogLevel::Error, bytes, message);
                        upstream_open = false;
                        failed = true;
                    }
                }
            }
            () = tokio::time::sleep_until(deadline) => {
                if expected.is_none() || done(&packets) {
                    let message = format_args!("udp timed out{}", Summary(&packets, bytes));
                    log(LogLevel::Info, bytes, message);
                    break OK;
                }
                let message = format_args!(
                    "upstream timed out (110: Connection timed out) while proxying connection"
                );
                log(LogLevel::Error, bytes, message);
                failed = true;
                break BAD_GATEWAY;
            }
            _ = shutdown.changed() => {
                log(LogLevel::Info, bytes, format_args!("disconnected on shutdown"));
                break OK;
            }
        }
        // nginx's timer counts from the last datagram either way.
        deadline = tokio::time::Instant::now() + conf.timeout;
    };
    Ended {
        status,
        failed,
        bytes,
    }
}

/// `, packets from/to client:1/1, bytes from/to client:5/7, bytes from/to upstream:7/5`, as
/// nginx's "udp done" and "udp timed out" lines end.
struct Summary<'a>(&'a Packets, [u64; 4]);

impl std::fmt::Display for Summary<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (p, [from_client, to_client, from_upstream, to_upstream]) = (self.0, self.1);
        write!(
            f,
            ", packets from/to client:{}/{}, bytes from/to client:{from_client}/{to_client}, \
             bytes from/to upstream:{from_upstream}/{to_upstream}",
            p.requests, p.responses
        )
    }
}

/// A UDP socket connected to `addr`: only its datagrams come back on it.
async fn open(addr: &PeerAddr) -> Result<UdpSocket, String> {
    let PeerAddr::Inet(addr) = addr else {
        return Err("UDP to a Unix socket is not supported".into());
    };
    let any: SocketAddr = match addr {
        SocketAddr::V4(_) => (std::net::Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let failed = |call: &str, e: std::io::Error| format!("{call}() failed ({})", os_error(&e));
    let socket = UdpSocket::bind(any)
        .await
        .map_err(|e| failed("socket", e))?;
    socket
        .connect(addr)
        .await
        .map_err(|e| failed("connect", e))?;
    Ok(socket)
}
