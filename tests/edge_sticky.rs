//! Sticky sessions through the appliance binary: the seed's own check (curl with a cookie jar),
//! two appliances agreeing on a cookie, tampered cookies ignored, fallback when the sticky
//! backend goes away, and application-cookie stickiness.

#[path = "edge/mod.rs"]
mod edge;
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use edge::{backends, server_passing_to, servers, Appliance, Backend};

fn lb_cookie_config(backends: &[Backend], extra_global: &str) -> String {
    format!(
        r#"
{extra_global}
[[http.upstream]]
name = "app"
{}
sticky = {{ mode = "lb_cookie", expires = "1h" }}
{}"#,
        servers(backends),
        server_passing_to("app")
    )
}

/// Which backend answered each of `n` requests sent with `cookie`.
fn served(appliance: &Appliance, cookie: Option<&str>, n: usize) -> Vec<String> {
    (0..n)
        .map(|_| {
            let r = appliance.get("/", cookie);
            assert_eq!(r.status, 200);
            r.body
        })
        .collect()
}

fn distinct(v: &[String]) -> BTreeSet<&str> {
    v.iter().map(String::as_str).collect()
}

#[test]
fn curl_with_a_cookie_jar_stays_on_one_backend() {
    let (_, backends) = backends(&["a", "b", "c"]);
    let appliance = Appliance::start("sticky-curl", &lb_cookie_config(&backends, ""));
    let jar = appliance.dir.join("cookies.txt");
    let url = format!("http://{}/", appliance.addr);
    let mut bodies = Vec::new();
    for _ in 0..12 {
        let out = Command::new("curl")
            .args(["-s", "--max-time", "10", "-c"])
            .arg(&jar)
            .arg("-b")
            .arg(&jar)
            .arg(&url)
            .output()
            .expect("curl runs");
        assert!(out.status.success(), "curl failed: {out:?}");
        bodies.push(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    let jar_text = std::fs::read_to_string(&jar).unwrap();
    println!("curl with a jar: {bodies:?}\njar:\n{jar_text}");
    assert_eq!(distinct(&bodies).len(), 1, "one backend for the session");
    assert!(
        jar_text.contains("AWSELB"),
        "the jar holds the balancer cookie"
    );
    // Without the cookie the same appliance spreads requests: stickiness is the cookie's doing.
    let plain = served(&appliance, None, 6);
    assert_eq!(distinct(&plain).len(), 3, "{plain:?}");
}

/// A cookie for each backend from `appliance`.
fn cookies_for_every_backend(appliance: &Appliance) -> BTreeMap<String, String> {
    let mut cookies = BTreeMap::new();
    for _ in 0..9 {
        let r = appliance.get("/", None);
        let set = r
            .set_cookie_header("AWSELB")
            .expect("a fresh client gets a cookie");
        assert!(
            set.contains("Max-Age=3600") && set.contains("Expires=") && set.contains("Path=/"),
            "{set}"
        );
        let cookie = r.set_cookie("AWSELB").unwrap();
        cookies.insert(r.body, cookie);
    }
    assert_eq!(cookies.len(), 3);
    cookies
}

#[test]
fn two_appliances_with_one_config_route_a_cookie_alike() {
    let (_, backends) = backends(&["a", "b", "c"]);
    let config = lb_cookie_config(&backends, "");
    let one = Appliance::start("sticky-fleet-1", &config);
    let two = Appliance::start("sticky-fleet-2", &config);
    let cookies = cookies_for_every_backend(&one);
    for (backend, cookie) in &cookies {
        let there = served(&two, Some(cookie), 4);
        println!("cookie from one for {backend}: two sends it to {there:?}");
        assert!(there.iter().all(|b| b == backend), "{backend}: {there:?}");
        // A valid cookie for the backend that served: nothing re-issued.
        assert!(two.get("/", Some(cookie)).set_cookie("AWSELB").is_none());
    }
    // A fleet with a shared secret agrees too, and does not take the keyless fleet's cookies.
    let secret = "[global]\nsticky_secret = \"correct horse battery staple\"";
    let three = Appliance::start("sticky-fleet-3", &lb_cookie_config(&backends, secret));
    let four = Appliance::start("sticky-fleet-4", &lb_cookie_config(&backends, secret));
    let secret_cookies = cookies_for_every_backend(&three);
    for (backend, cookie) in &secret_cookies {
        assert!(served(&four, Some(cookie), 3).iter().all(|b| b == backend));
    }
    let foreign = cookies.values().next().unwrap();
    let r = three.get("/", Some(foreign));
    assert!(
        r.set_cookie("AWSELB").is_some(),
        "a foreign cookie is replaced"
    );
    let spread = served(&three, Some(foreign), 6);
    assert_eq!(
        distinct(&spread).len(),
        3,
        "a foreign cookie is not followed: {spread:?}"
    );
}

#[test]
fn a_tampered_cookie_is_ignored() {
    let (_, backends) = backends(&["a", "b", "c"]);
    let appliance = Appliance::start("sticky-tamper", &lb_cookie_config(&backends, ""));
    let cookies = cookies_for_every_backend(&appliance);
    let (backend, cookie) = cookies.iter().next().unwrap();
    let value = cookie.strip_prefix("AWSELB=").unwrap();
    let parts: Vec<&str> = value.split('.').collect();
    let other_tag = cookies.values().nth(1).unwrap()["AWSELB=".len()..]
        .split('.')
        .next()
        .unwrap();
    let far_future = "9999999999";
    let flip = |s: &str| {
        let mut b = s.as_bytes().to_vec();
        b[0] = if b[0] == b'0' { b'1' } else { b'0' };
        String::from_utf8(b).unwrap()
    };
    let tampered = [
        // Another backend's tag under this cookie's MAC.
        format!("AWSELB={other_tag}.{}.{}", parts[1], parts[2]),
        // A longer life.
        format!("AWSELB={}.{far_future}.{}", parts[0], parts[2]),
        // A changed MAC, a changed tag.
        format!("AWSELB={}.{}.{}", parts[0], parts[1], flip(parts[2])),
        format!("AWSELB={}.{}.{}", flip(parts[0]), parts[1], parts[2]),
        // An address the client would like.
        format!("AWSELB={}", backends[2].addr),
    ];
    for bad in &tampered {
        let first = appliance.get("/", Some(bad));
        assert!(
            first.set_cookie("AWSELB").is_some(),
            "{bad}: a fresh cookie replaces it"
        );
        let spread = served(&appliance, Some(bad), 6);
        println!("{bad} (was {backend}): {spread:?}");
        assert_eq!(distinct(&spread).len(), 3, "{bad} must not pin a backend");
    }
}

#[test]
fn a_sticky_backend_that_goes_down_falls_back_and_reissues() {
    let (_, backends) = backends(&["a", "b", "c"]);
    let appliance = Appliance::start("sticky-down", &lb_cookie_config(&backends, ""));
    let cookies = cookies_for_every_backend(&appliance);
    let cookie_b = &cookies["b"];
    assert!(served(&appliance, Some(cookie_b), 3)
        .iter()
        .all(|s| s == "b"));
    backends[1].stop();
    let r = appliance.get("/", Some(cookie_b));
    assert_eq!(r.status, 200, "the request falls back to another backend");
    assert_ne!(r.body, "b");
    let fresh = r.set_cookie("AWSELB").expect("the cookie is re-issued");
    assert_ne!(&fresh, cookie_b);
    let again = served(&appliance, Some(&fresh), 4);
    println!("b down: fell back to {}, then {again:?}", r.body);
    assert!(
        again.iter().all(|s| *s == r.body),
        "sticks to the new backend"
    );
}

#[test]
fn app_cookie_stickiness_follows_the_applications_cookie() {
    let (_, backends) = backends(&["a", "b", "c"]);
    let config = format!(
        r#"
[[http.upstream]]
name = "app"
{}
sticky = {{ mode = "app_cookie", cookie = "JSESSIONID" }}
{}"#,
        servers(&backends),
        server_passing_to("app")
    );
    let appliance = Appliance::start("sticky-app", &config);
    // Until the application sets its cookie there is nothing to follow.
    let plain = appliance.get("/", None);
    assert!(plain.set_cookie("AWSELB").is_none());
    let login = appliance.get("/login", None);
    let session = login
        .set_cookie("JSESSIONID")
        .expect("the app sets its cookie");
    let balancer = login
        .set_cookie("AWSELB")
        .expect("the balancer cookie comes with it");
    assert!(login
        .set_cookie_header("AWSELB")
        .unwrap()
        .contains("Path=/"));
    let both = format!("{session}; {balancer}");
    let followed = served(&appliance, Some(&both), 6);
    println!("session {session} from {}: {followed:?}", login.body);
    assert!(followed.iter().all(|s| *s == login.body));
    // The same balancer cookie with another session (or none) is not followed.
    let other = format!("JSESSIONID=someone-else; {balancer}");
    assert_eq!(distinct(&served(&appliance, Some(&other), 6)).len(), 3);
    assert_eq!(distinct(&served(&appliance, Some(&balancer), 6)).len(), 3);
    // A new login elsewhere moves the session: the new pair is followed.
    let mut relogin = appliance.get("/login", Some(&both));
    while relogin.body == login.body {
        relogin = appliance.get("/login", None);
    }
    let moved = format!(
        "{}; {}",
        relogin.set_cookie("JSESSIONID").unwrap(),
        relogin.set_cookie("AWSELB").unwrap()
    );
    assert!(served(&appliance, Some(&moved), 4)
        .iter()
        .all(|s| *s == relogin.body));
}

#[test]
fn a_sticky_backend_failing_its_health_check_falls_back_and_returns() {
    let (port, backends) = backends(&["a", "b", "c"]);
    let config = format!(
        r#"
[[http.upstream]]
name = "app"
{}
sticky = {{ mode = "lb_cookie", expires = "1h" }}
health_check = {{ target = "HTTP:{port}/status", interval = "300ms", timeout = "200ms", unhealthy_threshold = 2, healthy_threshold = 2 }}
{}"#,
        servers(&backends),
        server_passing_to("app")
    );
    let appliance = Appliance::start("sticky-health", &config);
    let cookies = cookies_for_every_backend(&appliance);
    let b = &backends[1];
    let limit = std::time::Duration::from_secs(20);
    b.status.store(503, std::sync::atomic::Ordering::SeqCst);
    // Two failures take it out; the third check is sent only after the second was applied.
    let from = b.checks().0;
    b.wait_checks(from, 3, limit);
    let hits = b.client_hits();
    let r = appliance.get("/", Some(&cookies["b"]));
    assert_ne!(r.body, "b", "an unhealthy sticky backend is not used");
    let fresh = r.set_cookie("AWSELB").expect("re-issued for the fallback");
    assert!(served(&appliance, Some(&fresh), 3)
        .iter()
        .all(|s| *s == r.body));
    assert_eq!(b.client_hits(), hits);
    // Back in rotation, its old cookie leads to it again.
    b.status.store(200, std::sync::atomic::Ordering::SeqCst);
    let from = b.checks().0;
    b.wait_checks(from, 3, limit);
    let back = served(&appliance, Some(&cookies["b"]), 3);
    println!(
        "b unhealthy: fell back to {}; b healthy again: {back:?}",
        r.body
    );
    assert!(back.iter().all(|s| s == "b"));
}
