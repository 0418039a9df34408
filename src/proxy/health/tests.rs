//! The checker against real sockets: thresholds, sharing between pools, reloads, the status.

use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;
use crate::config::Appliance;

/// A backend answering every request with `status`, counting them.
struct Backend {
    status: Arc<AtomicU16>,
    hits: Arc<AtomicU64>,
}

async fn backend(listener: TcpListener) -> Backend {
    let status = Arc::new(AtomicU16::new(200));
    let hits = Arc::new(AtomicU64::new(0));
    let (s, h) = (status.clone(), hits.clone());
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let (s, h) = (s.clone(), h.clone());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                h.fetch_add(1, Ordering::SeqCst);
                let code = s.load(Ordering::SeqCst);
                let reply = format!(
                    "HTTP/1.1 {code} X\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
                );
                let _ = conn.write_all(reply.as_bytes()).await;
            });
        }
    });
    Backend { status, hits }
}

/// Two listeners on one port, on 127.0.0.1 and 127.0.0.2: the check's port is the same on
/// every server's host, as ELB's is.
async fn two_hosts() -> (u16, TcpListener, TcpListener) {
    for _ in 0..50 {
        let a = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = a.local_addr().unwrap().port();
        if let Ok(b) = TcpListener::bind(("127.0.0.2", port)).await {
            return (port, a, b);
        }
    }
    panic!("no port free on both 127.0.0.1 and 127.0.0.2");
}

fn runtime(text: &str) -> Arc<ArcSwap<Runtime>> {
    let model = Appliance::from_toml(text, "test.toml").unwrap();
    crate::config::validate(&model).unwrap();
    Arc::new(ArcSwap::from_pointee(Runtime::build(&model).unwrap()))
}

fn config(port: u16, pools: &[&str], target: &str) -> String {
    let mut text = String::new();
    for name in pools {
        text.push_str(&format!(
            r#"
[[http.upstream]]
name = "{name}"
server = [{{ address = "127.0.0.1:{port}" }}, {{ address = "127.0.0.2:{port}" }}]
health_check = {{ target = "{target}", interval = "300ms", timeout = "200ms", healthy_threshold = 2, unhealthy_threshold = 3 }}
"#
        ));
    }
    text
}

async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..100 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

fn healthy(plane: &Arc<ArcSwap<Runtime>>, pool: &str) -> Vec<bool> {
    let rt = plane.load();
    rt.pools[pool]
        .balancer
        .snapshot(std::time::Instant::now())
        .iter()
        .map(|s| s.healthy)
        .collect()
}

#[tokio::test]
async fn http_checks_take_a_server_out_and_back_shared_between_pools() {
    let (port, la, lb) = two_hosts().await;
    let (a, b) = (backend(la).await, backend(lb).await);
    let plane = runtime(&config(
        port,
        &["one", "two"],
        &format!("HTTP:{port}/status"),
    ));
    let checks = Arc::new(HealthChecks::new(plane.clone()));
    let (stop, watch) = tokio::sync::watch::channel(false);
    let task = tokio::spawn({
        let checks = checks.clone();
        async move { checks.run(watch).await }
    });

    wait_for("first checks", || a.hits.load(Ordering::SeqCst) >= 2).await;
    assert_eq!(healthy(&plane, "one"), [true, true]);
    b.status.store(503, Ordering::SeqCst);
    wait_for("b out of rotation", || {
        healthy(&plane, "one") == [true, false]
    })
    .await;
    assert_eq!(
        healthy(&plane, "two"),
        [true, false],
        "the pools share the probe"
    );
    let status = checks.status();
    let peer = &status[0].peers[1];
    assert_eq!(
        (status[0].pool.as_str(), status[1].pool.as_str()),
        ("one", "two")
    );
    assert_eq!(peer.probe, format!("HTTP 127.0.0.2:{port}/status"));
    assert!(!peer.verdict.healthy);
    assert_eq!(peer.verdict.consecutive_failures, 3);
    assert_eq!(peer.verdict.last_failure.as_deref(), Some("HTTP 503"));
    assert!(peer.verdict.last_check_unix_ms.is_some());
    // One probe per address, however many pools.
    assert_eq!(checks.lock().len(), 2);
    println!(
        "checks received: a {}, b {}",
        a.hits.load(Ordering::SeqCst),
        b.hits.load(Ordering::SeqCst)
    );
    // The status serializes (the admin API's JSON has the same shape).
    let text = toml::to_string(&toml::Value::try_from(&status[0]).unwrap()).unwrap();
    assert!(text.contains("consecutive_failures = 3"), "{text}");

    b.status.store(200, Ordering::SeqCst);
    wait_for("b back", || healthy(&plane, "one") == [true, true]).await;
    let peer = &checks.status()[0].peers[1];
    assert_eq!(peer.verdict.consecutive_successes, 2);

    // A reload keeps the verdicts and applies them to the new pools at once.
    b.status.store(500, Ordering::SeqCst);
    wait_for("b out again", || healthy(&plane, "one") == [true, false]).await;
    plane.store(runtime(&config(port, &["one"], &format!("HTTP:{port}/status"))).load_full());
    wait_for("the new pool follows", || {
        healthy(&plane, "one") == [true, false]
    })
    .await;
    assert_eq!(checks.status().len(), 1);

    stop.send(true).unwrap();
    task.await.unwrap();
}

#[tokio::test]
async fn tcp_checks_see_a_closed_port() {
    let (port, la, lb) = two_hosts().await;
    let _a = backend(la).await;
    drop(lb);
    let plane = runtime(&config(port, &["p"], &format!("TCP:{port}")));
    let checks = Arc::new(HealthChecks::new(plane.clone()));
    let (stop, watch) = tokio::sync::watch::channel(false);
    let task = tokio::spawn({
        let checks = checks.clone();
        async move { checks.run(watch).await }
    });
    wait_for("127.0.0.2 out", || healthy(&plane, "p") == [true, false]).await;
    let reason = checks.status()[0].peers[1].verdict.last_failure.clone();
    println!("TCP failure reason: {reason:?}");
    assert!(reason.is_some_and(|r| r.contains("Refused")));
    stop.send(true).unwrap();
    task.await.unwrap();
}
