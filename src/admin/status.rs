//! `/status`: what an operator wants to see without logging in.

use std::time::Instant;

use serde_json::{json, Value};

use crate::config::ListenAddress;
use crate::proxy::balance::PeerStatus;
use crate::proxy::DataPlane;

pub fn status(plane: &DataPlane) -> Value {
    let runtime = plane.runtime.load();
    let loaded = plane.loaded.load();
    let model = &loaded.model;
    let serving = super::health::serving_pools(model, &runtime);

    let mut listeners = Vec::new();
    for s in &runtime.sockets {
        listeners.push(json!({
            "address": address(&s.bind),
            "protocol": "http",
            "ssl": s.ssl,
            "http2": s.http2,
            "proxy_protocol": s.proxy_protocol,
        }));
    }
    for server in &model.stream.servers {
        for l in &server.listen {
            listeners.push(json!({
                "address": address(&l.address),
                "protocol": "stream",
                "ssl": l.ssl,
                "proxy_protocol": l.proxy_protocol,
            }));
        }
    }
    if let Some(admin) = &model.admin {
        listeners.push(json!({"address": admin.listen.to_string(), "protocol": "admin"}));
    }

    let now = Instant::now();
    let mut pools: Vec<_> = runtime.pools.iter().collect();
    pools.sort_by(|a, b| a.0.cmp(b.0));
    let pools: Vec<Value> = pools
        .into_iter()
        .map(|(key, pool)| {
            let peers = pool.balancer.snapshot(now);
            let usable = peers.iter().filter(|p| usable(p)).count();
            json!({
                "name": pool.name,
                "balance": serde_json::to_value(&pool.balance).unwrap_or(Value::Null),
                "serves_traffic": serving.contains(key),
                "usable_servers": usable,
                "servers": peers.iter().map(peer).collect::<Vec<_>>(),
            })
        })
        .collect();
    let verdict = super::health::verdict(plane);
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "pid": std::process::id(),
        "serving": plane.serving(),
        "healthz": {"ok": verdict.ok, "reasons": verdict.reasons},
        "listeners": listeners,
        "pools": pools,
        "providers": super::providers::sections(),
    })
}

fn usable(p: &PeerStatus) -> bool {
    !p.down && p.healthy && !p.unavailable
}

fn peer(p: &PeerStatus) -> Value {
    let state = if p.down {
        "down"
    } else if !p.healthy {
        "unhealthy"
    } else if p.unavailable {
        "failed"
    } else {
        "healthy"
    };
    json!({
        "server": p.server,
        "address": p.addr.to_string(),
        "role": if p.backup { "backup" } else { "primary" },
        "state": state,
        "weight": p.weight,
        "effective_weight": p.effective_weight,
        "active_connections": p.conns,
        "fails": p.fails,
        "max_fails": p.max_fails,
    })
}

fn address(a: &ListenAddress) -> String {
    a.to_string()
}
