//! `/healthz`: whether this node should get traffic now. Yes when the data plane serves, every
//! pool that serves traffic has a server it may use (not `down`, not failed within its
//! `fail_timeout`, not marked unhealthy by an active check; a backup counts), and no health
//! gate (an HA backup node, say) objects.

use std::time::Instant;

use crate::config::{Appliance, Location};
use crate::proxy::runtime::Runtime;
use crate::proxy::DataPlane;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub ok: bool,
    /// Why not, one line each.
    pub reasons: Vec<String>,
}

pub fn verdict(plane: &DataPlane) -> Verdict {
    let mut reasons = data_plane_problems(plane);
    reasons.extend(super::providers::gate_reasons());
    Verdict {
        ok: reasons.is_empty(),
        reasons,
    }
}

/// What keeps the data plane itself from serving well, one line each (the health gates aside).
pub fn data_plane_problems(plane: &DataPlane) -> Vec<String> {
    let mut reasons = Vec::new();
    if !plane.serving() {
        reasons.push("the data plane is not serving".to_string());
    }
    let runtime = plane.runtime.load();
    let loaded = plane.loaded.load();
    let now = Instant::now();
    for name in serving_pools(&loaded.model, &runtime) {
        let Some(pool) = runtime.pools.get(&name) else {
            continue;
        };
        let usable = pool
            .balancer
            .snapshot(now)
            .iter()
            .filter(|p| !p.down && p.healthy && !p.unavailable)
            .count();
        if usable == 0 {
            reasons.push(format!("upstream \"{}\": no usable server", pool.name));
        }
    }
    reasons
}

/// The keys (in `Runtime::pools`) of the pools some location passes requests to.
pub(crate) fn serving_pools(model: &Appliance, runtime: &Runtime) -> Vec<String> {
    fn walk(locations: &[Location], runtime: &Runtime, out: &mut Vec<String>) {
        for loc in locations {
            if let Some(pass) = &loc.proxy.pass {
                let key = if runtime.pools.contains_key(&pass.host) {
                    pass.host.clone()
                } else {
                    format!("{}://{}", pass.scheme.as_str(), pass.host)
                };
                if !out.contains(&key) {
                    out.push(key);
                }
            }
            walk(&loc.locations, runtime, out);
        }
    }
    let mut out = Vec::new();
    for server in &model.http.servers {
        walk(&server.locations, runtime, &mut out);
    }
    out
}
