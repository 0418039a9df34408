//! The admin listener on a running appliance: `/metrics` read by a Prometheus text-format
//! parser, `/status` as JSON, `/healthz` turning 503 when every backend is down and 200 when
//! one is back, and the bearer token a listener reachable from other hosts requires.

mod ops_common;

use std::collections::HashMap;
use std::time::Duration;

use ops_common::*;

fn config(dir: &Scratch, port: u16, admin: &str, backends: &[u16], token: Option<&str>) -> String {
    let mut t = format!(
        "[global]\npid = \"{}\"\nerror_log = {{ path = \"{}\", level = \"info\" }}\n[admin]\nlisten = \"{admin}\"\n",
        dir.path("app.pid").display(),
        dir.path("error.log").display()
    );
    if let Some(token) = token {
        t.push_str(&format!("token = \"{token}\"\n"));
    }
    t.push_str("[[http.upstream]]\nname = \"pool\"\nserver = [");
    t.push_str(
        &backends
            .iter()
            .map(|p| {
                format!("{{ address = \"127.0.0.1:{p}\", max_fails = 1, fail_timeout = \"2s\" }}")
            })
            .collect::<Vec<_>>()
            .join(", "),
    );
    t.push_str(&format!(
        "]\n[[http.server]]\nlisten = [{{ address = \"127.0.0.1:{port}\" }}]\n\
         [[http.server.location]]\npath = \"/\"\nproxy = {{ pass = \"http://pool\" }}\n"
    ));
    t
}

fn start(dir: &Scratch, text: &str) -> Proc {
    let conf = dir.write("app.toml", text);
    appliance(
        &["run", "-c", &conf.to_string_lossy()],
        Some(dir.path("app.pid")),
        &dir.path("stderr"),
    )
}

/// Samples of one metric family, by their labels.
fn samples(text: &str, name: &str) -> Vec<(HashMap<String, String>, f64)> {
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let scrape =
        prometheus_parse::Scrape::parse(lines).expect("/metrics is Prometheus text format");
    scrape
        .samples
        .into_iter()
        .filter(|s| s.metric == name)
        .map(|s| {
            let labels: HashMap<String, String> = s
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            let value = match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                prometheus_parse::Value::Histogram(h) => {
                    h.iter().map(|c| c.count).fold(0.0, f64::max)
                }
                prometheus_parse::Value::Summary(_) => f64::NAN,
            };
            (labels, value)
        })
        .collect()
}

fn healthz(admin: u16) -> u16 {
    get(local(admin), "/healthz", &[]).map(|r| r.0).unwrap_or(0)
}

#[test]
fn metrics_status_and_healthz_follow_the_backends() {
    let dir = Scratch::new("admin");
    let mut a = Backend::start_anywhere("A");
    let mut b = Backend::start_anywhere("B");
    let (port, admin) = (free_port(), free_port());
    let _app = start(
        &dir,
        &config(
            &dir,
            port,
            &format!("127.0.0.1:{admin}"),
            &[a.port, b.port],
            None,
        ),
    );
    assert!(wait_until(Duration::from_secs(10), || healthz(admin) == 200));
    for _ in 0..10 {
        assert_eq!(get(local(port), "/", &[]).unwrap().0, 200);
    }

    // /metrics, as Prometheus reads it.
    let (status, text) = get(local(admin), "/metrics", &[]).unwrap();
    assert_eq!(status, 200);
    let requests = samples(&text, "appliance_http_requests_total");
    let ok = requests
        .iter()
        .find(|(l, _)| {
            l.get("status").map(String::as_str) == Some("200")
                && l.get("upstream").map(String::as_str) == Some("pool")
        })
        .map(|(_, v)| *v);
    assert_eq!(ok, Some(10.0), "{requests:?}");
    let latency = samples(&text, "appliance_http_request_duration_seconds");
    assert!(!latency.is_empty(), "no latency histogram in:\n{text}");
    let up = samples(&text, "appliance_backend_up");
    assert_eq!(up.len(), 2, "{up:?}");
    assert!(up.iter().all(|(_, v)| *v == 1.0));
    assert_eq!(
        samples(&text, "appliance_upstream_response_duration_seconds").len(),
        1
    );

    // /status, as JSON.
    let (status, body) = get(local(admin), "/status", &[]).unwrap();
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let pool = v["pools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "pool")
        .unwrap();
    let servers = pool["servers"].as_array().unwrap();
    assert_eq!(servers.len(), 2);
    for (s, backend) in servers.iter().zip([a.port, b.port]) {
        assert_eq!(s["address"], format!("127.0.0.1:{backend}"));
        assert_eq!(s["state"], "healthy");
        assert_eq!(s["weight"], 1);
        assert_eq!(s["active_connections"], 0);
    }
    assert_eq!(pool["serves_traffic"], true);
    let listeners: Vec<String> = v["listeners"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            format!(
                "{} {}",
                l["protocol"].as_str().unwrap(),
                l["address"].as_str().unwrap()
            )
        })
        .collect();
    assert!(
        listeners.contains(&format!("http 127.0.0.1:{port}")),
        "{listeners:?}"
    );
    assert!(
        listeners.contains(&format!("admin 127.0.0.1:{admin}")),
        "{listeners:?}"
    );
    assert_eq!(v["healthz"]["ok"], true);

    // Every backend down: a request marks them failed (max_fails=1), and /healthz says 503.
    a.stop();
    b.stop();
    let status = get(local(port), "/", &[]).unwrap().0;
    assert_eq!(status, 502);
    let (code, reason) = get(local(admin), "/healthz", &[]).unwrap();
    assert_eq!(code, 503, "{reason}");
    assert!(
        reason.contains("upstream \"pool\": no usable server"),
        "{reason}"
    );
    let text = get(local(admin), "/metrics", &[]).unwrap().1;
    assert!(samples(&text, "appliance_backend_up")
        .iter()
        .all(|(_, v)| *v == 0.0));
    let v: serde_json::Value =
        serde_json::from_str(&get(local(admin), "/status", &[]).unwrap().1).unwrap();
    let states: Vec<&str> = v["pools"][0]["servers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["failed", "failed"]);

    // One comes back: once its fail_timeout has passed, a request reaches it and /healthz is 200.
    a.resume();
    let back = wait_until(Duration::from_secs(15), || {
        get(local(port), "/", &[]).map(|r| r.0) == Ok(200) && healthz(admin) == 200
    });
    assert!(
        back,
        "healthz did not recover: {:?}",
        get(local(admin), "/healthz", &[])
    );
    let text = get(local(admin), "/metrics", &[]).unwrap().1;
    let bad = samples(&text, "appliance_http_requests_total")
        .into_iter()
        .find(|(l, _)| l.get("status").map(String::as_str) == Some("502"))
        .map(|(_, v)| v);
    // The first 502, and those sent while both were still within fail_timeout.
    assert!(bad.is_some_and(|n| n >= 1.0), "{bad:?}");
}

#[test]
fn an_admin_listener_reachable_from_elsewhere_wants_the_token() {
    let dir = Scratch::new("admin-token");
    let backend = Backend::start_anywhere("A");
    let (port, admin) = (free_port(), free_port());

    // Without a token the config is refused.
    let text = config(
        &dir,
        port,
        &format!("0.0.0.0:{admin}"),
        &[backend.port],
        None,
    );
    let conf = dir.write("app.toml", &text);
    let out = std::process::Command::new(appliance_bin())
        .args(["check", "-c", &conf.to_string_lossy()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("set a token"));

    // With one, every request but /healthz must carry it.
    let _app = start(
        &dir,
        &config(
            &dir,
            port,
            &format!("0.0.0.0:{admin}"),
            &[backend.port],
            Some("s3cret"),
        ),
    );
    assert!(wait_until(Duration::from_secs(10), || healthz(admin) == 200));
    assert_eq!(get(local(admin), "/status", &[]).unwrap().0, 401);
    assert_eq!(get(local(admin), "/metrics", &[]).unwrap().0, 401);
    assert_eq!(
        get(
            local(admin),
            "/metrics",
            &[("Authorization", "Bearer wrong")]
        )
        .unwrap()
        .0,
        401
    );
    assert_eq!(
        get(
            local(admin),
            "/metrics",
            &[("Authorization", "Bearer s3cret")]
        )
        .unwrap()
        .0,
        200
    );
    assert_eq!(
        get(
            local(admin),
            "/status",
            &[("Authorization", "Bearer s3cret")]
        )
        .unwrap()
        .0,
        200
    );
}
