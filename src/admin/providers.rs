//! What other parts of the appliance add to the admin API, without the admin code knowing
//! them: a status section (the HA pair's state, the active health checker's last results) and
//! health gates that can take this node out of traffic (a backup node of an HA pair).
//!
//! ```
//! use std::sync::Arc;
//! appliance::admin::register_status("ha", Arc::new(|| serde_json::json!({"state": "master"})));
//! appliance::admin::register_health_gate("ha", Arc::new(|| None));
//! ```

use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock, RwLock};

use serde_json::Value;

/// Returns a section of `/status`, shown under `providers.<name>`. Called on every request to
/// `/status`: keep it cheap (read state, do not probe).
pub type StatusProvider = Arc<dyn Fn() -> Value + Send + Sync>;

/// Returns why this node should not get traffic now (`/healthz` answers 503 with the reason),
/// or `None`. Called on every health check: keep it cheap.
pub type HealthGate = Arc<dyn Fn() -> Option<String> + Send + Sync>;

#[derive(Default)]
struct Registry {
    status: BTreeMap<String, StatusProvider>,
    gates: BTreeMap<String, HealthGate>,
}

static REGISTRY: LazyLock<RwLock<Registry>> = LazyLock::new(Default::default);

/// Adds (or replaces) the `/status` section `name`.
pub fn register_status(name: &str, provider: StatusProvider) {
    write().status.insert(name.to_string(), provider);
}

/// Adds (or replaces) the health gate `name`.
pub fn register_health_gate(name: &str, gate: HealthGate) {
    write().gates.insert(name.to_string(), gate);
}

/// Removes what `name` registered.
pub fn unregister(name: &str) {
    let mut r = write();
    r.status.remove(name);
    r.gates.remove(name);
}

fn write() -> std::sync::RwLockWriteGuard<'static, Registry> {
    REGISTRY.write().unwrap_or_else(|e| e.into_inner())
}

fn read() -> std::sync::RwLockReadGuard<'static, Registry> {
    REGISTRY.read().unwrap_or_else(|e| e.into_inner())
}

/// Every provider's section, by name.
pub(super) fn sections() -> serde_json::Map<String, Value> {
    let providers: Vec<(String, StatusProvider)> = read()
        .status
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    providers.into_iter().map(|(k, f)| (k, f())).collect()
}

/// The reasons the gates give, as `name: reason`.
pub(super) fn gate_reasons() -> Vec<String> {
    let gates: Vec<(String, HealthGate)> = read()
        .gates
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    gates
        .into_iter()
        .filter_map(|(name, gate)| gate().map(|reason| format!("{name}: {reason}")))
        .collect()
}
