//! Connection draining through the appliance binary: a reload (SIGHUP) that removes a backend
//! lets the request in flight there finish, sends new requests elsewhere, and with a short
//! `drain_timeout` cuts the long request at the deadline.

#[path = "edge/mod.rs"]
mod edge;
mod support;

use std::time::{Duration, Instant};

use edge::{backends, server_passing_to, servers, Appliance, Backend};

fn config(backends: &[Backend], drain: Option<&str>) -> String {
    let drain = drain.map_or(String::new(), |d| format!("drain_timeout = \"{d}\""));
    format!(
        r#"
[[http.upstream]]
name = "app"
{}
{drain}
[http.proxy]
read_timeout = "60s"
{}"#,
        servers(backends),
        server_passing_to("app")
    )
}

/// Starts a slow request and returns its thread, once a backend has it; and which backend.
fn slow_request(
    appliance: &Appliance,
    backends: &[Backend],
    ms: u64,
) -> (
    std::thread::JoinHandle<(std::io::Result<edge::Response>, Duration)>,
    usize,
) {
    let before: Vec<usize> = backends.iter().map(Backend::client_hits).collect();
    let addr = appliance.addr;
    let path = format!("/slow?ms={ms}");
    let handle = std::thread::spawn(move || {
        let t0 = Instant::now();
        let r = edge::get(addr, &path, None);
        (r, t0.elapsed())
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(i) = (0..backends.len()).find(|i| backends[*i].client_hits() > before[*i]) {
            return (handle, i);
        }
        assert!(
            Instant::now() < deadline,
            "the slow request reached no backend"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_request_in_flight_survives_the_removal_of_its_backend() {
    let (_, backends) = backends(&["a", "b"]);
    let appliance = Appliance::start("drain-survive", &config(&backends, None));
    let (slow, at) = slow_request(&appliance, &backends, 3000);
    let (gone, stays) = (&backends[at], &backends[1 - at]);
    appliance.reload(&config(std::slice::from_ref(stays), None));
    let gone_hits = gone.client_hits();
    for _ in 0..10 {
        let r = appliance.get("/", None);
        assert_eq!((r.status, r.body.as_str()), (200, stays.name.as_str()));
    }
    assert_eq!(
        gone.client_hits(),
        gone_hits,
        "no new request goes to the removed backend"
    );
    let (result, took) = slow.join().unwrap();
    let r = result.expect("the request in flight completes");
    println!(
        "request in flight on {} survived its removal: {} {:?} after {took:?}",
        gone.name, r.status, r.body
    );
    assert_eq!((r.status, r.body.as_str()), (200, gone.name.as_str()));
    assert!(appliance
        .log_text()
        .contains("requests in flight finish there"));
}

#[test]
fn a_short_drain_timeout_cuts_the_long_request_at_the_deadline() {
    let (_, backends) = backends(&["a", "b"]);
    let appliance = Appliance::start("drain-cut", &config(&backends, Some("1s")));
    // A long request, and a short one that finishes within the drain timeout.
    let (long, at) = slow_request(&appliance, &backends, 20_000);
    let (gone, stays) = (&backends[at], &backends[1 - at]);
    let short = loop {
        let (handle, i) = slow_request(&appliance, &backends, 300);
        if i == at {
            break handle;
        }
        // It went to the other backend; let it finish and try again.
        let _ = handle.join();
    };
    let reloaded = Instant::now();
    appliance.reload(&config(std::slice::from_ref(stays), Some("1s")));
    for _ in 0..5 {
        assert_eq!(appliance.get("/", None).body, stays.name);
    }
    let (short_result, _) = short.join().unwrap();
    let short_response = short_result.expect("the short request completes");
    assert_eq!(
        (short_response.status, short_response.body.as_str()),
        (200, gone.name.as_str()),
        "a request that ends within drain_timeout is not disturbed"
    );
    let (result, took) = long.join().unwrap();
    let since_reload = reloaded.elapsed();
    println!(
        "long request on {}: {:?} after {took:?} ({since_reload:?} after the reload; the backend \
         would have answered after 20s)",
        gone.name,
        result.as_ref().map(|r| (r.status, r.body.clone()))
    );
    // Cut: no answer from the backend (it would have taken 20 s), a 502 from the appliance.
    let r = result.expect("the appliance answers the cut request");
    assert_eq!(r.status, 502, "cut at the drain deadline");
    assert!(appliance.log_text().contains("drain timeout of server"));
}
