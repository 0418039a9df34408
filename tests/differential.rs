//! Differential tests (issue 3): nginx 1.22 and the appliance run the same nginx.conf in front of
//! the same recording backends and must agree on every response, on which backend served each
//! request, and on the exact request (line and headers, byte for byte) each backend received.
//!
//! Run against the appliance (the default):   cargo test --test differential
//! Check the harness with nginx in both slots: APPLIANCE_DIFF_TARGET=nginx cargo test --test differential
//! Print nginx's transcript of each scenario:  APPLIANCE_DIFF_SHOW=1 ... -- --nocapture
//!
//! How to read a scenario: `{listen}` is the proxy's address, `{b0}`, `{b1}`, ... are recording
//! backends. Each backend answers 200 `backend <i>` unless its plan says otherwise (`Status`,
//! `Reset`, `Hang`, `Hold` until released, `Slow`, `InvalidHeader`; `.on(n, ..)` for its n-th
//! request only). Steps run in order; `send` waits for the response, `start` leaves a request
//! held at a backend. See tests/support/scenario.rs.

mod support;

use support::backends::{
    Behaviour::*, Plan, BODY_HEADER, CHUNKED_HEADER, GZIP_HEADER, HEADERS_HEADER, LENGTH_HEADER,
    REDIRECT_HEADER, TYPE_HEADER,
};
use support::chi_square::chi_square;
use support::client::{get, post, Request};
use support::scenario::*;

/// The request as a POST with a one-byte chunked body: that takes it off the appliance's fast
/// path, onto Pingora's session, so a scenario covers both.
fn on_pingora_session(request: Request) -> Request {
    request
        .method("POST")
        .header("Transfer-Encoding", "chunked")
        .raw_body("1\r\nx\r\n0\r\n\r\n")
}

fn paths(prefix: &str, count: usize) -> impl Iterator<Item = Request> + '_ {
    (1..=count).map(move |i| get(&format!("{prefix}{i}")))
}

// ---------------------------------------------------------------------------------------------
// Balancers

/// Smooth weighted round robin: weights 5 1 1 give a a b a c a a, twice.
#[test]
fn round_robin_with_weights() {
    Scenario::new("round robin with weights")
        .backends(3)
        .master_process()
        .config(
            "upstream pool {
                 server {b0} weight=5;
                 server {b1};
                 server {b2};
             }
             server {
                 listen {listen};
                 location / { proxy_pass http://pool; }
             }",
        )
        .send_all(paths("/r", 14))
        .run();
}

/// least_conn: requests held open on some backends steer new ones to the others; weights
/// divide the counts; ties go by weighted round robin.
#[test]
fn least_conn() {
    Scenario::new("least_conn")
        .backends(3)
        .config(
            "upstream pool {
                 least_conn;
                 server {b0};
                 server {b1};
                 server {b2} weight=2;
             }
             server {
                 listen {listen};
                 location / { proxy_pass http://pool; }
             }",
        )
        .step(plan_all(Plan::always(Hold)))
        .steps(paths("/held", 4).map(start))
        .step(plan_all(Plan::ok()))
        .send_all(paths("/while-held", 4))
        .step(release(2))
        .send_all(paths("/after-release-2-", 4))
        .step(release(0))
        .send_all(paths("/after-release-0-", 4))
        .run();
}

/// ip_hash: the first three octets of the client address pick the server; a `down` server
/// keeps its place in the hash.
#[test]
fn ip_hash() {
    let clients = [
        "127.0.0.1",
        "127.0.1.1",
        "127.0.2.1",
        "127.0.3.9",
        "127.1.0.1",
        "127.2.3.4",
        "127.9.9.9",
        "127.10.20.30",
        "127.100.1.1",
        "127.200.5.5",
        "127.255.0.1",
        "127.0.1.200",
    ];
    Scenario::new("ip_hash")
        .backends(4)
        .config(
            "upstream pool {
                 ip_hash;
                 server {b0};
                 server {b1} weight=2;
                 server {b2};
                 server {b3} down;
             }
             server {
                 listen {listen};
                 location / { proxy_pass http://pool; }
             }",
        )
        .send_all((0..2).flat_map(|_| clients.iter().map(|c| get("/").from(c))))
        .run();
}

/// hash $request_uri: crc32 of the key modulo the weights; a failing server is skipped by
/// rehashing, a `down` one too.
#[test]
fn hash_request_uri() {
    Scenario::new("hash $request_uri")
        .backends(4)
        .plan(1, Plan::always(Reset))
        .config(
            "upstream pool {
                 hash $request_uri;
                 server {b0};
                 server {b1};
                 server {b2} weight=2;
                 server {b3} down;
             }
             server {
                 listen {listen};
                 location / { proxy_pass http://pool; }
             }",
        )
        .send_all(paths("/item/", 24))
        .send_all(paths("/item/", 6))
        .run();
}

/// hash ... consistent: ketama points from the server strings as written.
#[test]
fn hash_consistent() {
    Scenario::new("hash $request_uri consistent")
        .backends(4)
        .config(
            "upstream pool {
                 hash $request_uri consistent;
                 server {b0};
                 server {b1} weight=3;
                 server {b2};
                 server {b3};
             }
             server {
                 listen {listen};
                 location / { proxy_pass http://pool; }
             }",
        )
        .send_all(paths("/user/", 30))
        .send_all(paths("/user/", 5))
        .run();
}

/// random: each request goes to a server with probability weight / total.
#[test]
fn random_follows_weights() {
    Scenario::new("random")
        .backends(3)
        .config(
            "upstream pool {
                 random;
                 server {b0} weight=3;
                 server {b1} weight=2;
                 server {b2};
             }
             server {
                 listen {listen};
                 location / { proxy_pass http://pool; }
             }",
        )
        .send_all((0..600).map(|_| get("/")))
        .run_distribution(|_| vec![3.0 / 6.0, 2.0 / 6.0, 1.0 / 6.0]);
}

/// random two least_conn: two distinct servers drawn by weight, the one with fewer connections
/// (per weight) wins, the second drawn on a tie. One request is held, so its server only wins
/// against... nobody: it never gets another request.
#[test]
fn random_two_least_conn() {
    let weights = [3.0, 2.0, 1.0];
    Scenario::new("random two least_conn")
        .backends(3)
        .config(
            "upstream pool {
                 random two least_conn;
                 server {b0} weight=3;
                 server {b1} weight=2;
                 server {b2};
             }
             server {
                 listen {listen};
                 location / { proxy_pass http://pool; }
             }",
        )
        .step(plan_all(Plan::always(Hold)))
        .step(start(get("/held")))
        .step(plan_all(Plan::ok()))
        .send_all((0..600).map(|_| get("/")))
        .run_distribution(move |observation| {
            // The held request's server has one connection, everybody else none.
            let mut conns = [0.0; 3];
            if let Some(held) = observation.outcomes[0].backend() {
                conns[held] = 1.0;
            }
            random_two_shares(&weights, &conns)
        });
}

/// The share each server gets under `random two`, from the weights and the (fixed) connection
/// counts: first draw i with p_i, second draw j != i with p_j / (1 - p_i); j wins unless it has
/// more connections per weight than i.
fn random_two_shares(weights: &[f64], conns: &[f64]) -> Vec<f64> {
    let total: f64 = weights.iter().sum();
    let p: Vec<f64> = weights.iter().map(|w| w / total).collect();
    let mut shares = vec![0.0; weights.len()];
    for i in 0..p.len() {
        for j in (0..p.len()).filter(|&j| j != i) {
            let pair = p[i] * p[j] / (1.0 - p[i]);
            let winner = if conns[j] * weights[i] > conns[i] * weights[j] {
                i
            } else {
                j
            };
            shares[winner] += pair;
        }
    }
    shares
}

// ---------------------------------------------------------------------------------------------
// Server flags and passive health

/// backup: used only once every primary has failed, within the same request.
#[test]
fn backup() {
    Scenario::new("backup")
        .backends(3)
        .config(
            "upstream pool {
                 server {b0};
                 server {b1};
                 server {b2} backup;
             }
             server {
                 listen {listen};
                 location / { proxy_pass http://pool; }
             }",
        )
        .send_all(paths("/both-up-", 3))
        .steps([refuse(0), refuse(1)])
        .send_all(paths("/both-refusing-", 3))
        .steps([accept(0), accept(1)])
        .send_all(paths("/back-but-still-failed-", 2))
        .run();
}

/// down: never chosen.
#[test]
fn down() {
    Scenario::new("down")
        .backends(3)
        .config(
            "upstream pool {
                 server {b0};
                 server {b1} down;
                 server {b2} weight=2;
             }
             server {
                 listen {listen};
                 location / { proxy_pass http://pool; }
             }",
        )
        .send_all(paths("/r", 6))
        .run();
}

/// max_conns: a full server is skipped; when all primaries are full the backup serves, and an
/// upstream with nothing left answers 502.
#[test]
fn max_conns() {
    Scenario::new("max_conns")
        .backends(4)
        .config(
            "upstream pool {
                 server {b0} max_conns=1;
                 server {b1} max_conns=2;
                 server {b2} backup;
             }
             upstream solo {
                 server {b3} max_conns=1;
             }
             server {
                 listen {listen};
                 location / { proxy_pass http://pool; }
                 location /solo/ { proxy_pass http://solo; }
             }",
        )
        .step(plan_all(Plan::always(Hold)))
        .steps(paths("/held", 4).map(start))
        .step(start(get("/solo/held")))
        .step(plan_all(Plan::ok()))
        .send_all(paths("/full-", 2))
        .send(get("/solo/full"))
        .step(release(0))
        .send_all(paths("/b0-free-", 2))
        .step(release(3))
        .send(get("/solo/free"))
        .run();
}

/// max_fails / fail_timeout as a timeline: two failures take b0 out, it stays out while the
/// timeout runs, then gets one request to prove itself and comes back.
#[test]
fn max_fails_and_fail_timeout() {
    Scenario::new("max_fails=2 fail_timeout=2s")
        .backends(2)
        .plan(0, Plan::ok().on(1, Reset).on(2, Reset))
        .config(
            "upstream pool {
                 server {b0} max_fails=2 fail_timeout=2s;
                 server {b1};
             }
             server {
                 listen {listen};
                 location / { proxy_pass http://pool; }
             }",
        )
        .send_all(paths("/failing-", 6))
        .send_all(paths("/out-", 3))
        // fail_timeout counts whole seconds in nginx: 3.5 s is surely past 2 s.
        .step(pause_ms(3500))
        .send_all(paths("/back-", 6))
        .run();
}

/// Every server failed: the request that fails them gets 502 after trying each, the next one
/// 502 without any attempt ("no live upstreams").
#[test]
fn no_live_upstreams() {
    Scenario::new("no live upstreams")
        .backends(2)
        .plan(0, Plan::always(Reset))
        .plan(1, Plan::always(Reset))
        .config(
            "upstream pool {
                 server {b0};
                 server {b1};
             }
             server {
                 listen {listen};
                 location / { proxy_pass http://pool; }
             }",
        )
        .send_all(paths("/r", 4))
        .run();
}

/// keepalive: with HTTP/1.1 and an empty Connection header requests reuse pooled upstream
/// connections (up to keepalive_requests each); without, every request opens its own.
#[test]
fn keepalive_pool() {
    Scenario::new("keepalive")
        .backends(2)
        .config(
            "upstream pool {
                 server {b0};
                 server {b1};
                 keepalive 2;
                 keepalive_requests 3;
             }
             server {
                 listen {listen};
                 location /pooled/ {
                     proxy_pass http://pool;
                     proxy_http_version 1.1;
                     proxy_set_header Connection \"\";
                 }
                 location /plain/ { proxy_pass http://pool; }
             }",
        )
        .send_all(paths("/pooled/", 8))
        .send_all(paths("/plain/", 2))
        .send_all(paths("/pooled/again-", 4))
        .send(get("/pooled/http10").http10())
        .run();
}

// ---------------------------------------------------------------------------------------------
// Routing

/// Location matching: `=` first, then the longest prefix (nested ones inside it), then regexes
/// in order unless the prefix was `^~`; `~*` ignores case. URIs are normalised first.
#[test]
fn location_matching() {
    Scenario::new("location matching")
        .backends(0)
        .config(
            r#"server {
                 listen {listen};
                 location = / { return 200 "exact /\n"; }
                 location / { return 200 "prefix /\n"; }
                 location /docs/ {
                     return 200 "prefix /docs/\n";
                     location /docs/api/ { return 200 "nested /docs/api/\n"; }
                     location ~ \.pdf$ { return 200 "nested regex .pdf\n"; }
                 }
                 location ^~ /static/ { return 200 "^~ /static/\n"; }
                 location ~ \.(png|jpg)$ { return 200 "regex png|jpg\n"; }
                 location ~* \.GIF$ { return 200 "regex ~* gif\n"; }
                 location ~ ^/static/never { return 200 "regex that ^~ hides\n"; }
                 location ~ ^/a { return 200 "regex ^/a (first)\n"; }
                 location ~ ^/ab { return 200 "regex ^/ab (second)\n"; }
                 location /exact { return 200 "prefix /exact\n"; }
                 location = /exact { return 200 "exact /exact\n"; }
                 location /Case/ { return 200 "prefix /Case/\n"; }
             }"#,
        )
        .send_all(
            [
                "/",
                "/index.html",
                "/docs/",
                "/docs",
                "/docs/guide",
                "/docs/api/x",
                "/docs/api/x.pdf",
                "/docs/x.pdf",
                "/static/x.png",
                "/static/never",
                "/img.png",
                "/img.GIF",
                "/img.gif",
                "/a/b",
                "/ab",
                "/xab",
                "/exact",
                "/exact/more",
                "/exactly",
                "/Case/x",
                "/case/x",
                "/d%6Fcs/guide",
                "/docs/../static/x.png",
                "/docs//api/x",
                "/docs/api/?q=1.pdf",
                "/docs/x.pdf?download=1",
            ]
            .map(get),
        )
        .run();
}

/// proxy_pass with a URI replaces the matched prefix (and sends the normalised, re-escaped
/// URI); without one the client's URI goes upstream untouched, also from a regex location.
#[test]
fn proxy_pass_uri_rewriting() {
    Scenario::new("proxy_pass URI")
        .backends(2)
        .config(
            r#"upstream pool { server {b1}; }
             server {
                 listen {listen};
                 location /app/ { proxy_pass http://{b0}/backend/; }
                 location /strip/ { proxy_pass http://{b0}/; }
                 location /short { proxy_pass http://{b0}/long; }
                 location /keep/ { proxy_pass http://{b0}; }
                 location ~ ^/re/(.*)$ { proxy_pass http://{b0}; }
                 location = /exact { proxy_pass http://{b0}/target; }
                 location /up/ { proxy_pass http://pool/u/; }
             }"#,
        )
        .send_all(
            [
                "/app/x?q=1",
                "/app/a%20b",
                "/app/a%41",
                "/app/",
                "/strip/x/y",
                "/shortened",
                "/keep/a%41?x=%20",
                "/keep/../keep/x",
                "/re/z%2Fq?y=1",
                "/exact",
                "/exact?x=1",
                "/up/thing",
                "/app//double//slash",
            ]
            .map(get),
        )
        .run();
}

/// proxy_redirect on the Location and Refresh of a backend's 302: the default rule of each
/// proxy_pass form (and the one a nested location inherits), `off`, text and regex rules with
/// variables and captures, the first match winning, a rule set for the whole server, a
/// relative result made absolute with the client's Host (or the address it reached), and
/// URLs no rule matches passed as they came.
#[test]
fn proxy_redirect() {
    let redirect = |path: &str, url: &str| get(path).header(REDIRECT_HEADER, url);
    let chunked = on_pingora_session;
    Scenario::new("proxy_redirect")
        .backends(1)
        .config(
            r#"upstream u { server {b0}; }
             server {
                 listen {listen};
                 location / { proxy_pass http://u; }
                 location /one/ { proxy_pass http://u/two/; }
                 location /off/ { proxy_pass http://u; proxy_redirect off; }
                 location /rules/ {
                     proxy_pass http://u;
                     proxy_redirect http://u/a/ http://$host:$server_port/b/;
                     proxy_redirect ~^http://([^/]+)/c/(.*)$ /c/$1/$2;
                     proxy_redirect default;
                 }
                 location /nested/ {
                     proxy_pass http://u/inner/;
                     location /nested/deeper/ { proxy_pass http://u/deep/; }
                 }
                 location ~ \.php$ { proxy_pass http://u; }
                 location = /exact { proxy_pass http://u/e; }
             }
             server {
                 listen {listen1};
                 proxy_redirect http://u/ /from-server/;
                 location / { proxy_pass http://u; }
             }"#,
        )
        .send_all([
            redirect("/", "http://u/x?y=1"),
            redirect("/", "/relative"),
            redirect("/", "http://other/x"),
            redirect("/", "HTTP://U/case"),
            redirect("/one/a", "http://u/two/b"),
            redirect("/one/a", "http://u/elsewhere"),
            redirect("/off/", "http://u/x"),
            redirect("/rules/", "http://u/a/z"),
            redirect("/rules/", "http://u:8080/c/q"),
            redirect("/rules/", "http://u/zz"),
            redirect("/nested/deeper/x", "http://u/inner/y"),
            redirect("/nested/deeper/x", "http://u/deep/y"),
            redirect("/x.php", "http://u/p"),
            redirect("/exact", "http://u/e/q"),
            redirect("/", "http://u/x").host("Front.Example:8080"),
            redirect("/", "http://u/x").http10(),
            redirect("/", "http://u/x").on_listener(1),
            // A chunked body: the appliance serves these through Pingora, not its fast path.
            chunked(redirect("/one/a", "http://u/two/b")),
            chunked(redirect("/rules/", "http://u:8080/c/q")),
            chunked(redirect("/", "http://other/x")),
        ])
        .run();
}

/// allow and deny: the first rule that holds the client decides, a location with rules of its
/// own ignores the server's, a nested location inherits, `return` answers before the rules are
/// looked at, IPv6 rules say nothing of IPv4 clients, a CIDR block's low bits are cleared, and
/// a denied request to a location that serves nothing is 403 rather than 404.
#[test]
fn allow_and_deny() {
    let paths = [
        "/",
        "/admin/x",
        "/ret",
        "/nested/x",
        "/nested/inner/x",
        "/v6",
        "/cidr",
    ];
    let sources = ["127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4"];
    let mut requests: Vec<Request> = sources
        .iter()
        .flat_map(|source| paths.iter().map(move |path| get(path).from(source)))
        .collect();
    requests.extend(
        sources
            .iter()
            .map(|source| get("/").from(source).on_listener(1)),
    );
    // A chunked body: the appliance serves these through Pingora, not its fast path.
    requests.extend(["127.0.0.1", "127.0.0.2"].iter().map(|source| {
        post("/admin/x", "")
            .from(source)
            .header("Transfer-Encoding", "chunked")
            .raw_body("1\r\nx\r\n0\r\n\r\n")
    }));
    Scenario::new("allow and deny")
        .backends(1)
        .config(
            r#"upstream u { server {b0}; }
             server {
                 listen {listen};
                 deny 127.0.0.4;
                 location / { proxy_pass http://u; }
                 location /admin/ {
                     allow 127.0.0.2;
                     deny 127.0.0.0/30;
                     allow all;
                     proxy_pass http://u;
                 }
                 location /ret { deny all; return 200 "returned
"; }
                 location /nested/ {
                     deny 127.0.0.3;
                     proxy_pass http://u;
                     location /nested/inner/ { proxy_pass http://u; }
                 }
                 location /v6 { deny ::1; deny ::/0; proxy_pass http://u; }
                 location /cidr { deny 127.0.0.3/31; proxy_pass http://u; }
             }
             server {
                 listen {listen1};
                 allow 127.0.0.1;
                 deny all;
                 # No file to serve, whatever nginx's prefix.
                 root /nonexistent;
             }"#,
        )
        .send_all(requests)
        .run();
}

/// valid_referers and `$invalid_referer`: none, blocked, server_names (exact, wildcard and
/// regex names), hosts with a path prefix, leading and trailing wildcards, regexes; a
/// location's own rules over its server's (with its server's regexes when it has none, as
/// nginx merges them), a nested location inheriting them, `set` over the variable, a
/// server-level `if` with the server's rules, whose value the request keeps (nginx caches
/// it: a location's other rules change nothing after), and the value in a proxied request's
/// header, on the fast path and on Pingora's session.
#[test]
fn valid_referers() {
    let referers: [Option<&str>; 25] = [
        None,
        Some(""),
        Some("http://example.com/"),
        Some("http://EXAMPLE.com:80/x"),
        Some("https://www.google.com/"),
        Some("http://google.de"),
        Some("http://exa"),
        Some("ftp://example.com/"),
        Some("http://example.com/pics/a.png"),
        Some("http://example.com/pic"),
        Some("http://a.wild.com"),
        Some("http://wild.com"),
        Some("http://www.tail.co.uk/"),
        Some("http://www.tail./"),
        Some("http://dot.org"),
        Some("http://x.dot.org"),
        Some("http://www.site.org/"),
        Some("http://a.site.net"),
        Some("http://img12.site.com/"),
        Some("http://IMG12.site.com/"),
        Some("http://example.com:8080/pics/z"),
        Some("HTTP://example.com"),
        Some("http://example.com?x"),
        Some("http://www.google.com.evil/"),
        Some("https://good.test/any"),
    ];
    let with = |request: Request, referer: Option<&str>| match referer {
        Some(value) => request.header("Referer", value),
        None => request,
    };
    let mut requests = Vec::new();
    for referer in referers {
        requests.push(with(get("/"), referer));
        requests.push(with(get("/own/x"), referer));
        requests.push(with(get("/").on_listener(1), referer));
        requests.push(with(get("/own2/x").on_listener(1), referer));
    }
    for referer in [None, Some("http://a.wild.com"), Some("http://wild.com")] {
        for path in ["/own/inner/x", "/open", "/set"] {
            requests.push(with(get(path), referer));
        }
        requests.push(with(get("/nocheck/x").on_listener(1), referer));
        requests.push(with(on_pingora_session(get("/")), referer));
    }
    Scenario::new("valid_referers")
        .backends(1)
        .config(
            r#"upstream u { server {b0}; }
             server {
                 listen {listen};
                 server_name www.site.org *.site.net ~^img\d+\.site\.com$;
                 valid_referers blocked server_names example.com/pics/ *.wild.com
                                www.tail.* .dot.org;
                 location / {
                     if ($invalid_referer) { return 403; }
                     proxy_set_header X-Invalid-Referer "[$invalid_referer]";
                     proxy_pass http://u;
                 }
                 location /own/ {
                     valid_referers none example.com;
                     valid_referers ~\.google\.;
                     if ($invalid_referer) { return 403 "refused by /own/
"; }
                     return 200 "own [$invalid_referer]
";
                     location /own/inner/ { return 200 "inner [$invalid_referer]
"; }
                 }
                 location /open { return 200 "open [$invalid_referer]
"; }
                 location /set { set $invalid_referer "x"; return 200 "set [$invalid_referer]
"; }
             }
             server {
                 listen {listen1};
                 valid_referers none good.test ~\.google\.;
                 if ($invalid_referer) { return 403 "refused by the server
"; }
                 location / { proxy_pass http://u; }
                 location /own2/ {
                     valid_referers other.test;
                     return 200 "own2 [$invalid_referer]
";
                 }
                 location /nocheck/ { valid_referers ~.; proxy_pass http://u; }
             }"#,
        )
        .send_all(requests)
        .run();
}

/// secure_link: a link signed over its expiry time, URI and client address (nginx's
/// documented set-up), its expiry, a wrong or missing hash, padding, the old
/// `secure_link_secret` form with the path it gives a rewrite, `secure_link` without
/// `secure_link_md5`, and each setting inherited on its own from the server.
#[test]
fn secure_link() {
    use base64::Engine as _;
    use md5::{Digest, Md5};
    let hash =
        |text: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Md5::digest(text));
    let hex = |text: &str| {
        Md5::digest(text)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    let (future, past) = ("4102444800", "946684800");
    let signed = |path: &str, expires: &str| {
        let h = hash(&format!("{expires}{path}127.0.0.1 secret"));
        format!("{path}?md5={h}&expires={expires}")
    };
    let requests = vec![
        get(&signed("/s/file", future)),
        get(&signed("/s/file", past)),
        get(&format!("{}==", signed("/s/file", future))),
        on_pingora_session(get(&signed("/s/file", future))),
        get(&signed("/s/file", future).replace("/s/file", "/s/other")),
        get(&format!("/s/file?md5={}&expires={future}", hash("wrong"))),
        get(&format!(
            "/s/file?md5={}&expires=0",
            hash("0/s/file127.0.0.1 secret")
        )),
        get("/s/file"),
        get(&format!("/s/file?md5={}", hash("/s/file127.0.0.1 secret"))),
        get(&format!("/p/{}/top/file.pdf", hex("wrong"))),
        get(&format!("/p/{}/top/file.pdf", hex("top/file.pdfsecret"))),
        get(&format!(
            "/p/{}/top/file.pdf",
            hex("top/file.pdfsecret").to_uppercase()
        )),
        get(&format!("/p/{}/top/other.pdf", hex("top/file.pdfsecret"))),
        get("/p/short/top/file.pdf"),
        get(&format!("/nohash/x?md5={}", hash("/nohash/x secret"))),
        get(&format!("/v/x?md5={}", hash("/v/x secret"))),
        get(&format!("/v/x?md5={}", hash("/v/y secret"))),
        get(&format!("/a?h={}", hash("/a k"))).on_listener(1),
        get(&format!("/a?h={}", hash("/a other"))).on_listener(1),
        get(&format!("/own/b?h={}", hash("/own/b other"))).on_listener(1),
        get(&format!("/own/b?h={}", hash("/own/b k"))).on_listener(1),
        get(&format!("/old/{}/x", hex("xk"))).on_listener(1),
    ];
    Scenario::new("secure_link")
        .backends(1)
        .config(
            r#"upstream u { server {b0}; }
             server {
                 listen {listen};
                 location /s/ {
                     secure_link $arg_md5,$arg_expires;
                     secure_link_md5 "$secure_link_expires$uri$remote_addr secret";
                     if ($secure_link = "") { return 403; }
                     if ($secure_link = "0") { return 410; }
                     proxy_set_header X-Secure-Link "$secure_link,$secure_link_expires";
                     proxy_pass http://u;
                 }
                 location /p/ {
                     secure_link_secret secret;
                     if ($secure_link = "") { return 403; }
                     rewrite ^ /files/$secure_link break;
                     proxy_pass http://u;
                 }
                 location /nohash/ { secure_link $arg_md5; return 200 "[$secure_link]
"; }
                 location /v/ {
                     secure_link $arg_md5;
                     secure_link_md5 "$uri secret";
                     return 200 "[$secure_link] [$secure_link_expires]
";
                 }
             }
             server {
                 listen {listen1};
                 secure_link $arg_h;
                 secure_link_md5 "$uri k";
                 location / { return 200 "[$secure_link]
"; }
                 location /own/ { secure_link_md5 "$uri other"; return 200 "[$secure_link]
"; }
                 location /old/ { secure_link_secret k; return 200 "[$secure_link]
"; }
             }"#,
        )
        .send_all(requests)
        .run();
}

/// sub_filter: the first occurrence of each string (and every one with `sub_filter_once
/// off`), without regard to case, only in the types named (text/html always), in chunked
/// and HTTP/1.0 responses, in a HEAD's, an empty one left alone; search strings and
/// replacements with variables (an empty search string dropped); Last-Modified and ETag
/// removed, or kept and weakened with `sub_filter_last_modified on`; a `return` body and an
/// error page; settings inherited from the server; on the fast path and on Pingora's session.
#[test]
fn sub_filter() {
    let html = |request: Request| request.header(TYPE_HEADER, "text/html; charset=utf-8");
    let validators = "ETag: \"abc\"|Last-Modified: Tue, 01 Dec 2026 00:00:00 GMT";
    let requests = vec![
        html(get("/p/a")),
        get("/p/plain"),
        html(get("/p/long")).header(LENGTH_HEADER, "50"),
        html(get("/p/head")).method("HEAD"),
        html(get("/p/old")).http10(),
        html(get("/p/empty")).header(LENGTH_HEADER, "0"),
        html(get("/p/validators")).header(HEADERS_HEADER, validators),
        html(get("/lm/validators")).header(HEADERS_HEADER, validators),
        get("/all/x").header(LENGTH_HEADER, "50"),
        get("/all/chunked")
            .header(CHUNKED_HEADER, "1")
            .header(LENGTH_HEADER, "45"),
        // Read in many pieces, strings cut across them.
        get("/all/big").header(LENGTH_HEADER, "300001"),
        // The same through Pingora's session rather than the fast path.
        on_pingora_session(html(get("/p/a"))),
        on_pingora_session(get("/all/big").header(LENGTH_HEADER, "300001")),
        on_pingora_session(html(get("/lm/validators")).header(HEADERS_HEADER, validators)),
        get("/dyn/x?s=backend").header(LENGTH_HEADER, "30"),
        get("/dyn/x?s=").header(LENGTH_HEADER, "30"),
        get("/ret"),
        get("/err"),
        html(get("/s/x")).on_listener(1),
        html(get("/s/own"))
            .header(LENGTH_HEADER, "30")
            .on_listener(1),
    ];
    Scenario::new("sub_filter")
        .backends(1)
        .compare_headers(&[
            "Content-Length",
            "ETag",
            "Last-Modified",
            "Transfer-Encoding",
        ])
        .config(
            r#"upstream u { server {b0}; }
             server {
                 listen {listen};
                 location /p/ {
                     sub_filter "Backend" "proxy[$request_method]";
                     proxy_pass http://u;
                 }
                 location /lm/ {
                     sub_filter backend x;
                     sub_filter_last_modified on;
                     proxy_pass http://u;
                 }
                 location /all/ {
                     sub_filter "BACK" "x";
                     sub_filter "0" "zero";
                     sub_filter_once off;
                     sub_filter_types text/plain;
                     proxy_pass http://u;
                 }
                 location /dyn/ {
                     sub_filter $arg_s "[$arg_s]";
                     sub_filter_types *;
                     proxy_pass http://u;
                 }
                 location /ret {
                     sub_filter hello bye;
                     sub_filter_types *;
                     return 200 "hello hello
";
                 }
                 location /err { sub_filter "not found" "Gone Away"; return 404; }
             }
             server {
                 listen {listen1};
                 sub_filter backend server-level;
                 location /s/ { proxy_pass http://u; }
                 location /s/own { sub_filter_once off; proxy_pass http://u; }
             }"#,
        )
        .send_all(requests)
        .run();
}

/// sub_filter on files from `root`: the body rewritten (a large one read in pieces, strings
/// cut across them), no length and no ranges for it, a type it does not filter left whole
/// and rangeable, HEAD, HTTP/1.0, a 304, and Last-Modified kept with the ETag weakened.
#[test]
fn sub_filter_files() {
    let dir = support::TempDir::new("sub-filter-files");
    let root = dir.path.join("www");
    std::fs::create_dir_all(root.join("lm")).expect("root");
    let page = "<a href=\"http://backend/x\">Backend</a> backend\n";
    std::fs::write(root.join("page.html"), page).expect("page");
    std::fs::write(root.join("lm/page.html"), page).expect("page");
    std::fs::write(root.join("note.txt"), "backend notes\n").expect("note");
    std::fs::write(root.join("big.html"), "xbackend ".repeat(30_000)).expect("big");
    let root = root.display();
    let future = "Fri, 01 Jan 2100 00:00:00 GMT";
    let requests = vec![
        get("/page.html"),
        get("/page.html").header("Range", "bytes=0-3"),
        get("/note.txt").header("Range", "bytes=0-3"),
        get("/page.html").method("HEAD"),
        get("/page.html").http10(),
        get("/page.html").header("If-Modified-Since", future),
        get("/big.html"),
        get("/lm/page.html"),
    ];
    Scenario::new("sub_filter on files")
        .compare_headers(&[
            "Content-Length",
            "ETag",
            "Last-Modified",
            "Transfer-Encoding",
            "Accept-Ranges",
            "Content-Range",
        ])
        .config(&format!(
            "server {{
                 listen {{listen}};
                 root {root};
                 if_modified_since before;
                 sub_filter backend site;
                 sub_filter_once off;
                 location /lm/ {{ sub_filter_last_modified on; }}
             }}"
        ))
        .send_all(requests)
        .run();
}

/// gunzip: a gzip-encoded upstream response decompressed for a client that does not take gzip
/// (no Accept-Encoding, HTTP/1.0 under `gzip_http_version 1.1`, a `Via` under
/// `gzip_proxied off`, `gzip_disable`) and passed compressed to one that does: bodies of one
/// member and of two, chunked, read in many pieces, HEAD, HTTP/1.0, the ETag weakened and the
/// length and ranges gone, `Vary`, Content-Encoding matched without regard to case (and
/// `x-gzip` not), the sub filter after it, gzip not compressing again, `gzip_proxied`
/// reading the response's Expires, a body that is not gzip (no response at all) and one cut
/// short (cut off; on the fast path only: Pingora's session sends nothing for it), and both
/// paths.
#[test]
fn gunzip() {
    let gz = |path: &str| get(path).header(GZIP_HEADER, "1");
    let takes_gzip = |request: Request| request.header("Accept-Encoding", "gzip, deflate");
    let validators =
        "ETag: \"abc\"|Accept-Ranges: bytes|Last-Modified: Tue, 01 Dec 2026 00:00:00 GMT";
    let expired = "Expires: Thu, 01 Jan 1970 00:00:01 GMT";
    let requests = vec![
        gz("/g/a"),
        takes_gzip(gz("/g/a")),
        gz("/g/head").method("HEAD"),
        gz("/g/old").http10(),
        takes_gzip(gz("/g/old")).http10(),
        gz("/g/chunked")
            .header(CHUNKED_HEADER, "1")
            .header(LENGTH_HEADER, "3000"),
        gz("/g/big").header(LENGTH_HEADER, "300001"),
        get("/g/two")
            .header(GZIP_HEADER, "2")
            .header(LENGTH_HEADER, "5000"),
        get("/g/upper").header(GZIP_HEADER, "1=GZIP"),
        get("/g/x-gzip").header(GZIP_HEADER, "1=x-gzip"),
        get("/g/plain"),
        gz("/g/validators").header(HEADERS_HEADER, validators),
        takes_gzip(gz("/g/validators")).header(HEADERS_HEADER, validators),
        takes_gzip(gz("/g/via")).header("Via", "1.1 cache"),
        gz("/v/a"),
        takes_gzip(gz("/v/a")),
        get("/v/plain"),
        gz("/s/a").header(TYPE_HEADER, "text/html"),
        gz("/z/a").header(TYPE_HEADER, "text/html"),
        takes_gzip(gz("/z/a")).header(TYPE_HEADER, "text/html"),
        takes_gzip(gz("/d/a")).header("User-Agent", "curl/7.88"),
        takes_gzip(gz("/d/a")).header("User-Agent", "Mozilla/5.0"),
        gz("/off/a"),
        get("/g/cut")
            .header(GZIP_HEADER, "cut")
            .header(LENGTH_HEADER, "3000"),
        get("/g/bad").header(GZIP_HEADER, "bad"),
        // gzip_proxied reads the response's Expires: Pingora's session decides these.
        takes_gzip(gz("/p/a"))
            .header("Via", "1.1 cache")
            .header(HEADERS_HEADER, expired),
        takes_gzip(gz("/p/b")).header("Via", "1.1 cache"),
        // The same through Pingora's session rather than the fast path.
        on_pingora_session(gz("/g/a")),
        on_pingora_session(takes_gzip(gz("/g/a"))),
        on_pingora_session(gz("/g/big").header(LENGTH_HEADER, "300001")),
        on_pingora_session(
            get("/g/two")
                .header(GZIP_HEADER, "2")
                .header(LENGTH_HEADER, "5000"),
        ),
        on_pingora_session(gz("/g/validators").header(HEADERS_HEADER, validators)),
        on_pingora_session(gz("/v/a")),
        on_pingora_session(gz("/s/a").header(TYPE_HEADER, "text/html")),
        on_pingora_session(get("/g/bad").header(GZIP_HEADER, "bad")),
    ];
    Scenario::new("gunzip")
        .backends(1)
        .compare_headers(&[
            "Content-Length",
            "Content-Encoding",
            "ETag",
            "Last-Modified",
            "Accept-Ranges",
            "Transfer-Encoding",
            "Vary",
        ])
        .config(
            r#"upstream u { server {b0}; }
             server {
                 listen {listen};
                 location /g/ { gunzip on; proxy_pass http://u; }
                 location /v/ { gunzip on; gzip_vary on; proxy_pass http://u; }
                 location /s/ { gunzip on; sub_filter backend proxy; proxy_pass http://u; }
                 location /z/ {
                     gunzip on;
                     gzip on;
                     gzip_vary on;
                     proxy_pass http://u;
                 }
                 location /d/ { gunzip on; gzip_disable "curl"; proxy_pass http://u; }
                 location /p/ { gunzip on; gzip_proxied expired; proxy_pass http://u; }
                 location /off/ { proxy_pass http://u; }
             }"#,
        )
        .send_all(requests)
        .run();
}

/// gunzip with `gzip_static always`: a file's `.gz` sent decompressed to a client that does not
/// take gzip and as it is to one that does, HEAD, HTTP/1.0, a 304, `Vary`.
#[test]
fn gunzip_files() {
    use std::io::Write;
    let dir = support::TempDir::new("gunzip-files");
    let root = dir.path.join("www");
    std::fs::create_dir_all(root.join("v")).expect("root");
    let page = "a page kept only compressed\n".repeat(4000);
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
    encoder.write_all(page.as_bytes()).expect("compress");
    let compressed = encoder.finish().expect("compress");
    std::fs::write(root.join("page.html.gz"), &compressed).expect("page");
    std::fs::write(root.join("v/page.html.gz"), &compressed).expect("page");
    let root = root.display();
    let future = "Fri, 01 Jan 2100 00:00:00 GMT";
    let takes_gzip = |request: Request| request.header("Accept-Encoding", "gzip");
    let requests = vec![
        get("/page.html"),
        takes_gzip(get("/page.html")),
        get("/page.html").method("HEAD"),
        get("/page.html").http10(),
        get("/page.html").header("If-Modified-Since", future),
        get("/page.html").header("Range", "bytes=0-3"),
        get("/v/page.html"),
        takes_gzip(get("/v/page.html")),
    ];
    Scenario::new("gunzip on files")
        .compare_headers(&[
            "Content-Length",
            "Content-Encoding",
            "ETag",
            "Last-Modified",
            "Transfer-Encoding",
            "Accept-Ranges",
            "Vary",
        ])
        .config(&format!(
            "server {{
                 listen {{listen}};
                 root {root};
                 gzip_static always;
                 gunzip on;
                 location /v/ {{ gzip_vary on; }}
             }}"
        ))
        .send_all(requests)
        .run();
}

/// The maps the charset scenarios share: koi8-r to UTF-8 (a few letters, the euro sign, and
/// `ё`) and koi8-r to windows-1251.
const CHARSET_MAPS: &str = "charset_map koi8-r utf-8 { C1 D0B0; C2 D0B1; 80 E282AC; A3 D191; }
             charset_map KOI8-R windows-1251 { C1 E1; C2 E2; A3 B8; }";

/// charset_map on proxied responses: a koi8-r body recoded to UTF-8 (its length gone) and to
/// windows-1251 (its length kept), a UTF-8 body recoded to koi8-r (a character without a byte
/// as an entity, one beyond U+FFFF too, bytes that are not UTF-8 as `?`, characters cut across
/// reads), `override_charset` recoding a response's own charset (and one no map joins, sent as
/// it came), a type outside `charset_types`, a gzip body left alone and one `gunzip` opens
/// first, a 302, HEAD, HTTP/1.0, and both paths.
#[test]
fn charset_map() {
    // "a" а б ё € and a byte the map does not name.
    let koi = "61c1c2a380ff0a";
    // "xа€ё😀", then a byte that does not start a character and one cut short by "y".
    let utf8 = "78d0b0e282acd191f09f988080d0790a";
    let body = |path: &str, hex: &str| get(path).header(BODY_HEADER, hex);
    let typed = |request: Request, t: &str| request.header(TYPE_HEADER, t);
    let requests = vec![
        body("/koi/a", koi),
        body("/koi/head", koi).method("HEAD"),
        body("/koi/old", koi).http10(),
        body("/koi/big", koi).header(LENGTH_HEADER, "300001"),
        typed(body("/koi/png", koi), "image/png"),
        body("/koi/gzip", koi).header(GZIP_HEADER, "1"),
        body("/koi/moved", koi).header(REDIRECT_HEADER, "http://example.com/"),
        body("/win/a", koi),
        body("/from/a", utf8),
        body("/from/big", utf8).header(LENGTH_HEADER, "300001"),
        typed(body("/over/a", koi), "text/html; charset=koi8-r"),
        typed(body("/over/b", koi), "text/html; charset=iso-8859-1"),
        typed(body("/over/c", "d0b00a"), "text/html; charset=\"UTF-8\""),
        body("/gz/a", koi).header(GZIP_HEADER, "1"),
        on_pingora_session(body("/koi/a", koi)),
        on_pingora_session(body("/koi/big", koi).header(LENGTH_HEADER, "300001")),
        on_pingora_session(body("/win/a", koi)),
        on_pingora_session(body("/from/big", utf8).header(LENGTH_HEADER, "300001")),
        on_pingora_session(typed(body("/over/a", koi), "text/html; charset=koi8-r")),
        on_pingora_session(body("/gz/a", koi).header(GZIP_HEADER, "1")),
    ];
    Scenario::new("charset_map")
        .backends(1)
        .compare_headers(&[
            "Content-Type",
            "Content-Length",
            "Content-Encoding",
            "Transfer-Encoding",
        ])
        .config(&format!(
            r#"{CHARSET_MAPS}
             upstream u {{ server {{b0}}; }}
             server {{
                 listen {{listen}};
                 location /koi/ {{ charset utf-8; source_charset koi8-r; proxy_pass http://u; }}
                 location /win/ {{
                     charset windows-1251;
                     source_charset koi8-r;
                     proxy_pass http://u;
                 }}
                 location /from/ {{ charset koi8-r; source_charset utf-8; proxy_pass http://u; }}
                 location /over/ {{ charset utf-8; override_charset on; proxy_pass http://u; }}
                 location /gz/ {{
                     charset utf-8;
                     source_charset koi8-r;
                     gunzip on;
                     proxy_pass http://u;
                 }}
             }}"#
        ))
        .send_all(requests)
        .run();
}

/// charset_map on files: recoded to UTF-8 (whole: no length, no ranges) and to windows-1251
/// (ranges cut from the recoded bytes, one part and several), HEAD, a 304, a type outside
/// `charset_types`.
#[test]
fn charset_map_files() {
    let dir = support::TempDir::new("charset-map-files");
    let root = dir.path.join("www");
    std::fs::create_dir_all(root.join("win")).expect("root");
    let page: &[u8] = b"<p>\xC1\xC2\xA3 \x80 \xFF</p>\n";
    std::fs::write(root.join("page.html"), page).expect("page");
    std::fs::write(root.join("data.bin"), page).expect("data");
    std::fs::write(root.join("win/page.html"), page).expect("page");
    std::fs::write(root.join("big.html"), page.repeat(20_000)).expect("big");
    let root = root.display();
    let future = "Fri, 01 Jan 2100 00:00:00 GMT";
    let requests = vec![
        get("/page.html"),
        get("/page.html").method("HEAD"),
        get("/page.html").header("Range", "bytes=0-3"),
        get("/page.html").header("If-Modified-Since", future),
        get("/data.bin"),
        get("/big.html"),
        get("/win/page.html"),
        get("/win/page.html").header("Range", "bytes=3-5"),
        get("/win/page.html").header("Range", "bytes=0-1,3-4"),
    ];
    Scenario::new("charset_map on files")
        .compare_headers(&[
            "Content-Type",
            "Content-Length",
            "Transfer-Encoding",
            "Accept-Ranges",
            "Content-Range",
        ])
        .config(&format!(
            "{CHARSET_MAPS}
             server {{
                 listen {{listen}};
                 root {root};
                 charset utf-8;
                 source_charset koi8-r;
                 location /win/ {{ charset windows-1251; }}
             }}"
        ))
        .send_all(requests)
        .run();
}

/// map: the WebSocket idiom, string keys matched without regard to case, `\\` escaping a
/// key, regexes after every string key with their captures in the value, `hostnames`
/// wildcards (the most specific wins) and a trailing dot, values made of other maps, no
/// default, and map variables in a proxied request's headers.
#[test]
fn map_variables() {
    let keys = [
        "Alpha", "ALPHA", "~tilde", "re42", "re", "case-YES", "beta", "nothing",
    ];
    let hosts = [
        "example.com",
        "EXAMPLE.COM.",
        "a.example.com",
        "b.a.example.com",
        "dot.test",
        "x.dot.test",
        "www.shop.org",
        "re.test",
        "other.org",
    ];
    let mut requests = vec![
        get("/"),
        get("/").header("Upgrade", "websocket"),
        get("/two").header("X-Key", "beta"),
    ];
    requests.extend(keys.iter().map(|k| get("/").header("X-Key", k)));
    requests.extend(hosts.iter().map(|h| get("/").host(h)));
    requests.push(get("/up").header("X-Key", "re7"));
    requests.push(
        get("/up")
            .header("Upgrade", "websocket")
            .header("X-Key", "Beta"),
    );
    Scenario::new("map")
        .backends(1)
        .config(
            r#"map $http_upgrade $connection_upgrade {
                 default upgrade;
                 ''      close;
             }
             map $http_x_key $by_key {
                 default none;
                 Alpha a;
                 \~tilde escaped;
                 ~^re(\d+)$ regex-$1;
                 ~*^CASE caseless;
                 beta b;
             }
             map $host $by_host {
                 hostnames;
                 default other;
                 example.com exact;
                 *.example.com star;
                 *.a.example.com deeper;
                 .dot.test dot;
                 www.shop.* shop;
                 ~^re\.test$ regex;
             }
             map $uri $chained {
                 default $by_key-$by_host;
                 /two two-$by_key;
             }
             map $http_x_none $no_default { a b; }
             server {
                 listen {listen};
                 location / {
                     return 200 "u=[$connection_upgrade] k=[$by_key] h=[$by_host] c=[$chained] d=[$no_default]
";
                 }
                 location /up {
                     proxy_pass http://{b0};
                     proxy_set_header X-Map $chained;
                     proxy_set_header Connection $connection_upgrade;
                 }
             }"#,
        )
        .send_all(requests)
        .run();
}

/// realip: the rightmost X-Forwarded-For address from a trusted peer (with its port, if it
/// has one), nothing from an untrusted one or an unparsable value, the server's settings
/// applied before a location's (so a location's `real_ip_recursive` comes too late), a
/// location's own settings (which a location `return` answers before), X-Real-IP and another
/// header, and the address it yields in `allow`/`deny`, `$proxy_add_x_forwarded_for` and the
/// upstream request.
#[test]
fn real_ip() {
    let xff =
        |path: &str, from: &str, value: &str| get(path).from(from).header("X-Forwarded-For", value);
    Scenario::new("real_ip")
        .backends(1)
        .config(
            r#"map $remote_port $port_given { "" none; default some; }
             server {
                 listen {listen};
                 set_real_ip_from 127.0.0.2;
                 set_real_ip_from 127.0.0.16/28;
                 real_ip_header X-Forwarded-For;
                 location / {
                     return 200 "addr=[$remote_addr] port=[$port_given] xff=[$proxy_add_x_forwarded_for] connecting=[$realip_remote_addr]\n";
                 }
                 location /recursive/ { real_ip_recursive on; return 200 "addr=[$remote_addr]\n"; }
                 location /deny/ { deny 10.9.9.9; proxy_pass http://{b0}; }
                 location /up/ { proxy_pass http://{b0}; proxy_set_header X-Real $remote_addr; }
             }
             server {
                 listen {listen1};
                 location / {
                     set_real_ip_from 127.0.0.0/8;
                     real_ip_recursive on;
                     proxy_pass http://{b0};
                     proxy_set_header X-Real $remote_addr;
                 }
                 location /returned {
                     set_real_ip_from 127.0.0.0/8;
                     return 200 "addr=[$remote_addr]\n";
                 }
             }
             server {
                 listen {listen2};
                 set_real_ip_from 127.0.0.1;
                 real_ip_header X-Client;
                 return 200 "addr=[$remote_addr]\n";
             }"#,
        )
        .send_all([
            xff("/", "127.0.0.1", "1.1.1.1"),
            xff("/", "127.0.0.2", "1.1.1.1, 2.2.2.2"),
            xff("/", "127.0.0.2", "3.3.3.3:81"),
            xff("/", "127.0.0.17", "[2001:db8::1]:80"),
            xff("/", "127.0.0.2", "junk"),
            get("/").from("127.0.0.2"),
            xff("/", "127.0.0.2", "1.1.1.1").header("X-Forwarded-For", "8.8.8.8 ,"),
            xff("/recursive/", "127.0.0.2", "1.1.1.1, 127.0.0.18"),
            xff("/deny/", "127.0.0.2", "10.9.9.9"),
            xff("/deny/", "127.0.0.2", "10.9.9.8"),
            xff("/up/", "127.0.0.2", "4.4.4.4"),
            get("/").header("X-Real-IP", "5.5.5.5").on_listener(1),
            get("/")
                .header("X-Real-IP", "5.5.5.5, 127.0.0.9")
                .on_listener(1),
            get("/").header("X-Real-IP", "1.1.1.1, 6.6.6.6").on_listener(1),
            get("/returned")
                .header("X-Real-IP", "5.5.5.5")
                .on_listener(1),
            get("/").header("X-Client", "7.7.7.7").on_listener(2),
            get("/")
                .from("127.0.0.2")
                .header("X-Client", "7.7.7.7")
                .on_listener(2),
        ])
        .run();
}

/// The headers people set, and what nginx does with the client's own: hop-by-hop ones
/// dropped, underscores ignored, duplicates, order and case kept, HTTP/1.0 and missing Host.
#[test]
fn request_headers() {
    Scenario::new("proxy_set_header and client headers")
        .backends(2)
        .config(
            r#"upstream pool { server {b1}; }
             server {
                 listen {listen};
                 location /set/ {
                     proxy_pass http://{b0};
                     proxy_set_header Host $host;
                     proxy_set_header X-Real-IP $remote_addr;
                     proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
                     proxy_set_header X-Forwarded-Proto $scheme;
                     proxy_set_header X-Original-URI $request_uri;
                     proxy_set_header X-Server-Port $server_port;
                     proxy_set_header X-Agent $http_user_agent;
                     proxy_set_header X-Custom-Copy $http_x_custom;
                     proxy_set_header X-Empty "";
                 }
                 location /default/ { proxy_pass http://{b0}; }
                 location /pool/ { proxy_pass http://pool; }
             }"#,
        )
        .send(
            get("/set/a?x=1")
                .host("Example.COM:8080")
                .header("User-Agent", "harness/1")
                .header("X-Custom", "custom value")
                .header("X-Forwarded-For", "10.0.0.1"),
        )
        .send(get("/set/no-host").http10())
        .send(get("/set/from").host("example.com").from("127.0.3.7"))
        .send(
            get("/default/client-headers")
                .header("user-AGENT", "Mixed Case")
                .header("X-Dup", "1")
                .header("X-Dup", "2")
                .header("X_Under", "dropped")
                .header("Connection", "keep-alive")
                .header("Keep-Alive", "300")
                .header("TE", "trailers")
                .header("Upgrade", "websocket")
                .header("Proxy-Connection", "keep-alive")
                .header("Accept", "*/*"),
        )
        // A repeated name with another header between: passed in the order sent, and joined
        // in that order for $proxy_add_x_forwarded_for.
        .send(
            get("/default/interleaved")
                .header("X-Dup", "1")
                .header("Accept", "*/*")
                .header("x-dup", "2")
                .header("X-Custom", "after"),
        )
        .send(
            get("/set/interleaved")
                .header("X-Forwarded-For", "10.0.0.1")
                .header("X-Custom", "between")
                .header("x-forwarded-for", "10.0.0.2"),
        )
        .send(
            post("/default/post", "a=1&b=2")
                .header("Content-Type", "application/x-www-form-urlencoded"),
        )
        .send(
            post("/default/chunked", "")
                .header("Transfer-Encoding", "chunked")
                .raw_body("5\r\nhello\r\n0\r\n\r\n"),
        )
        .send(get("/default/http10").http10().host("example.com"))
        .send(get("/default/close").header("Connection", "close"))
        .send(get("/pool/host-is-upstream-name"))
        .send(get("/default/head").method("HEAD"))
        .run();
}

/// return: codes, redirects (relative ones made absolute with the port), bodies.
#[test]
fn return_directive() {
    Scenario::new("return")
        .backends(0)
        .config(
            r#"server {
                 listen {listen};
                 location /text { return 200 "plain text\n"; }
                 location /created { return 201 "made\n"; }
                 location /moved { return 301 https://example.com$request_uri; }
                 location /found { return 302 /elsewhere; }
                 location /temporary { return 307 http://example.org/t; }
                 location /gone { return 410; }
                 location /teapot { return 418 "short and stout\n"; }
                 location /empty { return 204; }
                 location /bare { return https://example.net/bare; }
                 location /missing { return 404; }
             }"#,
        )
        .send_all(
            [
                "/text",
                "/created",
                "/moved?x=1",
                "/found",
                "/temporary",
                "/gone",
                "/teapot",
                "/empty",
                "/bare",
                "/missing",
            ]
            .map(get),
        )
        .send(get("/found").host("example.com"))
        .send(get("/found").http10())
        .send(get("/text").method("HEAD"))
        .run();
}

/// server_name: exact, then the longest leading wildcard, the longest trailing wildcard, the
/// first matching regex, else the port's default server (default_server, or the first).
#[test]
fn server_name_selection() {
    Scenario::new("server_name")
        .backends(0)
        .config(
            r#"server { listen {listen}; server_name example.com www.example.com; return 200 "exact\n"; }
             server { listen {listen}; server_name *.example.com; return 200 "*.example.com\n"; }
             server { listen {listen}; server_name *.deep.example.com; return 200 "*.deep.example.com\n"; }
             server { listen {listen}; server_name mail.*; return 200 "mail.*\n"; }
             server { listen {listen}; server_name ~^(?<user>[a-z]+)\.regex\.test$; return 200 "regex\n"; }
             server { listen {listen}; server_name .dot.test; return 200 ".dot.test\n"; }
             server { listen {listen} default_server; server_name _; return 200 "default_server\n"; }
             server { listen {listen1}; server_name first.test; return 200 "second port, first server\n"; }
             server { listen {listen1}; server_name example.com; return 200 "second port, example.com\n"; }"#,
        )
        .send_all(
            [
                "example.com", "EXAMPLE.com", "www.example.com", "example.com.", "example.com:8080",
                "a.example.com", "a.deep.example.com", "mail.test", "mail.example.com",
                "bob.regex.test", "Bob.Regex.Test", "dot.test", "x.dot.test", "unknown.test",
            ]
            .map(|host| get("/").host(host)),
        )
        .send(get("/").http10())
        .send(get("/").host("unknown.test").on_listener(1))
        .send(get("/").host("example.com").on_listener(1))
        .run();
}

// ---------------------------------------------------------------------------------------------
// The rewrite module: rewrite, break, set, if, return, in the order they are written

/// rewrite's flags and replacements: no flag (the statements after it still run, then the
/// location is searched again with the new URI), `last` (search again at once, the rest
/// skipped), `break` (stay, the rest of the rewrite statements skipped, even a `return`),
/// `redirect` 302, `permanent` 301, a replacement starting with `http://`, `https://` or
/// `$scheme` (a 302 without a flag); $1..$9; a location regex's captures: kept through `set`,
/// but gone once any later regex runs (a rewrite whose regex captures nothing and matches,
/// or a rewrite that does not match), so they are copied with `set` first; `(?i)`;
/// server-level rewrites before the location search; a rewrite then a `return` (which sees
/// the new `$uri`) and a `return` before a rewrite (which stops it); and `last` loops: ten
/// re-searches are allowed, the eleventh is a 500, as is a location that rewrites to itself.
#[test]
fn rewrite_flags_and_replacements() {
    Scenario::new("rewrite flags")
        .backends(1)
        .config(
            r#"server {
                 listen {listen};
                 rewrite ^/srv-none/(.*)$ /target/srv-none-$1;
                 rewrite ^/srv-last/(.*)$ /target/srv-last-$1 last;
                 rewrite ^/srv-break/(.*)$ /target/srv-break-$1 break;
                 rewrite ^/srv-redirect/(.*)$ /target/srv-redirect-$1 redirect;
                 rewrite (?i)^/CaseLess/(.*)$ /target/caseless-$1 last;
                 rewrite ^/CaseFul/(.*)$ /target/caseful-$1 last;
                 location /target/ { return 200 "target uri=[$uri] args=[$args] after=[$after]\n"; }
                 location / { return 200 "fallback uri=[$uri]\n"; }
                 location /none/ {
                     rewrite ^/none/(.*)$ /target/none-$1;
                     set $after "statements after a flagless rewrite ran";
                 }
                 location /none-then-return/ {
                     rewrite ^/none-then-return/(.*)$ /target/ntr-$1;
                     return 200 "returned after the rewrite: uri=[$uri] args=[$args]\n";
                 }
                 location /return-first/ {
                     return 200 "returned first: uri=[$uri]\n";
                     rewrite ^ /target/never last;
                 }
                 location /last/ {
                     rewrite ^/last/(.*)$ /target/last-$1 last;
                     return 200 "not reached after last\n";
                 }
                 location /break/ {
                     rewrite ^/break/(.*)$ /target/break-$1 break;
                     return 200 "not reached after break\n";
                     proxy_pass http://{b0};
                 }
                 location /redirect/ { rewrite ^/redirect/(.*)$ /target/$1 redirect; }
                 location /permanent/ { rewrite ^/permanent/(.*)$ /target/$1 permanent; }
                 location /http/ { rewrite ^/http/(.*)$ http://example.com/h/$1; return 200 "not reached\n"; }
                 location /https/ { rewrite ^/https/(.*)$ https://example.com/s/$1; }
                 location /scheme/ { rewrite ^/scheme/(.*)$ $scheme://$host/sc/$1; }
                 location /abs-permanent/ { rewrite ^/abs-permanent/(.*)$ http://example.com/p/$1 permanent; }
                 location /nine/ {
                     rewrite ^/nine/(a)(b)(c)(d)(e)(f)(g)(h)(i)$ /target/$9$8$7$6$5$4$3$2$1-$1$9 last;
                 }
                 location ~ ^/loc/(\w+)/(\w+)$ { rewrite ^ /target/$2-$1 last; }
                 location ~ ^/lost/(\w+)$ {
                     rewrite ^/nomatch /target/x last;
                     return 200 "after a rewrite that did not match: 1=[$1]\n";
                 }
                 location ~ ^/own/(\w+)$ {
                     rewrite ^/own/(\w)(\w*)$ /target/own-$2-$1;
                 }
                 location ~ ^/lc/(\w+)$ { set $v "set clobbers nothing"; return 200 "1=[$1] v=[$v]\n"; }
                 location ~ ^/keep-loc/(\w+)/(\w+)$ { set $x $2-$1; rewrite ^ /target/$x last; }
                 location /n/ {
                     rewrite ^/n/x(x*)$ /n/$1 last;
                     return 200 "chain done: uri=[$uri]\n";
                 }
                 location /loop/ { rewrite ^/loop/(.*)$ /loop/$1 last; }
                 location /loop-none/ { rewrite ^(.*)$ $1; }
                 location /ping/ { rewrite ^/ping/(.*)$ /pong/$1 last; }
                 location /pong/ { rewrite ^/pong/(.*)$ /ping/$1 last; }
             }"#,
        )
        .send_all(
            [
                "/srv-none/a",
                "/srv-last/a?q=1",
                "/srv-break/a",
                "/srv-redirect/a?q=1",
                "/caseless/a",
                "/CASELESS/b",
                "/CaseFul/a",
                "/caseful/a",
                "/none/a?q=1",
                "/none-then-return/a?q=1",
                "/return-first/a",
                "/last/a",
                "/break/a?q=1",
                "/redirect/a",
                "/redirect/a?q=1",
                "/permanent/a",
                "/http/a?q=1",
                "/https/a",
                "/scheme/a",
                "/abs-permanent/a?q=1",
                "/nine/abcdefghi",
                "/nine/abcdefgh",
                "/loc/one/two",
                "/lc/word",
                "/keep-loc/one/two",
                "/lost/word",
                "/own/word",
                "/n/xxxxxxxxx",
                "/n/xxxxxxxxxx",
                "/n/xxxxxxxxxxx",
                "/loop/a",
                "/loop-none/a",
                "/ping/a",
            ]
            .map(get),
        )
        .send(get("/redirect/a").host("front.example:8080"))
        .send(get("/scheme/a").host("front.example:8080"))
        .send(get("/redirect/a").http10())
        .run();
}

/// rewrite and the query string and escaping: a replacement without `?` keeps the client's
/// args, one with `?x=1` puts them after its own, a trailing `?` drops them, in internal
/// rewrites and in redirects; the regex sees the decoded, normalised URI (`%20`, `%2F`, `+`,
/// `..`), and what that becomes in `$uri`, in the request a backend receives, and in a
/// redirect's Location (captures re-escaped only when the client's URI was escaped).
#[test]
fn rewrite_args_and_escaping() {
    Scenario::new("rewrite args and escaping")
        .backends(1)
        .config(
            r#"server {
                 listen {listen};
                 location /target/ { return 200 "uri=[$uri] args=[$args] is_args=[$is_args] a=[$arg_a] x=[$arg_x]\n"; }
                 location /keep/ { rewrite ^/keep/(.*)$ /target/keep-$1 last; }
                 location /add/ { rewrite ^/add/(.*)$ /target/add-$1?x=1 last; }
                 location /add-var/ { rewrite ^/add-var/(.*)$ /target/av?x=$1&y=$arg_a last; }
                 location /drop/ { rewrite ^/drop/(.*)$ /target/drop-$1? last; }
                 location /add-drop/ { rewrite ^/add-drop/(.*)$ /target/ad-$1?x=1? last; }
                 location /r-keep/ { rewrite ^/r-keep/(.*)$ /target/$1 redirect; }
                 location /r-add/ { rewrite ^/r-add/(.*)$ /target/$1?x=1 redirect; }
                 location /r-drop/ { rewrite ^/r-drop/(.*)$ /target/$1? redirect; }
                 location /r-abs/ { rewrite ^/r-abs/(.*)$ http://example.com/$1?x=$1; }
                 location /r-text/ { rewrite ^/r-text/.*$ "/target/with%20space?and=%41" redirect; }
                 location /match/ {
                     rewrite "^/match/a b$" /target/space last;
                     rewrite ^/match/a/b$ /target/slash last;
                     rewrite ^/match/a\+b$ /target/plus last;
                     rewrite ^/match/(.*)$ /target/other-$1 last;
                 }
                 location /up/ { rewrite ^/up/(.*)$ /sent/$1 break; proxy_pass http://{b0}; }
             }"#,
        )
        .send_all(
            [
                "/keep/a?a=1",
                "/keep/a",
                "/keep/a?",
                "/add/a?a=1",
                "/add/a",
                "/add-var/v?a=2",
                "/drop/a?a=1",
                "/add-drop/a?a=1",
                "/r-keep/a?a=1&b=2",
                "/r-keep/a",
                "/r-add/a?a=1",
                "/r-add/a",
                "/r-drop/a?a=1",
                "/r-abs/a?a=1",
                "/r-text/x?a=1",
                "/match/a%20b",
                "/match/a%2Fb",
                "/match/a+b",
                "/match/x/../a%2fb",
                "/match/caf%C3%A9",
                "/keep/a%20b?a=%20",
                "/keep/a+b",
                "/r-keep/a%20b",
                "/r-keep/a%20b?a=1",
                "/r-keep/a+b",
                "/r-keep/a%3Fb",
                "/r-keep/a%25b",
                "/r-keep/plain%41",
                "/r-add/a%20b?a=1",
                "/r-abs/a%20b",
                "/r-abs/a%26b",
                "/up/a%20b?a=1",
                "/up/a%3Fb",
                "/up/a+b",
                "/up/caf%C3%A9",
                "/up/x/./y/../z",
            ]
            .map(get),
        )
        .run();
}

/// What an upstream receives after a rewrite: `proxy_pass` without a URI sends the rewritten
/// URI (and args) after `break` and after `last` into another location; with a URI part it
/// replaces the location's prefix normally (also after `last` into that location), but after
/// `break` it is ignored and the rewritten URI goes up as it is; `$uri`, `$request_uri`, `$args` and
/// `$is_args` after a rewrite, in proxy_set_header and in a `return`.
#[test]
fn rewrite_what_the_upstream_receives() {
    Scenario::new("rewrite and proxy_pass")
        .backends(1)
        .config(
            r#"server {
                 listen {listen};
                 location /b/ { rewrite ^/b/(.*)$ /new/$1 break; proxy_pass http://{b0}; }
                 location /b-args/ { rewrite ^/b-args/(.*)$ /new/$1?x=1 break; proxy_pass http://{b0}; }
                 location /b-drop/ { rewrite ^/b-drop/(.*)$ /new/$1? break; proxy_pass http://{b0}; }
                 location /l/ { rewrite ^/l/(.*)$ /p/$1 last; }
                 location /p/ {
                     proxy_pass http://{b0};
                     proxy_set_header X-Uri $uri;
                     proxy_set_header X-Request-Uri $request_uri;
                     proxy_set_header X-Args $args;
                     proxy_set_header X-Is-Args $is_args;
                 }
                 location /bu/ { rewrite ^/bu/(.*)$ /new/$1 break; proxy_pass http://{b0}/prefix/; }
                 location /same/ { rewrite ^(/same/.*)$ $1 break; proxy_pass http://{b0}/prefix/; }
                 location /nu/ { proxy_pass http://{b0}/prefix/; }
                 location /lu/ { rewrite ^/lu/(.*)$ /nu/$1 last; }
                 location /flagless/ {
                     rewrite ^/flagless/(.*)$ /p/$1?y=2;
                 }
                 location /ret/ {
                     rewrite ^/ret/(.*)$ /shown/$1?y=2;
                     return 200 "uri=[$uri] request_uri=[$request_uri] args=[$args] is_args=[$is_args] y=[$arg_y]\n";
                 }
                 location /ret-drop/ {
                     rewrite ^/ret-drop/(.*)$ /shown/$1?;
                     return 200 "uri=[$uri] args=[$args] is_args=[$is_args]\n";
                 }
             }"#,
        )
        .send_all(
            [
                "/b/x",
                "/b/x?a=1",
                "/b/a%20b?a=%20",
                "/b-args/x?a=1",
                "/b-args/x",
                "/b-drop/x?a=1",
                "/l/x?a=1",
                "/l/a%20b",
                "/p/direct?a=1",
                "/bu/x?a=1",
                "/same/x",
                "/nu/x?a=1",
                "/nu/a%20b",
                "/lu/x?a=1",
                "/flagless/x?a=1",
                "/ret/x?a=1",
                "/ret/x",
                "/ret-drop/x?a=1",
            ]
            .into_iter()
            // Plain, then with a chunked body, which the appliance serves through Pingora
            // rather than its fast path: the two must build the same request.
            .flat_map(|path| {
                [
                    get(path),
                    get(path)
                        .method("POST")
                        .header("Transfer-Encoding", "chunked")
                        .raw_body("1\r\nx\r\n0\r\n\r\n"),
                ]
            }),
        )
        .run();
}

/// set: text, variables, captures (a location's and a rewrite's), a variable built from
/// itself, a server-level set read (and overwritten) in a location, values that survive a
/// `last` re-search, a user variable never set for this request (empty), and user variables
/// in proxy_set_header, add_header and return; `set $args`, which changes the query string a
/// backend receives (`?&added=1` when there was none) but not `$request_uri`.
#[test]
fn set_variables() {
    Scenario::new("set")
        .backends(1)
        .compare_headers(&["X-Added"])
        .config(
            r#"server {
                 listen {listen};
                 set $srv "server-level";
                 set $overwritten "by the server";
                 location /text {
                     set $a hello;
                     set $b "$a world";
                     set $c $b-$uri;
                     set $a "$a again";
                     return 200 "a=[$a] b=[$b] c=[$c] srv=[$srv] o=[$overwritten] unset=[$only_elsewhere]\n";
                 }
                 location /elsewhere { set $only_elsewhere "set"; return 200 "[$only_elsewhere]\n"; }
                 location /overwrite { set $overwritten "by the location"; return 200 "o=[$overwritten]\n"; }
                 location ~ ^/cap/(\w+)-(\w+)$ {
                     set $first $1;
                     set $both "$2+$1";
                     rewrite ^/cap/\w+-(\w+)$ /target/$1;
                     set $after_rewrite "$1";
                     return 200 "first=[$first] both=[$both] after_rewrite=[$after_rewrite] uri=[$uri]\n";
                 }
                 location /header {
                     set $h "v-$arg_x";
                     proxy_pass http://{b0};
                     proxy_set_header X-Set $h;
                     proxy_set_header X-Srv $srv;
                     add_header X-Added "$h/$srv";
                 }
                 location /persist/ {
                     set $before "set before last";
                     rewrite ^/persist/(.*)$ /shown/$1 last;
                 }
                 location /shown/ { return 200 "before=[$before] srv=[$srv]\n"; }
                 location /setargs {
                     set $args "${args}&added=1";
                     proxy_pass http://{b0};
                     proxy_set_header X-Args $args;
                 }
                 location /setargs-ret {
                     set $args "x=9";
                     return 200 "args=[$args] x=[$arg_x] request_uri=[$request_uri]\n";
                 }
             }"#,
        )
        .send_all(
            [
                "/text",
                "/text/more",
                "/elsewhere",
                "/overwrite",
                "/cap/one-two",
                "/header?x=1",
                "/header",
                "/persist/x",
                "/shown/direct",
                "/setargs?a=1",
                "/setargs",
                "/setargs-ret?a=1",
            ]
            .map(get),
        )
        .run();
}

/// A directory both nginx and the appliance see: `fs/file.txt`, `fs/exec.sh` (mode 755) and
/// `fs/sub/`.
fn if_filesystem() -> support::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = support::TempDir::new("rewrite-if-fs");
    let fs = dir.path.join("fs");
    std::fs::create_dir_all(fs.join("sub")).expect("fs/sub");
    std::fs::write(fs.join("file.txt"), "file\n").expect("fs/file.txt");
    std::fs::write(fs.join("exec.sh"), "#!/bin/sh\n").expect("fs/exec.sh");
    std::fs::set_permissions(fs.join("exec.sh"), std::fs::Permissions::from_mode(0o755))
        .expect("chmod fs/exec.sh");
    dir
}

/// if's conditions, in locations and at server level: a variable (false when empty or "0"),
/// `=` and `!=` with quoted strings and variables on the right, `~` `~*` `!~` `!~*` with
/// their captures inside the block and after it (they replace the location's; a failed match
/// empties them), `-f` `!-f` `-d` `!-d` `-e` `!-e` `-x` `!-x` on a file, a directory, an
/// executable and nothing, with paths made of variables, the front-controller idiom (`if
/// (!-e $request_filename) { rewrite ... last; }`), named captures from an if's regex (set
/// only when it matches), `!-f $request_filename` after a rewrite (and a `break` before it,
/// which skips the if: the request is proxied with the new URI; the appliance serves no files),
/// `break` and `return` inside an if, and
/// statements after an if that did not return.
#[test]
fn if_conditions() {
    let dir = if_filesystem();
    let root = dir.path.display().to_string();
    let header = |path: &str, value: &str| get(path).header("X-V", value);
    let mut requests = vec![
        get("/var"),
        get("/var?v="),
        get("/var?v=0"),
        get("/var?v=00"),
        get("/var?v=1"),
        get("/var?v=false"),
        header("/eq", "a b"),
        header("/eq", "A B"),
        header("/eq", "x").header("X-W", "x"),
        header("/eq", "x"),
        header("/eq", "y"),
        get("/eq"),
        get("/re/abc-42"),
        get("/re/abc-x"),
        header("/re-ci", "ABCdef"),
        header("/re-ci", "xabc"),
        get("/re-not/page.html"),
        get("/re-not/page.htm"),
        header("/re-not-ci", "JPEG"),
        header("/re-not-ci", "png"),
        get("/after/word?x=12"),
        get("/after/word?x=none"),
        get("/after/word"),
        get("/quoted-re/a%20b"),
        get("/brk/?b=1"),
        get("/brk/"),
        get("/srv?srv=yes"),
        get("/srv?srv=0"),
    ];
    for path in [
        "/fs/file.txt",
        "/fs/sub",
        "/fs/sub/",
        "/fs/exec.sh",
        "/fs/missing",
    ] {
        for test in ["f", "not-f", "d", "not-d", "e", "not-e", "x", "not-x"] {
            requests.push(get(&format!("/test-{test}{path}")));
        }
    }
    requests.extend([
        get("/fs/file.txt"),
        get("/fs/sub"),
        get("/fs/nothing?a=1"),
        get("/fs/no%20thing"),
        header("/named", "one-two"),
        header("/named", "nothing"),
    ]);
    for path in [
        "/static/fs/file.txt",
        "/static/fs/nothing",
        "/static/fs/sub",
    ] {
        requests.push(get(path));
        requests.push(get(&path.replace("/static/", "/static-break/")));
    }
    Scenario::new("if conditions")
        .backends(1)
        .config(
            &r#"server {
                 listen {listen};
                 if ($arg_srv) { return 200 "server-level if: srv=[$arg_srv]\n"; }
                 location /var {
                     if ($arg_v) { return 200 "true: v=[$arg_v]\n"; }
                     return 200 "false: v=[$arg_v]\n";
                 }
                 location /eq {
                     if ($http_x_v = "a b") { return 200 "= quoted\n"; }
                     if ($http_x_v = $http_x_w) { return 200 "= a variable\n"; }
                     if ($http_x_v != x) { return 200 "!= x\n"; }
                     return 200 "none held\n";
                 }
                 location /re/ {
                     if ($uri ~ ^/re/(\w+)-(\d+)$) { return 200 "~: 1=[$1] 2=[$2]\n"; }
                     return 200 "~ failed: 1=[$1]\n";
                 }
                 location /re-ci {
                     if ($http_x_v ~* ^abc(.*)$) { return 200 "~*: 1=[$1]\n"; }
                     return 200 "~* failed\n";
                 }
                 location /re-not/ {
                     if ($uri !~ \.html$) { return 200 "!~ held\n"; }
                     return 200 "!~ failed\n";
                 }
                 location /re-not-ci {
                     if ($http_x_v !~* ^jpe?g$) { return 200 "!~* held\n"; }
                     return 200 "!~* failed\n";
                 }
                 location ~ ^/after/(\w+)$ {
                     if ($arg_x ~ ^(\d+)$) { set $n "n$1"; }
                     return 200 "1 after the if=[$1] n=[$n]\n";
                 }
                 location /quoted-re/ {
                     if ($uri ~ "^/quoted-re/(a b)$") { return 200 "quoted regex: 1=[$1]\n"; }
                     return 200 "quoted regex failed\n";
                 }
                 location /brk/ {
                     set $x "before";
                     if ($arg_b) { set $x "in the if"; break; }
                     set $x "after the if";
                     proxy_pass http://{b0};
                     proxy_set_header X-X $x;
                 }
                 location ~ ^/test-f(/.*)$ { if (-f @ROOT@$1) { return 200 "-f\n"; } return 200 "not -f\n"; }
                 location ~ ^/test-not-f(/.*)$ { if (!-f @ROOT@$1) { return 200 "!-f\n"; } return 200 "not !-f\n"; }
                 location ~ ^/test-d(/.*)$ { if (-d @ROOT@$1) { return 200 "-d\n"; } return 200 "not -d\n"; }
                 location ~ ^/test-not-d(/.*)$ { if (!-d "@ROOT@$1") { return 200 "!-d\n"; } return 200 "not !-d\n"; }
                 location ~ ^/test-e(/.*)$ { if (-e @ROOT@$1) { return 200 "-e\n"; } return 200 "not -e\n"; }
                 location ~ ^/test-not-e(/.*)$ { if (!-e @ROOT@$1) { return 200 "!-e\n"; } return 200 "not !-e\n"; }
                 location ~ ^/test-x(/.*)$ { if (-x @ROOT@$1) { return 200 "-x\n"; } return 200 "not -x\n"; }
                 location ~ ^/test-not-x(/.*)$ { if (!-x @ROOT@$1) { return 200 "!-x\n"; } return 200 "not !-x\n"; }
                 location /fs/ {
                     root @ROOT@;
                     if (!-e $request_filename) { rewrite ^/fs/(.*)$ /front?q=$1 last; }
                     return 200 "exists: uri=[$uri]\n";
                 }
                 location = /front { return 200 "front controller: q=[$arg_q] args=[$args]\n"; }
                 location /named {
                     if ($http_x_v ~ ^(?<first>\w+)-(?<second>\w+)$) { set $both "$second/$first"; }
                     return 200 "first=[$first] second=[$second] both=[$both] 1=[$1]\n";
                 }
                 location /static/ {
                     root @ROOT@;
                     rewrite ^/static(/.*)$ $1;
                     if (!-f $request_filename) { return 200 "no such file: uri=[$uri]\n"; }
                     return 200 "a file: uri=[$uri]\n";
                 }
                 location /static-break/ {
                     root @ROOT@;
                     rewrite ^/static-break(/.*)$ $1 break;
                     if (!-f $request_filename) { return 200 "never: break skips the if\n"; }
                     proxy_pass http://{b0};
                 }
             }"#
            .replace("@ROOT@", &root),
        )
        .send_all(requests)
        .run();
}

/// if blocks as people write them, and nginx's "if is evil": the CORS preflight answered
/// inside a proxied location, an if that proxies to another backend, two ifs that both hold
/// (only the last one's configuration applies, the location's add_header not at all), an if
/// holding only `set` in a proxied location (still proxied, with the if's settings), an if
/// whose add_header replaces the location's; and the redirect-to-https and
/// www-to-bare-host idioms at server level.
#[test]
fn if_idioms() {
    let cors = |method: &str| {
        get("/api/x")
            .method(method)
            .header("Origin", "http://o.test")
    };
    Scenario::new("if idioms")
        .backends(2)
        .compare_headers(&[
            "Access-Control-Allow-Origin",
            "Access-Control-Max-Age",
            "X-Loc",
            "X-A",
            "X-B",
        ])
        .config(
            r#"server {
                 listen {listen};
                 location /api/ {
                     if ($request_method = OPTIONS) {
                         add_header Access-Control-Allow-Origin *;
                         add_header Access-Control-Max-Age 1728000;
                         return 204;
                     }
                     add_header X-Loc loc;
                     proxy_pass http://{b0};
                 }
                 location /switch/ {
                     if ($arg_to = one) { proxy_pass http://{b1}; }
                     proxy_pass http://{b0};
                 }
                 location /two/ {
                     add_header X-Loc loc;
                     if ($arg_a) { add_header X-A a; }
                     if ($arg_b) { add_header X-B b; }
                     proxy_pass http://{b0};
                 }
                 location /only-set/ {
                     proxy_set_header X-Which location;
                     if ($arg_s) { set $s "set in the if"; }
                     proxy_pass http://{b0};
                     proxy_set_header X-S $s;
                 }
                 location /ret-in-if/ {
                     add_header X-Loc loc;
                     if ($arg_r) { return 200 "returned in the if\n"; }
                     return 200 "returned after the if\n";
                 }
             }
             server {
                 listen {listen1};
                 if ($http_x_forwarded_proto != "https") { return 301 https://$host$request_uri; }
                 location / { proxy_pass http://{b0}; }
             }
             server {
                 listen {listen2};
                 server_name example.com www.example.com;
                 if ($host = www.example.com) { return 301 http://example.com$request_uri; }
                 location / { return 200 "host=[$host] uri=[$request_uri]\n"; }
             }"#,
        )
        .send_all([
            cors("OPTIONS"),
            cors("GET"),
            get("/switch/x?to=one"),
            get("/switch/x?to=zero"),
            get("/two/x"),
            get("/two/x?a=1"),
            get("/two/x?b=1"),
            get("/two/x?a=1&b=1"),
            get("/only-set/x"),
            get("/only-set/x?s=1"),
            get("/ret-in-if/x"),
            get("/ret-in-if/x?r=1"),
            get("/a/b?c=d").on_listener(1),
            get("/a/b?c=d")
                .header("X-Forwarded-Proto", "https")
                .on_listener(1),
            get("/a/b?c=d")
                .header("X-Forwarded-Proto", "http")
                .host("shop.test")
                .on_listener(1),
            get("/a%20b").host("www.example.com").on_listener(2),
            get("/p?q=1").host("WWW.Example.com").on_listener(2),
            get("/p?q=1").host("example.com").on_listener(2),
        ])
        .run();
}

/// Settings nginx applies from an `if` block in a location when its condition holds: `expires`,
/// `gzip` and `error_page` over the location's, on the fast path and through Pingora's session
/// (a chunked body), for proxied responses, pages and files.
#[test]
fn if_settings() {
    let dir = support::TempDir::new("if-settings");
    std::fs::write(dir.path.join("down.html"), "<p>down</p>\n").expect("page");
    std::fs::write(dir.path.join("a.css"), "body { color: red; }\n").expect("css");
    let root = dir.path.display().to_string();
    let config = format!(
        "upstream app {{ server {{b0}}; }}
         upstream gone {{ server {{b1}}; }}
         server {{
             listen {{listen}};
             gzip_min_length 20;
             location / {{
                 expires 1h;
                 if ($arg_cache = no) {{ expires -1; }}
                 if ($arg_cache = epoch) {{ expires epoch; }}
                 proxy_pass http://app;
             }}
             location /zip/ {{
                 if ($arg_zip) {{ gzip on; }}
                 proxy_pass http://app;
             }}
             location /unzip/ {{
                 gzip on;
                 if ($arg_zip = no) {{ gzip off; }}
                 proxy_pass http://app;
             }}
             location /fail/ {{
                 error_page 502 /down.html;
                 if ($arg_page = other) {{ error_page 502 =503 /down.html; }}
                 if ($arg_page = none) {{ error_page 404 /down.html; }}
                 proxy_pass http://gone;
             }}
             location = /down.html {{ root {root}; }}
             location /files/ {{
                 alias {root}/;
                 if ($arg_cache) {{ expires 30d; }}
             }}
         }}"
    );
    let html = |path: &str| {
        get(path)
            .header(TYPE_HEADER, "text/html")
            .header(LENGTH_HEADER, "400")
            .header("Accept-Encoding", "gzip")
    };
    let session = on_pingora_session;
    Scenario::new("if settings")
        .backends(2)
        .plan(1, Plan::always(Reset))
        .compare_headers(&["Expires", "Cache-Control", "Content-Encoding", "Vary"])
        .config(&config)
        .send_all([
            get("/x"),
            get("/x?cache=no"),
            get("/x?cache=epoch"),
            session(get("/x?cache=no")),
            html("/zip/x"),
            html("/zip/x?zip=1"),
            session(html("/zip/x?zip=1")),
            html("/unzip/x"),
            html("/unzip/x?zip=no"),
            get("/fail/x"),
            get("/fail/x?page=other"),
            get("/fail/x?page=none"),
            session(get("/fail/x?page=other")),
            get("/files/a.css"),
            get("/files/a.css?cache=1"),
        ])
        .run();
}

// ---------------------------------------------------------------------------------------------
// Failures and retries

/// One server, every way of failing: 503 passed through, reset 502, silence 504, invalid header
/// 502, slow but in time 200, refused 502. A single server is never marked failed.
#[test]
fn failure_statuses() {
    Scenario::new("failure statuses")
        .backends(1)
        .plan(
            0,
            Plan::ok()
                .on(2, Status(503))
                .on(3, Reset)
                .on(4, Hang)
                .on(5, InvalidHeader)
                .on(6, Slow(std::time::Duration::from_millis(200))),
        )
        .config(
            "server {
                 listen {listen};
                 proxy_read_timeout 1s;
                 location / { proxy_pass http://{b0}; }
             }",
        )
        .send_all(paths("/r", 7))
        .step(refuse(0))
        .send(get("/refused"))
        .step(accept(0))
        .send(get("/accepting-again"))
        .run();
}

/// Default `proxy_next_upstream error timeout`: a reset and a timeout both move on.
#[test]
fn next_upstream_error_timeout() {
    Scenario::new("proxy_next_upstream error timeout")
        .backends(3)
        .plan(0, Plan::always(Reset))
        .plan(1, Plan::ok().on(1, Hang))
        .config(
            "upstream pool {
                 server {b0};
                 server {b1};
                 server {b2};
             }
             server {
                 listen {listen};
                 proxy_read_timeout 1s;
                 location / { proxy_pass http://pool; }
             }",
        )
        .send_all(paths("/r", 4))
        .run();
}

/// http_502 http_503 http_504: those answers move on (and count as failures); others pass.
#[test]
fn next_upstream_http_5xx() {
    Scenario::new("proxy_next_upstream http_502 http_503 http_504")
        .backends(4)
        .plan(0, Plan::always(Status(502)))
        .plan(1, Plan::always(Status(503)))
        .plan(2, Plan::always(Status(504)))
        .plan(3, Plan::ok().on(1, Status(500)))
        .config(
            "upstream pool {
                 server {b0};
                 server {b1};
                 server {b2};
                 server {b3};
             }
             server {
                 listen {listen};
                 proxy_next_upstream error timeout http_502 http_503 http_504;
                 location / { proxy_pass http://pool; }
             }",
        )
        .send_all(paths("/r", 4))
        .run();
}

/// http_500 moves on; when the last server also answers 500 that answer goes to the client.
#[test]
fn next_upstream_http_500() {
    Scenario::new("proxy_next_upstream http_500")
        .backends(2)
        .plan(0, Plan::always(Status(500)))
        .plan(1, Plan::ok().on(1, Status(500)))
        .config(
            "upstream pool {
                 server {b0} max_fails=0;
                 server {b1} max_fails=0;
             }
             server {
                 listen {listen};
                 proxy_next_upstream http_500;
                 location / { proxy_pass http://pool; }
             }",
        )
        .send_all(paths("/r", 4))
        .run();
}

/// http_404 and http_403 move on without counting as failures; http_429 counts.
#[test]
fn next_upstream_http_4xx() {
    Scenario::new("proxy_next_upstream http_404 http_403 http_429")
        .backends(4)
        .plan(0, Plan::always(Status(404)))
        .plan(1, Plan::always(Status(403)))
        .plan(2, Plan::always(Status(429)))
        .config(
            "upstream pool {
                 server {b0};
                 server {b1};
                 server {b2};
                 server {b3};
             }
             server {
                 listen {listen};
                 proxy_next_upstream error timeout http_404 http_403 http_429;
                 location / { proxy_pass http://pool; }
             }",
        )
        .send_all(paths("/r", 5))
        .run();
}

/// invalid_header: not in the default list (502), retried when listed.
#[test]
fn next_upstream_invalid_header() {
    Scenario::new("proxy_next_upstream invalid_header")
        .backends(4)
        .plan(0, Plan::always(InvalidHeader))
        .plan(2, Plan::always(InvalidHeader))
        .config(
            "upstream default_list { server {b0}; server {b1}; }
             upstream with_invalid { server {b2}; server {b3}; }
             server {
                 listen {listen};
                 location /default/ { proxy_pass http://default_list; }
                 location /listed/ {
                     proxy_pass http://with_invalid;
                     proxy_next_upstream error timeout invalid_header;
                 }
             }",
        )
        .send_all(paths("/default/", 3))
        .send_all(paths("/listed/", 3))
        .run();
}

/// A POST that reached a server is not retried (502); a GET is; a refused POST (never sent) is.
#[test]
fn next_upstream_post_not_retried() {
    Scenario::new("POST is not retried once sent")
        .backends(4)
        .plan(0, Plan::always(Reset))
        .refusing(2)
        .config(
            "upstream sent { server {b0}; server {b1}; }
             upstream refused { server {b2}; server {b3}; }
             server {
                 listen {listen};
                 location /sent/ { proxy_pass http://sent; }
                 location /refused/ { proxy_pass http://refused; }
             }",
        )
        .send(post("/sent/form", "a=1"))
        .send(post("/sent/form", "a=2"))
        .send(post("/refused/form", "a=3"))
        .run();
}

/// non_idempotent: the POST that reached a resetting server is retried on the next.
#[test]
fn next_upstream_non_idempotent() {
    Scenario::new("proxy_next_upstream non_idempotent")
        .backends(2)
        .plan(0, Plan::always(Reset))
        .config(
            "upstream pool { server {b0}; server {b1}; }
             server {
                 listen {listen};
                 proxy_next_upstream error timeout non_idempotent;
                 location / { proxy_pass http://pool; }
             }",
        )
        .send(post("/form", "a=1"))
        .send(get("/after"))
        .run();
}

/// off: the first failure is the answer.
#[test]
fn next_upstream_off() {
    Scenario::new("proxy_next_upstream off")
        .backends(2)
        .plan(0, Plan::ok().on(1, Reset).on(2, Status(503)))
        .config(
            "upstream pool {
                 server {b0} max_fails=0;
                 server {b1};
             }
             server {
                 listen {listen};
                 proxy_next_upstream off;
                 location / { proxy_pass http://pool; }
             }",
        )
        .send_all(paths("/r", 4))
        .run();
}

/// proxy_next_upstream_tries 2: two attempts, then 502.
#[test]
fn next_upstream_tries() {
    Scenario::new("proxy_next_upstream_tries 2")
        .backends(4)
        .plan(0, Plan::always(Reset))
        .plan(1, Plan::always(Reset))
        .plan(2, Plan::always(Reset))
        .config(
            "upstream pool {
                 server {b0} max_fails=0;
                 server {b1} max_fails=0;
                 server {b2} max_fails=0;
                 server {b3} max_fails=0;
             }
             server {
                 listen {listen};
                 proxy_next_upstream_tries 2;
                 location / { proxy_pass http://pool; }
             }",
        )
        .send_all(paths("/r", 4))
        .run();
}

/// proxy_next_upstream_timeout 1500ms with 1 s read timeouts and silent servers: a second
/// attempt starts at 1 s, none at 2 s, and the client gets 504.
#[test]
fn next_upstream_timeout() {
    Scenario::new("proxy_next_upstream_timeout")
        .backends(3)
        .plan(0, Plan::always(Hang))
        .plan(1, Plan::always(Hang))
        .plan(2, Plan::always(Hang))
        .config(
            "upstream pool {
                 server {b0};
                 server {b1};
                 server {b2};
             }
             server {
                 listen {listen};
                 proxy_read_timeout 1s;
                 proxy_next_upstream_timeout 1500ms;
                 location / { proxy_pass http://pool; }
             }",
        )
        .send(get("/slow"))
        .run();
}

// ---------------------------------------------------------------------------------------------
// Rate and connection limits (limit_req, limit_conn)
//
// Every zone here is fresh for each run (the proxy starts anew), rates are per minute unless a
// delay is the point, and each client is its own 127.0.0.x address, so what is limited does
// not hang on timing: a request a few milliseconds after another finds the bucket as full as
// one sent at once.

/// Requests from `source`, numbered into the path.
fn from_client<'a>(
    prefix: &'a str,
    count: usize,
    source: &'a str,
) -> impl Iterator<Item = Request> + 'a {
    (1..=count).map(move |i| get(&format!("{prefix}{i}")).from(source))
}

/// burst=3 nodelay at 1r/m: four requests pass at once, the fifth and sixth are refused with
/// 503 and never reach the upstream; another client address has a bucket of its own, and the
/// first client's stays full.
#[test]
fn limit_req_burst_nodelay() {
    Scenario::new("limit_req burst=3 nodelay")
        .backends(1)
        .compare_headers(&["X-Limit"])
        .config(
            "limit_req_zone $binary_remote_addr zone=one:1m rate=1r/m;
             server {
                 listen {listen};
                 add_header X-Limit $limit_req_status always;
                 location / {
                     limit_req zone=one burst=3 nodelay;
                     proxy_pass http://{b0};
                 }
             }",
        )
        .send_all(from_client("/a", 6, "127.0.0.1"))
        .send_all(from_client("/b", 5, "127.0.0.2"))
        .send(get("/a7").from("127.0.0.1"))
        .run();
}

/// No burst: the first request passes, every other one at once is refused, per client; a zone
/// used by two servers is one bucket per client across both.
#[test]
fn limit_req_without_burst() {
    Scenario::new("limit_req without burst")
        .backends(1)
        .compare_headers(&["X-Limit"])
        .config(
            "limit_req_zone $binary_remote_addr zone=one:1m rate=1r/m;
             server {
                 listen {listen};
                 add_header X-Limit $limit_req_status always;
                 location / {
                     limit_req zone=one;
                     proxy_pass http://{b0};
                 }
             }
             server {
                 listen {listen1};
                 add_header X-Limit $limit_req_status always;
                 location / {
                     limit_req zone=one;
                     proxy_pass http://{b0};
                 }
             }",
        )
        .send_all(from_client("/a", 3, "127.0.0.1"))
        .send_all(from_client("/b", 2, "127.0.0.2"))
        .send(get("/a4").from("127.0.0.1").on_listener(1))
        .send(get("/c1").from("127.0.0.3").on_listener(1))
        .send(get("/c2").from("127.0.0.3"))
        .run();
}

/// limit_req_status 429 replaces 503; $limit_req_status is PASSED or REJECTED, in the
/// response (`always`, so on the 429 too) and in the request the upstream receives, and empty
/// (no header) where no limit_req applies.
#[test]
fn limit_req_status_and_variable() {
    Scenario::new("limit_req_status and $limit_req_status")
        .backends(1)
        .compare_headers(&["X-Limit"])
        .config(
            "limit_req_zone $binary_remote_addr zone=one:1m rate=1r/m;
             server {
                 listen {listen};
                 limit_req_status 429;
                 add_header X-Limit $limit_req_status always;
                 location / {
                     limit_req zone=one burst=1 nodelay;
                     proxy_pass http://{b0};
                     proxy_set_header X-Limit-Req $limit_req_status;
                 }
                 location /free/ {
                     proxy_pass http://{b0};
                     proxy_set_header X-Limit-Req $limit_req_status;
                 }
             }",
        )
        .send_all(paths("/r", 3))
        .send(get("/free/x"))
        .send(get("/r4"))
        .run();
}

/// Clients that close their connections while limit_req delays their requests: nginx notices
/// (ngx_http_test_reading), logs 499 and sends nothing upstream. The appliance must not send the
/// requests either, on the fast path or through Pingora's session (auth_basic). A raw client, since the scenarios' clients wait for every answer.
#[test]
fn limit_req_client_gone_during_delay() {
    use std::io::{Read, Write};
    use support::proxies::{Kind, NginxOptions, Proxy};
    support::nginx::require_nginx();
    let mut seen = Vec::new();
    for kind in [Kind::Nginx, Kind::Appliance] {
        let mut backends = support::backends::Backends::start(1);
        backends.reset(&[Plan::ok()]);
        let listen: std::net::SocketAddr = format!("127.0.0.1:{}", support::free_port())
            .parse()
            .expect("address");
        let logs = support::TempDir::new("limit-gone");
        let log = logs.path.join("access.log");
        let passwords = logs.path.join("htpasswd");
        std::fs::write(&passwords, "plain:{PLAIN}secret\n").expect("htpasswd");
        let config = format!(
            "events {{}}
             http {{
                 limit_req_zone $binary_remote_addr zone=one:1m rate=1r/s;
                 log_format brief '$status $request_uri';
                 server {{
                     listen {listen};
                     access_log {log} brief;
                     location / {{
                         limit_req zone=one burst=5;
                         proxy_pass http://{backend};
                     }}
                     location /auth/ {{
                         limit_req zone=one burst=5;
                         auth_basic on;
                         auth_basic_user_file {passwords};
                         proxy_pass http://{backend};
                     }}
                 }}
             }}",
            passwords = passwords.display(),
            log = log.display(),
            backend = backends.addr(0),
        );
        let _proxy = Proxy::start(kind, &config, &[listen], NginxOptions::default());
        let request = |path: &str| format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
        // The first passes at once and is answered.
        let mut first = std::net::TcpStream::connect(listen).expect("connect");
        first.write_all(request("/first").as_bytes()).expect("send");
        let mut answer = [0u8; 512];
        let n = first.read(&mut answer).expect("answer");
        assert!(
            answer[..n].starts_with(b"HTTP/1.1 200"),
            "{kind:?}: first answered"
        );
        // The second waits about a second, the third two; their clients leave after a fifth
        // of one. The third asks for a location with auth_basic, which the appliance serves
        // through Pingora's session, where the delay is not the fast path's.
        let mut gone = std::net::TcpStream::connect(listen).expect("connect");
        gone.write_all(request("/gone").as_bytes()).expect("send");
        let mut gone_session = std::net::TcpStream::connect(listen).expect("connect");
        let authorized = "GET /auth/gone HTTP/1.1\r\nHost: x\r\n\
                          Authorization: Basic cGxhaW46c2VjcmV0\r\n\r\n";
        gone_session.write_all(authorized.as_bytes()).expect("send");
        std::thread::sleep(std::time::Duration::from_millis(200));
        drop(gone);
        drop(gone_session);
        std::thread::sleep(std::time::Duration::from_millis(2500));
        let paths: Vec<String> = backends
            .receptions()
            .iter()
            .map(|r| String::from_utf8_lossy(&r.request_line).into_owned())
            .filter_map(|line| line.split(' ').nth(1).map(str::to_string))
            .collect();
        let logged = std::fs::read_to_string(&log).unwrap_or_default();
        seen.push((kind.name(), paths, logged));
    }
    for (name, paths, logged) in &seen {
        assert_eq!(
            paths,
            &vec!["/first".to_string()],
            "{name}: only the first request reaches the backend"
        );
        for path in ["/gone", "/auth/gone"] {
            assert!(
                logged.lines().any(|l| l == format!("499 {path}")),
                "{name}: the request whose client left ({path}) is logged as 499: {logged:?}"
            );
        }
    }
}

/// limit_req_status 444 and limit_conn_status 444 are nginx's "close the connection": the
/// refused client gets no response at all; so does `return 444`.
#[test]
fn limit_req_status_444() {
    Scenario::new("limit_req_status 444 and limit_conn_status 444")
        .backends(1)
        .plan(0, Plan::ok().on(3, Hold))
        .config(
            "limit_req_zone $binary_remote_addr zone=one:1m rate=1r/m;
             limit_conn_zone $binary_remote_addr zone=addr:1m;
             server {
                 listen {listen};
                 location / {
                     limit_req zone=one;
                     limit_req_status 444;
                     proxy_pass http://{b0};
                 }
                 location /conn/ {
                     limit_conn addr 1;
                     limit_conn_status 444;
                     proxy_pass http://{b0};
                 }
                 location /headers/ {
                     limit_req zone=one;
                     limit_req_status 444;
                     add_header X-Seen yes always;
                     proxy_pass http://{b0};
                 }
                 location = /gone {
                     return 444;
                 }
             }",
        )
        .send(get("/1"))
        .send(get("/2"))
        .send(get("/3").from("127.0.0.2"))
        .step(start(get("/conn/held").from("127.0.0.3")))
        .send(get("/conn/x").from("127.0.0.3"))
        // The same through Pingora's session (add_header), and a `return 444`.
        .send(get("/headers/1").from("127.0.0.4"))
        .send(get("/headers/2").from("127.0.0.4"))
        .send(get("/gone"))
        .run();
}

/// limit_req_dry_run on: every request goes through at once; $limit_req_status says what
/// would have happened (DELAYED_DRY_RUN for a request within the burst without nodelay,
/// REJECTED_DRY_RUN beyond it, where nginx would have said 503); a dry-run delay still fills
/// the bucket; a location with limit_req_dry_run off sharing the zone refuses for real.
#[test]
fn limit_req_dry_run() {
    Scenario::new("limit_req_dry_run")
        .backends(1)
        .compare_headers(&["X-Limit"])
        .config(
            "limit_req_zone $binary_remote_addr zone=one:1m rate=1r/m;
             limit_req_zone $binary_remote_addr zone=two:1m rate=1r/m;
             server {
                 listen {listen};
                 add_header X-Limit $limit_req_status always;
                 limit_req_dry_run on;
                 location / {
                     limit_req zone=one burst=2;
                     proxy_pass http://{b0};
                     proxy_set_header X-Limit-Req $limit_req_status;
                 }
                 location /nodelay/ {
                     limit_req zone=two burst=1 nodelay;
                     proxy_pass http://{b0};
                 }
                 location /wet/ {
                     limit_req zone=two burst=1 nodelay;
                     limit_req_dry_run off;
                     proxy_pass http://{b0};
                 }
             }",
        )
        .send_all(paths("/r", 5))
        .send_all(paths("/nodelay/", 3))
        .send(get("/wet/x"))
        .run();
}

/// Without nodelay a request within the burst waits (here about a second at 1r/s) and is then
/// proxied as usual, with $limit_req_status DELAYED; the bucket is charged when the wait
/// starts, not when it ends, so a third request right after the second is delayed again
/// rather than refused; another client is not held up.
#[test]
fn limit_req_delayed() {
    Scenario::new("limit_req delayed")
        .backends(1)
        .compare_headers(&["X-Limit"])
        .config(
            "limit_req_zone $binary_remote_addr zone=one:1m rate=1r/s;
             server {
                 listen {listen};
                 add_header X-Limit $limit_req_status always;
                 location / {
                     limit_req zone=one burst=1;
                     proxy_pass http://{b0};
                     proxy_set_header X-Limit-Req $limit_req_status;
                 }
             }",
        )
        .send_all(from_client("/a", 3, "127.0.0.1"))
        .send(get("/b1").from("127.0.0.2"))
        .run();
}

/// delay=N: the first N requests beyond the first pass at once (PASSED, not DELAYED), the rest
/// of the burst waits. At 1r/m with delay=2, requests 1-3 pass undelayed; at 1r/s with
/// delay=1, requests 1-2 pass and 3-4 wait about a second each (the third is delayed unless
/// the first three took a second, the fourth whatever the timing).
#[test]
fn limit_req_delay_parameter() {
    Scenario::new("limit_req delay=")
        .backends(1)
        .compare_headers(&["X-Limit"])
        .config(
            "limit_req_zone $binary_remote_addr zone=slow:1m rate=1r/m;
             limit_req_zone $binary_remote_addr zone=fast:1m rate=1r/s;
             server {
                 listen {listen};
                 add_header X-Limit $limit_req_status always;
                 location /slow/ {
                     limit_req zone=slow burst=4 delay=2;
                     proxy_pass http://{b0};
                 }
                 location /fast/ {
                     limit_req zone=fast burst=3 delay=1;
                     proxy_pass http://{b0};
                 }
             }",
        )
        .send_all(paths("/slow/", 3))
        .send_all(paths("/fast/", 4))
        .run();
}

/// Two zones in one location (per client and per URI): a request must pass both; one refused
/// by the second zone is not charged to the first (the client's fourth request still passes),
/// and one refused by the first never reaches the second (the URI's bucket is untouched).
#[test]
fn limit_req_two_zones() {
    Scenario::new("limit_req with two zones")
        .backends(1)
        .compare_headers(&["X-Limit"])
        .config(
            "limit_req_zone $binary_remote_addr zone=addr:1m rate=1r/m;
             limit_req_zone $uri zone=uri:1m rate=1r/m;
             server {
                 listen {listen};
                 add_header X-Limit $limit_req_status always;
                 location / {
                     limit_req zone=addr burst=2 nodelay;
                     limit_req zone=uri burst=1 nodelay;
                     proxy_pass http://{b0};
                 }
             }",
        )
        .send_all([
            get("/a").from("127.0.0.1"),
            get("/a").from("127.0.0.1"),
            get("/a").from("127.0.0.1"),
            get("/b").from("127.0.0.1"),
            get("/c").from("127.0.0.1"),
            get("/c").from("127.0.0.2"),
            get("/c").from("127.0.0.3"),
            get("/c").from("127.0.0.4"),
        ])
        .run();
}

/// A key that is empty for a request (here a map gives "" for one header value) leaves that
/// request unlimited and $limit_req_status empty; the others share their client's bucket.
#[test]
fn limit_req_empty_key() {
    Scenario::new("limit_req with an empty key")
        .backends(1)
        .compare_headers(&["X-Limit"])
        .config(
            "map $http_x_tier $limit_key {
                 default $binary_remote_addr;
                 premium \"\";
             }
             limit_req_zone $limit_key zone=one:1m rate=1r/m;
             server {
                 listen {listen};
                 add_header X-Limit $limit_req_status always;
                 location / {
                     limit_req zone=one;
                     proxy_pass http://{b0};
                 }
             }",
        )
        .send_all([
            get("/1"),
            get("/2"),
            get("/3").header("X-Tier", "premium"),
            get("/4").header("X-Tier", "premium"),
            get("/5").header("X-Tier", "premium"),
            get("/6").header("X-Tier", "basic"),
        ])
        .run();
}

/// Inheritance: limit_req at http level applies to a server without its own, at server level
/// to a location without its own; a location with its own limit_req replaces the inherited
/// list (and a nested location inherits it in turn); limit_req_status and limit_req_dry_run
/// are inherited and can be set again lower down.
#[test]
fn limit_req_inheritance() {
    Scenario::new("limit_req inheritance")
        .backends(1)
        .compare_headers(&["X-Limit"])
        .config(
            "limit_req_zone $binary_remote_addr zone=http:1m rate=1r/m;
             limit_req_zone $binary_remote_addr zone=srv:1m rate=1r/m;
             limit_req_zone $binary_remote_addr zone=loc:1m rate=1r/m;
             limit_req_status 429;
             limit_req zone=http;
             server {
                 listen {listen};
                 limit_req zone=srv;
                 add_header X-Limit $limit_req_status always;
                 location /inherit/ { proxy_pass http://{b0}; }
                 location /own/ {
                     limit_req zone=loc burst=2 nodelay;
                     proxy_pass http://{b0};
                     location /own/nested/ { proxy_pass http://{b0}; }
                 }
                 location /status/ { limit_req_status 503; proxy_pass http://{b0}; }
             }
             server {
                 listen {listen1};
                 add_header X-Limit $limit_req_status always;
                 location / { proxy_pass http://{b0}; }
                 location /dry/ { limit_req_dry_run on; proxy_pass http://{b0}; }
             }",
        )
        .send_all([
            get("/inherit/1"),
            get("/inherit/2"),
            get("/own/1"),
            get("/own/2"),
            get("/own/nested/3"),
            get("/own/4"),
            get("/status/1"),
            get("/1").on_listener(1),
            get("/2").on_listener(1),
            get("/dry/3").on_listener(1),
        ])
        .run();
}

/// Phases: limit_req runs after the rewrite phases, so a server-level `return` and a location
/// `return` answer before it (never limited, $limit_req_status empty) and a `rewrite ... last`
/// leaves a location before its (inherited) limits apply, the request being counted once, in
/// the location it ends in; it runs before the access phase, so a denied client gets 403 while
/// under the limit and 503 once over it.
#[test]
fn limit_req_phases() {
    Scenario::new("limit_req and the phases")
        .backends(1)
        .compare_headers(&["X-Limit"])
        .config(
            r#"limit_req_zone $binary_remote_addr zone=one:1m rate=1r/m;
             limit_req_zone $binary_remote_addr zone=two:1m rate=1r/m;
             server {
                 listen {listen};
                 limit_req zone=one;
                 add_header X-Limit $limit_req_status always;
                 if ($arg_stop) { return 204; }
                 location / { proxy_pass http://{b0}; }
                 location /ret { return 200 "status=[$limit_req_status]\n"; }
                 location /deny/ { deny 127.0.0.3; proxy_pass http://{b0}; }
                 location /moved/ { rewrite ^/moved/(.*)$ /new/$1 last; }
                 location /new/ { limit_req zone=two burst=1 nodelay; proxy_pass http://{b0}; }
             }"#,
        )
        .send_all([
            get("/ret").from("127.0.0.1"),
            get("/ret").from("127.0.0.1"),
            get("/x").from("127.0.0.1"),
            get("/x").from("127.0.0.1"),
            get("/x?stop=1").from("127.0.0.1"),
            get("/ret").from("127.0.0.1"),
            get("/deny/a").from("127.0.0.3"),
            get("/deny/b").from("127.0.0.3"),
            get("/deny/c").from("127.0.0.3"),
            get("/moved/a").from("127.0.0.4"),
            get("/moved/b").from("127.0.0.4"),
            get("/new/c").from("127.0.0.4"),
            get("/x").from("127.0.0.4"),
        ])
        .run();
}

/// The key is the address realip yields: behind a trusted peer each X-Forwarded-For address
/// has its own bucket; an untrusted peer is counted by its own address whatever it sends.
#[test]
fn limit_req_keyed_by_real_ip() {
    let xff = |from: &str, value: &str| get("/").from(from).header("X-Forwarded-For", value);
    Scenario::new("limit_req keyed by the real IP")
        .backends(1)
        .compare_headers(&["X-Limit"])
        .config(
            "limit_req_zone $binary_remote_addr zone=one:1m rate=1r/m;
             server {
                 listen {listen};
                 set_real_ip_from 127.0.0.1;
                 real_ip_header X-Forwarded-For;
                 add_header X-Limit $limit_req_status always;
                 location / {
                     limit_req zone=one;
                     proxy_pass http://{b0};
                 }
             }",
        )
        .send_all([
            xff("127.0.0.1", "192.0.2.1"),
            xff("127.0.0.1", "192.0.2.1"),
            xff("127.0.0.1", "192.0.2.2"),
            get("/").from("127.0.0.1"),
            get("/").from("127.0.0.1"),
            xff("127.0.0.2", "192.0.2.3"),
            xff("127.0.0.2", "192.0.2.4"),
        ])
        .run();
}

/// limit_conn 1: while one request from a client is in progress another from it is refused
/// with 503 (without reaching the upstream), in any location sharing the zone; a location
/// without limit_conn and another client are not; once the first is answered the client
/// may send again, and a request that failed upstream (502) is uncounted as well.
/// $limit_conn_status is PASSED or REJECTED, empty where nothing is limited.
#[test]
fn limit_conn_basic() {
    Scenario::new("limit_conn 1")
        .backends(1)
        .plan(0, Plan::ok().on(1, Hold).on(5, Reset))
        .compare_headers(&["X-Conn"])
        .config(
            "limit_conn_zone $binary_remote_addr zone=addr:1m;
             server {
                 listen {listen};
                 add_header X-Conn $limit_conn_status always;
                 location / { limit_conn addr 1; proxy_pass http://{b0}; }
                 location /other/ { limit_conn addr 1; proxy_pass http://{b0}; }
                 location /free/ { proxy_pass http://{b0}; }
             }",
        )
        .step(start(get("/held").from("127.0.0.1")))
        .send(get("/second").from("127.0.0.1"))
        .send(get("/other/x").from("127.0.0.1"))
        .send(get("/free/x").from("127.0.0.1"))
        .send(get("/elsewhere").from("127.0.0.2"))
        .step(release(0))
        .send(get("/after").from("127.0.0.1"))
        .send(get("/reset").from("127.0.0.1"))
        .send(get("/after-reset").from("127.0.0.1"))
        .run();
}

/// limit_conn_status 429 replaces 503; limit_conn_dry_run on lets the extra request through
/// with $limit_conn_status REJECTED_DRY_RUN (in the response and upstream) without counting it.
#[test]
fn limit_conn_status_and_dry_run() {
    Scenario::new("limit_conn_status and limit_conn_dry_run")
        .backends(2)
        .plan(0, Plan::ok().on(1, Hold))
        .compare_headers(&["X-Conn"])
        .config(
            "limit_conn_zone $binary_remote_addr zone=addr:1m;
             server {
                 listen {listen};
                 limit_conn_status 429;
                 add_header X-Conn $limit_conn_status always;
                 location /a/ { limit_conn addr 1; proxy_pass http://{b0}; }
                 location /dry/ {
                     limit_conn addr 1;
                     limit_conn_dry_run on;
                     proxy_pass http://{b1};
                     proxy_set_header X-Conn-Status $limit_conn_status;
                 }
             }",
        )
        .step(start(get("/a/held").from("127.0.0.1")))
        .send(get("/a/x").from("127.0.0.1"))
        .send(get("/dry/x").from("127.0.0.1"))
        .send(get("/dry/y").from("127.0.0.2"))
        .step(release(0))
        .send(get("/dry/z").from("127.0.0.1"))
        .send(get("/a/y").from("127.0.0.1"))
        .run();
}

/// Two limit_conn zones (per client, 2, and per server name, 3) at server level: a request
/// must fit both; one refused by the second is uncounted from the first again (so the same
/// client fits afterwards); an empty key ($server_name of a server without a name) limits
/// nothing.
#[test]
fn limit_conn_two_zones() {
    Scenario::new("limit_conn with two zones")
        .backends(3)
        .plan(0, Plan::ok().on(1, Hold).on(2, Hold))
        .plan(1, Plan::ok().on(1, Hold))
        .plan(2, Plan::ok().on(1, Hold).on(2, Hold))
        .compare_headers(&["X-Conn"])
        .config(
            "limit_conn_zone $binary_remote_addr zone=perip:1m;
             limit_conn_zone $server_name zone=perserver:1m;
             server {
                 listen {listen};
                 server_name limits.test;
                 add_header X-Conn $limit_conn_status always;
                 limit_conn perip 2;
                 limit_conn perserver 3;
                 location /a/ { proxy_pass http://{b0}; }
                 location /b/ { proxy_pass http://{b1}; }
             }
             server {
                 listen {listen1};
                 add_header X-Conn $limit_conn_status always;
                 limit_conn perserver 1;
                 location / { proxy_pass http://{b2}; }
             }",
        )
        .step(start(get("/a/1").from("127.0.0.1")))
        .step(start(get("/a/2").from("127.0.0.1")))
        .send(get("/a/3").from("127.0.0.1"))
        .step(start(get("/b/1").from("127.0.0.2")))
        .send(get("/b/2").from("127.0.0.2"))
        .send(get("/a/4").from("127.0.0.3"))
        .step(release(0))
        .send(get("/b/3").from("127.0.0.2"))
        .step(start(get("/x1").on_listener(1)))
        .step(start(get("/x2").on_listener(1)))
        .send(get("/x3").on_listener(1))
        .run();
}

/// limit_req runs before limit_conn: a request within the rate but over the connection limit
/// is refused by limit_conn (503) and still charged to the rate; one over the rate is refused
/// by limit_req (its status, 429) and limit_conn never looks at it ($limit_conn_status empty).
/// The log levels change only what is logged.
#[test]
fn limit_conn_after_limit_req() {
    Scenario::new("limit_req before limit_conn")
        .backends(1)
        .plan(0, Plan::ok().on(1, Hold))
        .compare_headers(&["X-Req", "X-Conn"])
        .config(
            "limit_req_zone $binary_remote_addr zone=rate:1m rate=1r/m;
             limit_conn_zone $binary_remote_addr zone=addr:1m;
             server {
                 listen {listen};
                 limit_req_log_level warn;
                 limit_conn_log_level info;
                 add_header X-Req $limit_req_status always;
                 add_header X-Conn $limit_conn_status always;
                 location / {
                     limit_req zone=rate burst=2 nodelay;
                     limit_req_status 429;
                     limit_conn addr 1;
                     proxy_pass http://{b0};
                 }
             }",
        )
        .step(start(get("/held").from("127.0.0.1")))
        .send_all(from_client("/x", 3, "127.0.0.1"))
        .step(release(0))
        .send(get("/after").from("127.0.0.1"))
        .send(get("/other").from("127.0.0.2"))
        .run();
}

// ---------------------------------------------------------------------------------------------
// The harness itself: a test that cannot fail proves nothing, so these show it notices.

/// The same limits where no `add_header` applies, so that the appliance serves these
/// locations on its fast path rather than through Pingora's session: refusals with their
/// status (503, 429, 444), a delayed request served, a held request counted until it ends,
/// and the upstream requests of those let through.
#[test]
fn limits_on_the_fast_path() {
    Scenario::new("limit_req and limit_conn on the fast path")
        .backends(2)
        .plan(1, Plan::ok().on(1, Hold))
        .config(
            "limit_req_zone $binary_remote_addr zone=one:1m rate=1r/m;
             limit_req_zone $binary_remote_addr zone=slow:1m rate=2r/s;
             limit_conn_zone $binary_remote_addr zone=addr:1m;
             server {
                 listen {listen};
                 location / {
                     limit_req zone=one burst=2 nodelay;
                     proxy_pass http://{b0};
                 }
                 location /teapot/ {
                     limit_req zone=one;
                     limit_req_status 429;
                     proxy_pass http://{b0};
                 }
                 location /slow/ {
                     limit_req zone=slow burst=1;
                     proxy_pass http://{b0};
                 }
                 location /gone/ {
                     limit_req zone=one;
                     limit_req_status 444;
                     proxy_pass http://{b0};
                 }
                 location /conn/ {
                     limit_conn addr 1;
                     proxy_pass http://{b1};
                 }
             }",
        )
        .send_all(from_client("/a", 4, "127.0.0.1"))
        .send(get("/teapot/1").from("127.0.0.2"))
        .send(get("/teapot/2").from("127.0.0.2"))
        .send(get("/slow/1").from("127.0.0.3"))
        .send(get("/slow/2").from("127.0.0.3"))
        .send(get("/gone/1").from("127.0.0.4"))
        .send(get("/gone/2").from("127.0.0.4"))
        .step(start(get("/conn/held").from("127.0.0.5")))
        .send(get("/conn/second").from("127.0.0.5"))
        .step(release(1))
        .send(get("/conn/after").from("127.0.0.5"))
        .run();
}

/// `proxy_pass` with variables (ngx_http_proxy_eval): a `map` picks the upstream (canary by
/// header); a URI part is sent as it is, without the client's arguments (and a `?`-only one
/// gets a `/`); an IP address in a variable is proxied to directly, with `$proxy_host` its
/// text; `$host` naming an upstream goes there, naming anything else is nginx's 502 without a
/// resolver; a URL without `http://` is a 500.
#[test]
fn proxy_pass_with_variables() {
    Scenario::new("proxy_pass with variables")
        .backends(2)
        .config(
            "upstream stable { server {b0}; }
             upstream canary { server {b1}; }
             map $http_x_canary $pool { default stable; \"1\" canary; }
             server {
                 listen {listen};
                 location / {
                     proxy_pass http://$pool;
                 }
                 location /uri/ {
                     proxy_pass http://$pool/fixed$uri;
                 }
                 location /args/ {
                     proxy_pass http://stable?$args;
                 }
                 location /byaddr/ {
                     set $target {b1};
                     proxy_pass http://$target;
                 }
                 location /host/ {
                     proxy_pass http://$host;
                 }
                 location /bad/ {
                     proxy_pass $http_x_target;
                 }
                 location /headers/ {
                     proxy_set_header X-Proxy-Host $proxy_host;
                     proxy_pass http://$pool;
                 }
             }",
        )
        .send(get("/a"))
        .send(get("/a?x=1").header("X-Canary", "1"))
        .send(get("/uri/x?y=2"))
        .send(get("/uri/x").header("X-Canary", "1"))
        .send(get("/args/z?a=1&b=2"))
        .send(get("/byaddr/p?q=1"))
        .send(get("/host/h").host("stable"))
        .send(get("/host/h").host("canary"))
        .send(get("/host/h").host("localhost"))
        .send(get("/bad/x").header("X-Target", "ftp://stable"))
        .send(get("/bad/x").header("X-Target", "HTTP://canary/over"))
        .send(get("/bad/x"))
        .send(get("/headers/h").header("X-Canary", "1"))
        .run();
}

/// Round robin without weights instead of with them: the harness names the first request
/// that went elsewhere.
#[test]
fn harness_notices_a_different_balance() {
    let scenario = Scenario::new("harness: weights")
        .backends(2)
        .config(
            "upstream pool { server {b0} weight=3; server {b1}; }
             server { listen {listen}; location / { proxy_pass http://pool; } }",
        )
        .send_all(paths("/r", 4));
    let report = scenario.differences_from(
        "upstream pool { server {b0}; server {b1}; }
         server { listen {listen}; location / { proxy_pass http://pool; } }",
    );
    assert!(
        report.contains("expected: response to #2 (GET /r2 HTTP/1.1): 200 from backend 0"),
        "{report}"
    );
    assert!(report.contains("got:      response to #2 (GET /r2 HTTP/1.1): 200 from backend 1"));
}

/// An extra upstream header, and keepalive instead of none: both show in the report.
#[test]
fn harness_notices_different_upstream_requests() {
    let scenario = Scenario::new("harness: headers")
        .backends(1)
        .config(
            "upstream pool { server {b0}; keepalive 2; }
             server { listen {listen}; location / { proxy_pass http://pool; } }",
        )
        .send_all(paths("/r", 2));
    let report = scenario.differences_from(
        "upstream pool { server {b0}; keepalive 2; }
         server {
             listen {listen};
             location / {
                 proxy_pass http://pool;
                 proxy_http_version 1.1;
                 proxy_set_header Connection \"\";
                 proxy_set_header X-Extra yes;
             }
         }",
    );
    assert!(report.contains("GET /r1 HTTP/1.1"), "{report}");
    assert!(report.contains("X-Extra: yes"), "{report}");
    assert!(
        report.contains("connections accepted per backend: [1]"),
        "{report}"
    );
}

/// What a server's own script answers carries the server's settings: its add_header on a
/// `return` and on a rewrite's redirect (`always` for an error status), as proxied responses
/// of locations without their own do; a location's add_header replaces it.
#[test]
fn server_script_answers_with_server_settings() {
    Scenario::new("server script responses")
        .backends(1)
        .config(
            r#"server {
                 listen {listen};
                 add_header X-Srv srv;
                 add_header X-Always always always;
                 if ($arg_go) { return 301 https://example.com/; }
                 if ($arg_deny) { return 403; }
                 rewrite ^/old$ /new permanent;
                 location / { proxy_pass http://{b0}; }
                 location /own/ { add_header X-Own own; rewrite ^ /x redirect; }
             }"#,
        )
        .compare_headers(&["X-Srv", "X-Always", "X-Own"])
        .send_all([
            get("/?go=1"),
            get("/?deny=1"),
            get("/old"),
            get("/"),
            get("/own/a"),
        ])
        .run();
}

/// Headers named with `compare_headers`: a different value, a missing one and an extra
/// occurrence all show in the report; headers not named do not count.
#[test]
fn harness_notices_different_response_headers() {
    let scenario = Scenario::new("harness: response headers")
        .backends(0)
        .compare_headers(&["X-A", "X-B"])
        .config(
            r#"server {
                 listen {listen};
                 location / { add_header X-A 1; add_header X-B 2; add_header X-C 3; return 200 "x\n"; }
             }"#,
        )
        .send(get("/"));
    let report = scenario.differences_from(
        r#"server {
             listen {listen};
             location / { add_header X-A 9; add_header X-C 4; add_header X-A 1; return 200 "x\n"; }
         }"#,
    );
    assert!(report.contains("X-A: 1, X-B: 2\n"), "{report}");
    assert!(report.contains("X-A: 9, X-A: 1, X-B: -"), "{report}");
    assert!(!report.contains("X-C"), "{report}");
}

#[test]
fn harness_chi_square_rejects_the_wrong_shares() {
    let weights = [0.5, 1.0 / 3.0, 1.0 / 6.0];
    assert!(chi_square(&[300, 200, 100], &weights).passes());
    assert!(!chi_square(&[200, 200, 200], &weights).passes());
    assert!(chi_square(&[300, 300, 0], &[0.5, 0.5, 0.0]).passes());
    assert!(!chi_square(&[300, 299, 1], &[0.5, 0.5, 0.0]).passes());
    // random two with weights 3 2 1 and nobody busy: 0.35, 0.40, 0.25 (worked by hand).
    let shares = random_two_shares(&[3.0, 2.0, 1.0], &[0.0, 0.0, 0.0]);
    for (share, want) in shares.iter().zip([0.35, 0.40, 0.25]) {
        assert!((share - want).abs() < 1e-9, "{shares:?}");
    }
}

/// The recording backends on their own, without a proxy: each behaviour as a client sees it.
#[test]
fn harness_backends_behave_as_scripted() {
    use support::backends::Backends;
    use support::client::{send, Outcome};
    let mut backends = Backends::start(2);
    backends.reset(&[
        Plan::ok()
            .on(2, Status(503))
            .on(3, Reset)
            .on(4, InvalidHeader),
        Plan::ok(),
    ]);
    let port = backends.addr(0).port();
    let outcomes: Vec<Outcome> = (1..=4).map(|seq| send(port, &get("/x"), seq)).collect();
    assert_eq!(outcomes[0].status(), Some(200));
    assert_eq!(outcomes[0].backend(), Some(0));
    assert_eq!(outcomes[1].status(), Some(503));
    assert!(
        matches!(&outcomes[2], Outcome::Failed(why) if why.contains("ConnectionReset")),
        "{:?}",
        outcomes[2]
    );
    match &outcomes[3] {
        Outcome::Response(r) => assert_eq!(r.header("Bad Header"), Some("here")),
        other => panic!("{other:?}"),
    }
    let received = backends.receptions();
    assert_eq!(received.len(), 4);
    assert_eq!(received[0].request_line, b"GET /x HTTP/1.1");
    assert_eq!(
        received[0].header_lines[0],
        format!("Host: 127.0.0.1:{port}").into_bytes()
    );
    assert_eq!(received[3].seq, Some(4));

    // Refusing closes the listener; accepting opens it again on the same port.
    backends.set_refusing(1, true);
    let port1 = backends.addr(1).port();
    assert!(
        matches!(send(port1, &get("/"), 5), Outcome::Failed(why) if why.contains("ConnectionRefused"))
    );
    backends.set_refusing(1, false);
    assert_eq!(send(port1, &get("/"), 6).backend(), Some(1));
    assert_eq!(backends.connection_counts(), vec![4, 1]);
}

/// `split_clients` as a canary split: each user (a query argument, then a header) lands in the
/// pool nginx puts it in, by nginx's MurmurHash2 of the key and its cumulative shares; a share
/// the parts leave (no `*`) gives the empty value, which picks the default of a map. The
/// variable is also sent upstream in a header.
#[test]
fn split_clients_canary() {
    Scenario::new("split_clients canary")
        .backends(3)
        .config(
            "upstream stable { server {b0}; }
             upstream canary { server {b1}; }
             upstream beta { server {b2}; }
             split_clients \"user-${arg_user}\" $by_user { 30% canary; 10.5% beta; * stable; }
             split_clients $http_x_user $by_header { 50% canary; 25% beta; }
             map $by_header $header_pool { default stable; canary canary; beta beta; }
             server {
                 listen {listen};
                 location / {
                     proxy_set_header X-Variant \"[$by_user]\";
                     proxy_pass http://$by_user;
                 }
                 location /h/ {
                     proxy_set_header X-Variant \"[$by_header]\";
                     proxy_pass http://$header_pool;
                 }
             }",
        )
        .send_all((0..40).map(|i| get(&format!("/u?user={i}"))))
        .send_all((0..40).map(|i| get("/h/x").header("X-User", &format!("u{i}@example.com"))))
        .send(get("/h/none"))
        .run();
}

/// `geo` routing and refusing by address: the client's address (a loopback address per
/// request) in CIDR blocks (the longest wins, a later entry replaces, `delete` takes one out),
/// `X-Forwarded-For` read only from a trusted `proxy` (recursively when asked), an address
/// from a variable (`ranges`, nested; anything not an address looks up as 255.255.255.255),
/// and the value used by `if`, a map and `proxy_pass`.
#[test]
fn geo_routing() {
    Scenario::new("geo routing")
        .backends(2)
        .config(
            "upstream inside { server {b0}; }
             upstream outside { server {b1}; }
             geo $zone {
                 default       outside;
                 127.0.0.0/24  inside;
                 127.0.0.8/29  outside;
                 127.0.0.12    inside;
                 127.0.0.13    blocked;
                 127.0.0.14    x;
                 127.0.0.14    blocked;
                 127.0.0.20/30 blocked;
                 delete 127.0.0.20/30;
                 ::1           inside;
             }
             geo $behind_proxy {
                 proxy          127.0.0.5;
                 proxy          10.0.0.0/8;
                 proxy_recursive;
                 default        outside;
                 127.0.0.0/8    inside;
                 192.168.0.0/16 inside;
                 255.255.255.255 none;
             }
             geo $arg_ip $by_range {
                 ranges;
                 default outside;
                 10.0.0.0-10.0.255.255 inside;
                 10.0.1.0-10.0.1.255 outside;
                 255.255.255.0-255.255.255.254 edge;
             }
             map $zone $refused { blocked 1; default 0; }
             server {
                 listen {listen};
                 location / {
                     if ($refused) { return 403; }
                     proxy_set_header X-Zone $zone;
                     proxy_pass http://$zone;
                 }
                 location /proxy/ {
                     proxy_set_header X-Zone $behind_proxy;
                     proxy_pass http://$behind_proxy;
                 }
                 location /range/ {
                     proxy_set_header X-Zone $by_range;
                     proxy_pass http://$by_range;
                 }
             }",
        )
        .send_all((1..=24).map(|n| get(&format!("/from/{n}")).from(&format!("127.0.0.{n}"))))
        .send_all(
            [
                ("127.0.0.5", "192.168.1.1"),
                ("127.0.0.5", "8.8.8.8"),
                ("127.0.0.5", "8.8.8.8, 10.1.1.1"),
                ("127.0.0.5", "192.168.1.1, 10.9.9.9, 10.1.1.1"),
                ("127.0.0.6", "8.8.8.8"),
                ("127.0.0.5", "not-an-address"),
            ]
            .map(|(from, xff)| get("/proxy/p").from(from).header("X-Forwarded-For", xff)),
        )
        .send_all(
            [
                "10.0.0.1",
                "10.0.1.1",
                "10.0.2.1",
                "9.9.9.9",
                "junk",
                "",
                "::ffff:10.0.0.7",
                "2001:db8::1",
                "255.255.255.9",
            ]
            .map(|ip| get(&format!("/range/r?ip={ip}"))),
        )
        .run();
}

/// An htpasswd file with one user per kind of hash nginx reads ("secret" each time): its own
/// `{PLAIN}`, `{SHA}`, `{SSHA}` and `$apr1$`, and libxcrypt's DES, MD5, SHA-512, bcrypt and
/// yescrypt (made with `openssl passwd` and Python's crypt); with a comment, a user named
/// twice (the first line counts) and a hash followed by a comment field.
fn htpasswd() -> support::TempDir {
    let dir = support::TempDir::new("auth-basic");
    let lines = [
        "# comment:{PLAIN}secret",
        "plain:{PLAIN}secret",
        "sha:{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=",
        "ssha:{SSHA}D4kSuvPIF4rZzl+dW9Km/1788fBwZXBwZXI=",
        "apr1:$apr1$saltsalt$LrttParrLPdxvgutaSXWJ0:comment",
        "md5:$1$saltsalt$9xy1btjgzLYfb7hivXtC//",
        "sha512:$6$saltsalt$TVLlQcbpFVof5W3Yz4DTP6gRstiNuHwwTt6GLc1E5n0U0aDehy0S5knV8wiOQSpT0Y77vwPZN.Pq.H91p5hVO1",
        "des:saHW9GdxihkGQ",
        "bcrypt:$2b$05$abcdefghijklmnopqrstuuOQiyCxlgf/oeuTqixKmWdcYUh4Hjl0a",
        "yescrypt:$y$j9T$abcdefghijklmnopqrstu.$7uryFExhLbAhrpK1WytVzeNObCUVaK3VoKccP3fJEIB",
        "plain:{PLAIN}second",
        "",
    ];
    std::fs::write(dir.path.join("htpasswd"), lines.join("\n")).expect("htpasswd");
    dir
}

fn basic(user: &str, password: &str) -> String {
    use base64::Engine;
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {encoded}")
}

/// auth_basic: every kind of hash with the right and a wrong password, a user the file does
/// not have, no or broken credentials (no `:`, an empty user, bad base64, another scheme, the
/// scheme's name in lower case with extra spaces), `auth_basic off` inside, a realm made of a
/// variable, a missing user file (403), `satisfy all` and `satisfy any` with `allow`/`deny`
/// (by client address; `any` where no rule holds), and `$remote_user` sent upstream (also
/// where nothing is asked for).
#[test]
fn auth_basic() {
    let dir = htpasswd();
    let file = dir.path.join("htpasswd").display().to_string();
    let missing = dir.path.join("missing").display().to_string();
    let config = format!(
        "upstream app {{ server {{b0}}; }}
         server {{
             listen {{listen}};
             proxy_set_header X-User $remote_user;
             location / {{
                 auth_basic \"Staff only\";
                 auth_basic_user_file {file};
                 proxy_pass http://app;
                 location /open/ {{
                     auth_basic off;
                     proxy_pass http://app;
                 }}
             }}
             location /realm/ {{
                 auth_basic \"$host area\";
                 auth_basic_user_file {file};
                 proxy_pass http://app;
             }}
             location /missing/ {{
                 auth_basic \"x\";
                 auth_basic_user_file {missing};
                 proxy_pass http://app;
             }}
             location /any/ {{
                 satisfy any;
                 allow 127.0.0.2;
                 deny all;
                 auth_basic \"any\";
                 auth_basic_user_file {file};
                 proxy_pass http://app;
             }}
             location /anyallow/ {{
                 satisfy any;
                 allow 127.0.0.2;
                 auth_basic \"anyallow\";
                 auth_basic_user_file {file};
                 proxy_pass http://app;
             }}
             location /all/ {{
                 deny 127.0.0.3;
                 auth_basic \"all\";
                 auth_basic_user_file {file};
                 proxy_pass http://app;
             }}
             location /public/ {{
                 proxy_pass http://app;
             }}
         }}"
    );
    let users = [
        "plain", "sha", "ssha", "apr1", "md5", "sha512", "des", "bcrypt", "yescrypt",
    ];
    let mut requests = Vec::new();
    for user in users {
        requests.push(get(&format!("/u/{user}")).header("Authorization", &basic(user, "secret")));
        requests
            .push(get(&format!("/u/{user}/bad")).header("Authorization", &basic(user, "Secret")));
    }
    let credentials = basic("plain", "secret");
    requests.extend([
        get("/u/second").header("Authorization", &basic("plain", "second")),
        get("/u/nobody").header("Authorization", &basic("nobody", "secret")),
        get("/u/none"),
        get("/u/nocolon").header(
            "Authorization",
            &format!("Basic {}", &basic("plain", "x")[6..10]),
        ),
        get("/u/emptyuser").header("Authorization", &basic("", "secret")),
        get("/u/badb64").header("Authorization", "Basic !!!!"),
        get("/u/bearer").header("Authorization", "Bearer abc"),
        get("/u/lower").header("Authorization", &format!("basic    {}", &credentials[6..])),
        get("/open/x"),
        get("/open/x").header("Authorization", &credentials),
        get("/realm/x").host("example.test"),
        get("/missing/x").header("Authorization", &credentials),
        get("/missing/x"),
        get("/any/x").from("127.0.0.2"),
        get("/any/x").from("127.0.0.3"),
        get("/any/x")
            .from("127.0.0.3")
            .header("Authorization", &credentials),
        // No rule holds for 127.0.0.3: the rules decline, which is not a yes.
        get("/anyallow/x").from("127.0.0.3"),
        get("/anyallow/x").from("127.0.0.2"),
        get("/all/x").from("127.0.0.2"),
        get("/all/x")
            .from("127.0.0.2")
            .header("Authorization", &credentials),
        get("/all/x")
            .from("127.0.0.3")
            .header("Authorization", &credentials),
        get("/public/x").header("Authorization", &credentials),
    ]);
    Scenario::new("auth_basic")
        .backends(1)
        .config(&config)
        .compare_headers(&["WWW-Authenticate"])
        .send_all(requests)
        .run();
}

/// auth_request: the subrequest's request line and headers at the auth server (a URI part,
/// none, `$request_uri`, `$request_method`, the client's Content-Length with and without
/// `proxy_set_header Content-Length ""`, the last kept waiting for the body that never
/// comes), what each status of the auth server means (2xx in,
/// 401 with its challenge, 403, 500 and 302 a 500), `auth_request_set` from the subrequest's
/// `$upstream_http_*` and `$upstream_status`, a `set` inside the subrequest seen by the request
/// after it, a subrequest answered by `return`, by a file and by a missing file, an auth server
/// that resets, `error_page 401` after it, `satisfy any` with `allow`/`deny` and with
/// `auth_basic`, `auth_request off` inside, and a keep-alive pool to the auth server.
#[test]
fn auth_request() {
    let dir = htpasswd();
    let root = dir.path.display().to_string();
    std::fs::create_dir_all(dir.path.join("files")).expect("files dir");
    std::fs::write(dir.path.join("files/ok.txt"), "ok\n").expect("file");
    let file = dir.path.join("htpasswd").display().to_string();
    let config = format!(
        "upstream app {{ server {{b0}}; }}
         upstream auth {{ server {{b1}}; keepalive 4; }}
         upstream broken {{ server {{b2}}; }}
         server {{
             listen {{listen}};
             location / {{
                 auth_request /auth;
                 auth_request_set $user $upstream_http_x_user;
                 auth_request_set $auth_status $upstream_status;
                 proxy_set_header X-User $user;
                 proxy_set_header X-Auth-Status $auth_status;
                 proxy_pass http://app;
                 location /open/ {{
                     auth_request off;
                     proxy_pass http://app;
                 }}
             }}
             location = /auth {{
                 internal;
                 proxy_pass http://auth/check;
                 proxy_http_version 1.1;
                 proxy_set_header Connection \"\";
                 proxy_pass_request_body off;
                 proxy_set_header Content-Length \"\";
                 proxy_set_header X-Original-URI $request_uri;
                 proxy_set_header X-Original-Method $request_method;
                 proxy_set_header X-Sub-Uri $uri;
             }}
             location /raw/ {{
                 auth_request /auth-raw;
                 proxy_pass http://app;
             }}
             location = /auth-raw {{
                 internal;
                 proxy_pass http://auth;
             }}
             location /page/ {{
                 auth_request /auth;
                 error_page 401 = /login;
                 proxy_pass http://app;
             }}
             location = /login {{
                 return 200 \"login here\\n\";
             }}
             location /any/ {{
                 satisfy any;
                 allow 127.0.0.2;
                 deny all;
                 auth_request /auth;
                 proxy_pass http://app;
             }}
             location /both/ {{
                 satisfy any;
                 auth_basic \"both\";
                 auth_basic_user_file {file};
                 auth_request /auth;
                 proxy_pass http://app;
             }}
             location /ret/ {{
                 auth_request /ret-auth;
                 proxy_pass http://app;
             }}
             location = /ret-auth {{
                 internal;
                 return 204;
             }}
             location /deny/ {{
                 auth_request /deny-auth;
                 proxy_pass http://app;
             }}
             location = /deny-auth {{
                 internal;
                 return 403;
             }}
             location /set/ {{
                 auth_request /set-auth;
                 proxy_set_header X-Set $from_sub;
                 proxy_pass http://app;
             }}
             location = /set-auth {{
                 internal;
                 set $from_sub \"set for $uri\";
                 return 200;
             }}
             location /file/ {{
                 auth_request /files/ok.txt;
                 proxy_pass http://app;
             }}
             location /nofile/ {{
                 auth_request /files/none.txt;
                 proxy_pass http://app;
             }}
             location /files/ {{
                 internal;
                 root {root};
             }}
             location /rawpost/ {{
                 auth_request /auth-wait;
                 proxy_pass http://app;
             }}
             location = /auth-wait {{
                 internal;
                 proxy_pass http://auth;
                 proxy_read_timeout 1s;
             }}
             location /down/ {{
                 auth_request /down-auth;
                 proxy_pass http://app;
             }}
             location = /down-auth {{
                 internal;
                 proxy_pass http://broken;
             }}
         }}"
    );
    let user = "X-Harness-Headers";
    let challenge = "WWW-Authenticate: Bearer realm=\"app\"|X-User: carol";
    let requests = vec![
        // Each of these makes one subrequest to the auth server (b1), in this order.
        get("/a/1?x=1").header(user, "X-User: alice"),
        get("/a/2").header(user, challenge),
        get("/a/3"),
        get("/a/4"),
        get("/a/5"),
        post("/a/6", "hello").header(user, "X-User: bob"),
        get("/raw/7"),
        post("/raw/8", ""),
        get("/page/9").header(user, challenge),
        get("/any/10").from("127.0.0.3"),
        get("/both/11"),
        get("/both/12")
            .header("Authorization", &basic("plain", "wrong"))
            .header(user, challenge),
        get("/a/13").method("HEAD"),
        // These make none, or none to b1.
        get("/any/14").from("127.0.0.2"),
        get("/both/15").header("Authorization", &basic("plain", "secret")),
        get("/open/16"),
        get("/ret/17"),
        get("/deny/18"),
        get("/set/19"),
        get("/file/20"),
        get("/nofile/21"),
        get("/down/22"),
        get("/files/ok.txt"),
        // The client's Content-Length goes with the subrequest, but no body: the auth server
        // waits for it until proxy_read_timeout, and the 504 is a 500.
        post("/rawpost/24", "hello"),
        // Through Pingora's session (the others take the fast path): b1's 15th to 19th.
        on_pingora_session(get("/a/25").header(user, "X-User: dave")),
        on_pingora_session(get("/a/26").header(user, challenge)),
        on_pingora_session(get("/a/27")),
        on_pingora_session(get("/any/28").from("127.0.0.3")),
        on_pingora_session(get("/raw/29")),
        on_pingora_session(get("/set/30")),
        on_pingora_session(get("/ret/31")),
        on_pingora_session(get("/deny/32")),
    ];
    Scenario::new("auth_request")
        .backends(3)
        .plan(
            1,
            Plan::ok()
                .on(2, Status(401))
                .on(3, Status(403))
                .on(4, Status(500))
                .on(5, Status(302))
                .on(9, Status(401))
                .on(11, Status(401))
                .on(12, Status(401))
                .on(16, Status(401))
                .on(17, Status(403)),
        )
        .plan(2, Plan::always(Reset))
        .config(&config)
        .compare_headers(&["WWW-Authenticate", "X-User"])
        .send_all(requests)
        .run();
}

/// auth_request as oauth2-proxy's guide sets it up: the user, email and cookie the auth server
/// names passed on (`auth_request_set`, `proxy_set_header`, `add_header Set-Cookie`), a 401
/// sent to the sign-in page by `error_page 401 =` (with a chunked body the refusal left unread),
/// and the `/oauth2/` pages proxied as they are; the auth server answers 202 as oauth2-proxy
/// does.
#[test]
fn auth_request_oauth2_proxy_setup() {
    let user = "X-Harness-Headers";
    let signed_in =
        "X-Auth-Request-User: alice|X-Auth-Request-Email: alice@example.test|Set-Cookie: _oauth2=abc";
    Scenario::new("auth_request as oauth2-proxy sets it up")
        .backends(2)
        // b1's 2nd and 7th requests are the subrequests of the signed-out clients (the 3rd
        // and 8th their sign-in pages).
        .plan(
            1,
            Plan::always(Status(202))
                .on(2, Status(401))
                .on(7, Status(401)),
        )
        .config(
            "upstream app { server {b0}; }
             upstream oauth { server {b1}; }
             server {
                 listen {listen};
                 location /oauth2/ {
                     proxy_pass http://oauth;
                     proxy_set_header Host $host;
                     proxy_set_header X-Real-IP $remote_addr;
                     proxy_set_header X-Auth-Request-Redirect $request_uri;
                 }
                 location = /oauth2/auth {
                     proxy_pass http://oauth;
                     proxy_set_header Host $host;
                     proxy_set_header X-Real-IP $remote_addr;
                     proxy_set_header X-Forwarded-Uri $request_uri;
                     proxy_set_header Content-Length \"\";
                     proxy_pass_request_body off;
                 }
                 location / {
                     auth_request /oauth2/auth;
                     error_page 401 = /oauth2/sign_in;
                     auth_request_set $user $upstream_http_x_auth_request_user;
                     auth_request_set $email $upstream_http_x_auth_request_email;
                     proxy_set_header X-User $user;
                     proxy_set_header X-Email $email;
                     auth_request_set $auth_cookie $upstream_http_set_cookie;
                     add_header Set-Cookie $auth_cookie;
                     proxy_pass http://app;
                 }
             }",
        )
        .compare_headers(&["Set-Cookie", "X-Auth-Request-User"])
        .send_all([
            get("/").header(user, signed_in),
            get("/private?page=2"),
            get("/oauth2/start?rd=%2Fprivate"),
            post("/form", "a=1").header(user, signed_in),
            on_pingora_session(get("/p/1").header(user, signed_in)),
            // Sent on to the sign-in page as a GET, with the body the refusal left unread.
            on_pingora_session(get("/p/2")),
        ])
        .run();
}

/// auth_request as Authelia's guide sets it up: the user and groups passed on, and a 401 turned
/// into a redirect to the portal by `error_page 401 =302` with a URL made of an
/// `auth_request_set` variable.
#[test]
fn auth_request_authelia_setup() {
    let user = "X-Harness-Headers";
    let signed_in = "Remote-User: alice|Remote-Groups: admins,dev";
    Scenario::new("auth_request as Authelia sets it up")
        .backends(2)
        // b1's 2nd and 4th requests are the subrequests of the signed-out clients.
        .plan(1, Plan::ok().on(2, Status(401)).on(4, Status(401)))
        .config(
            "upstream app { server {b0}; }
             upstream authelia { server {b1}; }
             server {
                 listen {listen};
                 location /authelia {
                     internal;
                     proxy_pass http://authelia/api/verify;
                     proxy_pass_request_body off;
                     proxy_set_header Content-Length \"\";
                     proxy_set_header X-Original-URL $scheme://$http_host$request_uri;
                     proxy_set_header X-Forwarded-Method $request_method;
                 }
                 location / {
                     auth_request /authelia;
                     auth_request_set $target_url $scheme://$http_host$request_uri;
                     auth_request_set $user $upstream_http_remote_user;
                     auth_request_set $groups $upstream_http_remote_groups;
                     proxy_set_header Remote-User $user;
                     proxy_set_header Remote-Groups $groups;
                     error_page 401 =302 https://auth.example.test/?rd=$target_url;
                     proxy_pass http://app;
                 }
             }",
        )
        .compare_headers(&["Location", "Remote-User"])
        .send_all([
            get("/").host("app.example.test").header(user, signed_in),
            get("/secret?x=1").host("app.example.test"),
            on_pingora_session(get("/p").host("app.example.test").header(user, signed_in)),
            on_pingora_session(get("/q?y=2").host("app.example.test")),
        ])
        .run();
}

/// add_header on the fast path (which now takes such locations): values read from the
/// upstream's response (`$upstream_http_*`, `$upstream_status`), an empty value (no header),
/// a server's headers inherited, and `always` against the statuses nginx adds the others to:
/// an upstream's 503 passed on, a 502 when the server resets, and a 403 from `deny`.
#[test]
fn add_header_on_the_fast_path() {
    Scenario::new("add_header on the fast path")
        .backends(3)
        .plan(1, Plan::always(Status(503)))
        .plan(2, Plan::always(Reset))
        .compare_headers(&[
            "X-From",
            "X-Status",
            "X-Empty",
            "X-Server-Level",
            "X-Always",
            "X-Only-Ok",
        ])
        .config(
            "upstream ok { server {b0}; }
             upstream busy { server {b1}; }
             upstream gone { server {b2}; }
             server {
                 listen {listen};
                 add_header X-Server-Level srv;
                 location / {
                     proxy_pass http://ok;
                     add_header X-From \"backend $upstream_http_x_backend\";
                     add_header X-Status $upstream_status always;
                     add_header X-Empty \"$arg_missing\";
                 }
                 location /inherit/ {
                     proxy_pass http://ok;
                 }
                 location /busy/ {
                     proxy_pass http://busy;
                     add_header X-Always yes always;
                     add_header X-Only-Ok yes;
                 }
                 location /gone/ {
                     proxy_pass http://gone;
                     add_header X-Always yes always;
                     add_header X-Only-Ok yes;
                 }
                 location /refused/ {
                     deny all;
                     proxy_pass http://ok;
                     add_header X-Always yes always;
                     add_header X-Only-Ok yes;
                 }
             }",
        )
        .send_all(
            [
                "/a",
                "/inherit/b",
                "/busy/c",
                "/gone/d",
                "/refused/e",
                "/a?x=1",
            ]
            .map(get),
        )
        .send(get("/a").method("HEAD"))
        .run();
}

/// expires: a time (Expires that far after the response's Date, `max-age`), a negative one
/// (`no-cache`), 0, `epoch`, `max`, `modified` without a Last-Modified, a value from a map on
/// the query and one from a map on `$sent_http_content_type` (h5bp's idiom), `off` and a value
/// that does not parse (nothing added), a server's setting inherited, the statuses it applies
/// to (a passed-on 404 gets nothing) and responses the appliance makes itself (`return` of a
/// text, of a redirect, of a 404).
#[test]
fn expires() {
    Scenario::new("expires")
        .backends(2)
        .plan(1, Plan::always(Status(404)))
        .compare_headers(&["Expires", "Cache-Control"])
        .config(
            "upstream app { server {b0}; }
             upstream missing { server {b1}; }
             map $arg_e $by_query { default off; hour 1h; day +1d; epoch epoch; neg -30s; bad soon; }
             map $sent_http_content_type $by_type { default off; ~text/ 1M; }
             server {
                 listen {listen};
                 expires 2h;
                 location /inherit/ { proxy_pass http://app; }
                 location /hour/ { expires 1h; proxy_pass http://app; }
                 location /neg/ { expires -1; proxy_pass http://app; }
                 location /zero/ { expires 0; proxy_pass http://app; }
                 location /epoch/ { expires epoch; proxy_pass http://app; }
                 location /max/ { expires max; proxy_pass http://app; }
                 location /modified/ { expires modified 1h; proxy_pass http://app; }
                 location /off/ { expires off; proxy_pass http://app; }
                 location /query/ { expires $by_query; proxy_pass http://app; }
                 location /type/ { expires $by_type; proxy_pass http://app; }
                 location /missing/ { expires 1h; proxy_pass http://missing; }
                 location /text/ { expires 1h; return 200 \"text\"; }
                 location /redirect/ { expires 1h; return 302 /elsewhere; }
                 location /gone/ { expires 1h; return 404; }
             }",
        )
        .send_all(
            [
                "/inherit/a",
                "/hour/a",
                "/neg/a",
                "/zero/a",
                "/epoch/a",
                "/max/a",
                "/modified/a",
                "/off/a",
                "/query/a?e=hour",
                "/query/a?e=day",
                "/query/a?e=epoch",
                "/query/a?e=neg",
                "/query/a?e=bad",
                "/query/a",
                "/type/a",
                "/missing/a",
                "/text/a",
                "/redirect/a",
                "/gone/a",
            ]
            .map(get),
        )
        .send(get("/hour/a").method("HEAD"))
        .run();
}

/// add_header values from maps on `$sent_http_content_type`, as h5bp sets its security headers
/// (`X-Frame-Options DENY` for HTML documents only): the upstream's content type decides, on
/// the fast path and through Pingora's session (a chunked POST), and a page the proxy makes
/// itself (text/html) matches no key here.
#[test]
fn add_header_by_the_response_content_type() {
    Scenario::new("add_header by the response's content type")
        .backends(1)
        .compare_headers(&["X-Frame-Options", "X-Type"])
        .config(
            "upstream app { server {b0}; }
             map $sent_http_content_type $x_frame_options { ~*text/plain DENY; }
             server {
                 listen {listen};
                 add_header X-Frame-Options $x_frame_options always;
                 add_header X-Type \"[$sent_http_content_type]\" always;
                 location / { proxy_pass http://app; }
                 location /gone/ { return 404; }
             }",
        )
        .send(get("/a"))
        .send(
            get("/b")
                .method("POST")
                .header("Transfer-Encoding", "chunked")
                .raw_body("1\r\nx\r\n0\r\n\r\n"),
        )
        .send(get("/gone/x"))
        .run();
}

/// The config of [`error_page`] (`{file}`: an htpasswd file).
const ERROR_PAGE_CONFIG: &str = "upstream app { server {b0}; }
             upstream spare { server {b1}; }
             upstream gone { server {b2}; }
             server {
                 listen {listen};
                 location / { proxy_pass http://gone; error_page 502 504 = @spare; }
                 location /keep/ { proxy_pass http://gone; error_page 502 @spare; }
                 location /code/ { proxy_pass http://gone; error_page 502 =203 @spare; }
                 location @spare {
                     proxy_pass http://spare;
                     add_header X-Page spare;
                     add_header X-Tries \"$upstream_addr [$upstream_status]\" always;
                 }
                 location /intercept/ {
                     proxy_pass http://app;
                     proxy_intercept_errors on;
                     error_page 404 = /fallback/;
                 }
                 location /passed/ { proxy_pass http://app; error_page 404 = /fallback/; }
                 location /fallback/ { proxy_pass http://spare; }
                 location /redirect/ {
                     proxy_pass http://gone;
                     error_page 502 https://status.example.com/down;
                 }
                 location /moved/ {
                     proxy_pass http://gone;
                     error_page 502 =301 https://status.example.com/;
                 }
                 location /text/ { proxy_pass http://gone; error_page 502 @text; }
                 location @text { return 200 \"maintenance\\n\"; }
                 location /deny/ { deny all; error_page 403 = @spare; }
                 location /args/ { deny all; error_page 403 /fallback/?from=deny; }
                 location /hidden/ { internal; proxy_pass http://spare; }
                 location /to-hidden/ { return 404; error_page 404 =200 /hidden/page; }
                 location /twice/ { proxy_pass http://gone; error_page 502 @gone; }
                 location @gone { proxy_pass http://gone; error_page 502 = @spare; }
                 location /recursive/ {
                     recursive_error_pages on;
                     proxy_pass http://gone;
                     error_page 502 @again;
                 }
                 location @again {
                     recursive_error_pages on;
                     proxy_pass http://gone;
                     error_page 502 = @spare;
                 }
                 location /login/ {
                     auth_basic \"staff\";
                     auth_basic_user_file {file};
                     error_page 401 /fallback/;
                 }
                 location /missing/ { proxy_pass http://gone; error_page 502 @nowhere; }
                 location /slow/ {
                     proxy_read_timeout 1s;
                     proxy_pass http://{b3};
                     error_page 504 = @spare;
                 }
             }";

/// error_page as the seed's fallback pools use it: a dead pool's 502 answered by a named
/// location on another pool (with the status kept, replaced by the target's, or set), an
/// upstream 404 taken by `proxy_intercept_errors` and sent to another URI as GET (HEAD stays
/// HEAD, a POST becomes GET), redirects, a `return` in the target, the appliance's own 403
/// and 404 answered by pages, a timeout's 504, `internal` locations, and a second error with
/// and without `recursive_error_pages`.
#[test]
fn error_page() {
    let users = htpasswd();
    let file = users.path.join("htpasswd").display().to_string();
    let config = ERROR_PAGE_CONFIG.replace("{file}", &file);
    Scenario::new("error_page")
        .backends(4)
        .plan(0, Plan::always(Status(404)))
        .plan(2, Plan::always(Reset))
        .plan(3, Plan::always(Hang))
        .compare_headers(&["X-Page", "X-Tries", "WWW-Authenticate"])
        .config(&config)
        .send_all(
            [
                "/a?x=1",
                "/keep/a",
                "/code/a",
                "/intercept/a?x=1",
                "/passed/a",
                "/redirect/a",
                "/moved/a",
                "/text/a",
                "/deny/a",
                "/args/a",
                "/hidden/a",
                "/to-hidden/a",
                "/twice/a",
                "/recursive/a",
                "/missing/a",
                "/slow/a",
                "/login/a",
            ]
            .map(get),
        )
        .send(get("/intercept/head").method("HEAD"))
        .send(post("/intercept/form", "a=1"))
        .send(post("/deny/form", "a=2"))
        .send(post("/a/form", "a=3"))
        .run();
}

/// A docroot for the static-file scenarios: files with a fixed modification time, a
/// directory with an index and one without.
fn docroot() -> support::TempDir {
    let dir = support::TempDir::new("docroot");
    let files = [
        ("index.html", "<h1>home</h1>\n"),
        ("a.css", "body { color: red; }\n"),
        ("50x.html", "<p>we are down</p>\n"),
        ("dir/index.html", "<h1>dir</h1>\n"),
        ("sub/x.txt", "x\n"),
        ("assets/app.js", "console.log(1);\n"),
        ("big.bin", &"0123456789".repeat(10_000)),
    ];
    for (name, text) in files {
        write_dated(&dir.path.join(name), text.as_bytes());
    }
    dir
}

/// Writes a file (and its directories) with the fixed mtime of the file tests, so that its
/// Last-Modified and ETag are the same for nginx's run and the appliance's.
fn write_dated(path: &std::path::Path, bytes: &[u8]) {
    let when = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
    std::fs::create_dir_all(path.parent().expect("parent")).expect("dir");
    std::fs::write(path, bytes).expect("file");
    let file = std::fs::File::options()
        .write(true)
        .open(path)
        .expect("open");
    file.set_modified(when).expect("mtime");
}

/// Files as nginx's static, index and try_files modules serve them: index files, a directory
/// without its slash (301) and without an index (403), missing files, methods, HEAD,
/// conditional requests, ranges, `alias` with `expires` and `add_header`, try_files falling
/// back to a URI, a named location and a code, and an error page read from a file, on the fast
/// path and through Pingora's session.
#[test]
fn static_files() {
    let dir = docroot();
    let root = dir.path.display().to_string();
    let config = format!(
        "upstream app {{ server {{b0}}; }}
         upstream gone {{ server {{b1}}; }}
         server {{
             listen {{listen}};
             root {root};
             error_page 502 /50x.html;
             location / {{ try_files $uri $uri/ =404; }}
             location /app/ {{ proxy_pass http://gone; }}
             location /intercepted/ {{
                 proxy_pass http://gone;
                 proxy_intercept_errors on;
             }}
             location = /50x.html {{ }}
             location /static/ {{
                 alias {root}/assets/;
                 expires 1h;
                 add_header X-Static yes;
                 add_header X-File \"$document_root $request_filename\";
             }}
             location /spa/ {{ try_files $uri /index.html; }}
             location /named/ {{ try_files $uri @backend; }}
             location @backend {{ proxy_pass http://app; }}
             location /plain/ {{ root {root}/sub; }}
             location ~ ^/img/(.+)$ {{ alias {root}/assets/$1; }}
             location ~ ^/re/(.*)$ {{ alias {root}/assets/; try_files $1 =404; }}
             location /loop/ {{ try_files /none.txt /loop/again; }}
             location /both/ {{ try_files /a.css @backend; proxy_pass http://app; }}
             location /neither/ {{ try_files /none.css =404; proxy_pass http://app; }}
             location /nowhere/ {{ root /nonexistent; }}
             location /typed/ {{
                 alias {root}/assets/;
                 add_header X-Type $sent_http_content_type;
             }}
             location /denied/ {{ deny all; }}
             location /no-etag/ {{ alias {root}/; etag off; }}
             location /before/ {{ alias {root}/; if_modified_since before; }}
             location /ims-off/ {{ alias {root}/; if_modified_since off; }}
         }}"
    );
    let etag = "\"6553f100-15\"";
    let date = "Tue, 14 Nov 2023 22:13:20 GMT";
    Scenario::new("static files")
        .backends(2)
        .plan(1, Plan::always(Reset))
        .compare_headers(&[
            "Last-Modified",
            "ETag",
            "Accept-Ranges",
            "Content-Range",
            "Expires",
            "Cache-Control",
            "X-Static",
            "X-File",
            "X-Type",
        ])
        .config(&config)
        .send_all(
            [
                "/",
                "/index.html",
                "/a.css",
                "/a.css?x=1",
                "/dir",
                "/dir?a=b",
                "/dir/",
                "/sub/",
                "/nope",
                "/app/x",
                "/intercepted/x",
                "/static/app.js",
                "/static/none.js",
                "/spa/deep/link",
                "/named/x?q=1",
                "/plain/x.txt",
                "/img/app.js",
                "/img/none.js",
                "/re/app.js",
                "/re/none.js",
                "/loop/x",
                "/both/x",
                "/neither/x",
                "/nowhere/x",
                "/50x.html",
                "/typed/app.js",
                "/denied/x",
            ]
            .map(get),
        )
        .send(get("/a.css").method("HEAD"))
        .send(get("/").method("HEAD"))
        .send(get("/").header("If-None-Match", "\"6553f100-e\""))
        .send(get("/typed/app.js").header("If-Modified-Since", date))
        // etag off: no ETag, and only `*` matches one.
        .send(get("/no-etag/a.css"))
        .send(get("/no-etag/a.css").header("If-None-Match", etag))
        .send(get("/no-etag/a.css").header("If-None-Match", "*"))
        .send(get("/no-etag/a.css").header("If-Match", etag))
        .send(get("/no-etag/a.css").header("If-Match", "*"))
        .send(get("/no-etag/a.css").header("If-Modified-Since", date))
        .send(
            get("/no-etag/big.bin")
                .header("Range", "bytes=0-9")
                .header("If-Range", "\"6553f100-186a0\""),
        )
        .send(
            get("/no-etag/big.bin")
                .header("Range", "bytes=0-9")
                .header("If-Range", date),
        )
        .send(get("/no-etag/").header("If-None-Match", "*"))
        // if_modified_since before and off.
        .send(get("/before/a.css").header("If-Modified-Since", date))
        .send(get("/before/a.css").header("If-Modified-Since", "Wed, 15 Nov 2023 00:00:00 GMT"))
        .send(get("/before/a.css").header("If-Modified-Since", "Mon, 13 Nov 2023 00:00:00 GMT"))
        .send(get("/before/a.css").header("If-Modified-Since", "yesterday"))
        .send(get("/ims-off/a.css").header("If-Modified-Since", date))
        .send(
            get("/ims-off/a.css")
                .header("If-Modified-Since", date)
                .header("If-None-Match", etag),
        )
        .send(post("/a.css", "a=1"))
        .send(post("/nope", "a=1"))
        .send(get("/a.css").method("PUT"))
        .send(get("/a.css").header("If-Modified-Since", date))
        .send(get("/a.css").header("If-Modified-Since", "Tue, 14 Nov 2023 22:13:21 GMT"))
        .send(get("/a.css").header("If-None-Match", etag))
        .send(get("/a.css").header("If-None-Match", "\"other\""))
        .send(get("/a.css").header("If-Match", "\"other\""))
        .send(get("/a.css").header("If-Unmodified-Since", "Mon, 13 Nov 2023 00:00:00 GMT"))
        .send(get("/big.bin").header("Range", "bytes=0-9"))
        .send(get("/big.bin").header("Range", "bytes=-5"))
        .send(get("/big.bin").header("Range", "bytes=99990-"))
        .send(get("/big.bin").header("Range", "bytes=100000-"))
        .send(
            get("/big.bin")
                .header("Range", "bytes=0-1,5-6")
                .method("HEAD"),
        )
        .send(
            get("/big.bin")
                .header("Range", "bytes=0-9")
                .header("If-Range", "\"stale\""),
        )
        .send(get("/big.bin"))
        .run();
}

/// Files sent with `sendfile on`, in calls of at most `sendfile_max_chunk`: a file of many
/// chunks whole, ranges that start and end inside chunks, a suffix, HEAD, a 304, a small file
/// (one segment with its head), an empty one, a location that turns sendfile off again and
/// an `if` that turns it on.
/// Each 16-byte line of the big file names its own offset, so a byte sent from the wrong place
/// shows.
#[test]
fn sendfile_files() {
    let dir = support::TempDir::new("sendfile");
    let lines: String = (0..65_536).map(|i| format!("{:015}\n", i * 16)).collect();
    write_dated(&dir.path.join("big.txt"), lines.as_bytes());
    write_dated(&dir.path.join("small.txt"), b"small\n");
    write_dated(&dir.path.join("empty.txt"), b"");
    let root = dir.path.display().to_string();
    let config = format!(
        "server {{
             listen {{listen}};
             root {root};
             sendfile on;
             sendfile_max_chunk 64k;
             location /off/ {{ alias {root}/; sendfile off; }}
             location /unlimited/ {{ alias {root}/; sendfile_max_chunk 0; }}
             location /if/ {{
                 alias {root}/;
                 sendfile off;
                 if ($arg_sendfile) {{ sendfile on; }}
             }}
         }}"
    );
    let date = "Tue, 14 Nov 2023 22:13:20 GMT";
    Scenario::new("sendfile")
        .compare_headers(&["Content-Length", "Content-Range", "ETag"])
        .config(&config)
        .send_all(
            [
                "/big.txt",
                "/small.txt",
                "/empty.txt",
                "/off/big.txt",
                "/unlimited/big.txt",
                "/if/big.txt",
                "/if/big.txt?sendfile=1",
            ]
            .map(get),
        )
        .send(get("/big.txt").header("Range", "bytes=65530-200009"))
        .send(get("/big.txt").header("Range", "bytes=-100"))
        .send(get("/big.txt").header("Range", "bytes=1048000-"))
        .send(get("/off/big.txt").header("Range", "bytes=70000-70015"))
        .send(get("/big.txt").method("HEAD"))
        .send(get("/big.txt").header("If-Modified-Since", date))
        .run();
}

// ---------------------------------------------------------------------------------------------
// charset

/// nginx's charset filter: `charset` names a charset in the Content-Type of responses of
/// `charset_types` (by default text/html, text/plain and four more) that name none: proxied
/// ones, on the fast path and through Pingora's session, files (whole, a range, a 304), a
/// `return`'s text, nginx's own pages and an error page read from a file. A response that names
/// its own charset keeps it, unless `override_charset` is on and it names the same one (another
/// would need recoding); 301 and 302 never get one; `charset off`, `charset` in `if`, a
/// `source_charset` equal to `charset`, one spelling per charset (the first the config uses).
/// `expires` from a `map` on `$sent_http_content_type` sees the type before the charset is
/// added, as nginx's headers filter does.
#[test]
fn charset() {
    let dir = support::TempDir::new("charset-docroot");
    write_dated(&dir.path.join("index.html"), b"<p>hello</p>\n");
    write_dated(&dir.path.join("style.css"), b"p { color: red }\n");
    write_dated(&dir.path.join("data.json"), b"{}\n");
    write_dated(&dir.path.join("50x.html"), b"<p>down</p>\n");
    let root = dir.path.display().to_string();
    let config = format!(
        "upstream app {{ server {{b0}}; }}
         upstream dead {{ server {{b1}}; }}
         map $sent_http_content_type $expires {{ default off; text/html epoch; }}
         charset UTF-8;
         server {{
             listen {{listen}};
             root {root};
             charset utf-8;
             error_page 502 /50x.html;
             location = /50x.html {{ }}
             location / {{ proxy_pass http://app; }}
             location /dead/ {{ proxy_pass http://dead; }}
             location /files/ {{ alias {root}/; expires $expires; }}
             location /css/ {{ alias {root}/; charset_types text/css; }}
             location /any/ {{ charset_types *; proxy_pass http://app; }}
             location /override/ {{ override_charset on; proxy_pass http://app; }}
             location /off/ {{ charset off; proxy_pass http://app; }}
             location /if/ {{ charset off; if ($arg_cs) {{ charset koi8-r; }} proxy_pass http://app; }}
             location /source/ {{ source_charset utf-8; proxy_pass http://app; }}
             location /text/ {{ return 200 \"text\\n\"; }}
             location /html/ {{ default_type text/html; return 200 \"<p>\\n\"; }}
             location /moved/ {{ return 301 /x; }}
             location /found/ {{ return 302 /x; }}
             location /temporary/ {{ return 307 /x; }}
             location /missing/ {{ return 404; }}
         }}"
    );
    let typed = |path: &str, content_type: &str| get(path).header(TYPE_HEADER, content_type);
    let session = on_pingora_session;
    let date = "Tue, 14 Nov 2023 22:13:20 GMT";
    Scenario::new("charset")
        .backends(2)
        .refusing(1)
        .compare_headers(&["Content-Type", "Expires", "Cache-Control", "Content-Range"])
        .config(&config)
        .send_all([
            get("/a"),
            typed("/a", "text/html"),
            typed("/a", "Text/HTML"),
            typed("/a", "text/css"),
            typed("/a", "application/json"),
            typed("/a", "text/html; charset=iso-8859-1"),
            typed("/a", "text/html; q=1"),
            typed("/override/a", "text/html; charset=UTF-8"),
            typed("/override/a", "text/html;charset=\"utf-8\""),
            typed("/override/a", "text/html; charset=iso-8859-1"),
            typed("/override/a", "application/json; charset=utf-8"),
            typed("/any/a", "image/png"),
            typed("/off/a", "text/html"),
            typed("/if/a", "text/html"),
            typed("/if/a?cs=1", "text/html"),
            typed("/source/a", "text/html"),
            typed("/a", "text/html").header(REDIRECT_HEADER, "/elsewhere"),
            typed("/override/a", "text/html; charset=utf-8").header(REDIRECT_HEADER, "/b"),
            session(typed("/a", "text/html")),
            session(typed("/override/a", "text/html; charset=UTF-8")),
            session(typed("/a", "text/html").header(REDIRECT_HEADER, "/elsewhere")),
            get("/dead/a"),
            session(get("/dead/a")),
            get("/files/index.html"),
            get("/files/index.html").method("HEAD"),
            get("/files/index.html").header("Range", "bytes=0-3"),
            get("/files/index.html").header("If-Modified-Since", date),
            get("/files/style.css"),
            get("/files/data.json"),
            get("/css/style.css"),
            get("/css/index.html"),
            session(get("/files/index.html")),
            get("/text/"),
            get("/html/"),
            get("/moved/"),
            get("/found/"),
            get("/temporary/"),
            get("/missing/"),
            get("/files/nothing-here"),
        ])
        .run();
}

// ---------------------------------------------------------------------------------------------
// resolver

/// nginx's `resolver` for `proxy_pass` with variables, against a real DNS server (dnsmasq on
/// loopback): a name it knows is proxied to its address (in any case), one it does not know
/// gets 502, and so does any name where no `resolver` applies; an answer is kept for `valid=`
/// and then asked again, so a record that moves to an address where nothing listens gives 502
/// until it moves back. `ipv6=off` in one server, nginx's A and AAAA in the other.
#[test]
fn resolver() {
    let dns = std::sync::Arc::new(support::dns::DnsServer::start());
    let port = dns.port;
    let config = format!(
        "server {{
             listen {{listen}};
             resolver 127.0.0.1:{port} valid=1s ipv6=off;
             resolver_timeout 5s;
             location / {{ set $target app.test:{{b0port}}; proxy_pass http://$target; }}
             location /upper/ {{ set $target APP.TEST:{{b0port}}; proxy_pass http://$target/; }}
             location /missing/ {{ set $target nowhere.test:{{b0port}}; proxy_pass http://$target; }}
             location /pool/ {{ set $target app; proxy_pass http://$target; }}
         }}
         server {{
             listen {{listen1}};
             location / {{ set $target app.test:{{b0port}}; proxy_pass http://$target; }}
             location /dual/ {{
                 resolver 127.0.0.1:{port} valid=1s;
                 set $target app.test:{{b0port}};
                 proxy_pass http://$target;
             }}
         }}
         upstream app {{ server {{b1}}; }}"
    );
    let to = |ip: &'static str| {
        let dns = dns.clone();
        call(move || dns.set("app.test", ip))
    };
    Scenario::new("resolver")
        .backends(2)
        .config(&config)
        .step(to("127.0.0.1"))
        .send_all([
            get("/a"),
            get("/a?x=1"),
            get("/upper/b"),
            get("/missing/a"),
            get("/pool/a"),
            get("/a").on_listener(1),
            get("/dual/a").on_listener(1),
        ])
        // Nothing listens there: refused, 502, once the 1 s answer has expired (nginx counts
        // `valid=` in whole seconds of its cached clock: up to 2 s).
        .step(to("127.0.0.2"))
        .step(pause_ms(2500))
        .send(get("/a"))
        .step(to("127.0.0.1"))
        .step(pause_ms(2500))
        .send(get("/a"))
        .run();
}

// ---------------------------------------------------------------------------------------------
// gzip

/// nginx's gzip filter: which responses are compressed (type, length, status, an upstream's
/// own Content-Encoding, HEAD), what a compressed one loses (Content-Length, Accept-Ranges, a
/// strong ETag) and gains (Content-Encoding, chunked), `gzip_vary` on responses that could be
/// compressed, Accept-Encoding's `q`, `gzip_http_version`, `gzip_proxied` for requests with
/// Via, `gzip_disable`, and pages and files the proxy sends itself, on the fast path and
/// through Pingora's session. Bodies are compared decompressed (nginx's zlib and the
/// appliance's zlib-ng write different bytes).
#[test]
fn gzip() {
    let dir = support::TempDir::new("gzip-docroot");
    let page = format!(
        "<html><body>{}</body></html>\n",
        "<p>compress me</p>".repeat(20)
    );
    std::fs::write(dir.path.join("page.html"), &page).expect("page");
    std::fs::write(dir.path.join("small.html"), "<b>hi</b>\n").expect("small");
    let root = dir.path.display().to_string();
    let config = format!(
        "upstream app {{ server {{b0}}; }}
         server {{
             listen {{listen}};
             gzip on;
             gzip_min_length 50;
             gzip_types text/css application/json;
             location / {{ proxy_pass http://app; }}
             location /vary/ {{ gzip_vary on; proxy_pass http://app; }}
             location /off/ {{ gzip off; gzip_vary on; proxy_pass http://app; }}
             location /any/ {{ gzip_types *; proxy_pass http://app; }}
             location /proxied/ {{ gzip_proxied expired no-cache auth; proxy_pass http://app; }}
             location /proxied-any/ {{ gzip_proxied any; proxy_pass http://app; }}
             location /v10/ {{ gzip_http_version 1.0; proxy_pass http://app; }}
             location /disable/ {{ gzip_disable msie6 \"^curl/\"; proxy_pass http://app; }}
             location /level/ {{ gzip_comp_level 9; proxy_pass http://app; }}
             location /text/ {{ default_type text/html; return 200 \"{page}\"; }}
             location /missing/ {{ gzip_vary on; return 404; }}
             location /files/ {{ alias {root}/; gzip_vary on; }}
         }}"
    );
    let html = |path: &str| {
        get(path)
            .header(TYPE_HEADER, "text/html")
            .header(LENGTH_HEADER, "400")
    };
    let gz = |path: &str| html(path).header("Accept-Encoding", "gzip, deflate");
    let typed = |path: &str, content_type: &str, length: &str| {
        get(path)
            .header("Accept-Encoding", "gzip")
            .header(TYPE_HEADER, content_type)
            .header(LENGTH_HEADER, length)
    };
    let via = |path: &str| gz(path).header("Via", "1.1 cache");
    // Through Pingora's session too: both compress.
    let session = on_pingora_session;
    Scenario::new("gzip")
        .backends(1)
        .compare_headers(&[
            "Content-Encoding",
            "Vary",
            "ETag",
            "Accept-Ranges",
            "Content-Length",
            "Transfer-Encoding",
            "Content-Range",
        ])
        .config(&config)
        .send_all([
            gz("/a"),
            html("/a"),
            html("/a").header("Accept-Encoding", "gzip;q=0"),
            html("/a").header("Accept-Encoding", "br;q=1.0, gzip;q=0.5"),
            html("/a").header("Accept-Encoding", "deflate"),
            typed("/a", "text/plain", "400"),
            typed("/a", "application/json; charset=utf-8", "400"),
            typed("/a", "text/css", "49"),
            typed("/a", "text/css", "50"),
            gz("/a").header(CHUNKED_HEADER, "1"),
            gz("/a").header(HEADERS_HEADER, "Content-Encoding: br"),
            gz("/a").header(HEADERS_HEADER, "ETag: \"v1\"|Accept-Ranges: bytes"),
            gz("/a").header(HEADERS_HEADER, "ETag: v1"),
            gz("/a").method("HEAD"),
            html("/vary/a"),
            gz("/vary/a"),
            typed("/vary/a", "text/plain", "400"),
            gz("/off/a"),
            typed("/any/a", "image/png", "400"),
            via("/a"),
            via("/proxied/a"),
            via("/proxied/a").header(HEADERS_HEADER, "Cache-Control: public"),
            via("/proxied/a").header(HEADERS_HEADER, "Cache-Control: max-age=0, no-cache"),
            via("/proxied/a").header(HEADERS_HEADER, "Expires: Thu, 01 Jan 1970 00:00:00 GMT"),
            via("/proxied/a").header(HEADERS_HEADER, "Expires: Fri, 01 Jan 2100 00:00:00 GMT"),
            via("/proxied/a")
                .header(HEADERS_HEADER, "Cache-Control: public")
                .header("Authorization", "Basic eDp5"),
            via("/proxied-any/a"),
            gz("/a").http10(),
            gz("/v10/a").http10(),
            gz("/disable/a").header("User-Agent", "curl/8.0"),
            gz("/disable/a").header(
                "User-Agent",
                "Mozilla/4.0 (compatible; MSIE 6.0; Windows NT 5.1)",
            ),
            gz("/disable/a").header("User-Agent", "Mozilla/5.0"),
            gz("/level/a"),
            get("/text/a").header("Accept-Encoding", "gzip"),
            get("/text/a"),
            // Without gzip, nginx's page and the appliance's differ in length (the server's
            // name), which Content-Length would show.
            get("/missing/a").header("Accept-Encoding", "gzip"),
            get("/missing/a")
                .method("HEAD")
                .header("Accept-Encoding", "gzip"),
            get("/files/page.html").header("Accept-Encoding", "gzip"),
            get("/files/page.html"),
            get("/files/page.html")
                .header("Accept-Encoding", "gzip")
                .header("Range", "bytes=0-9"),
            get("/files/page.html").header("Range", "bytes=0-9"),
            get("/files/small.html").header("Accept-Encoding", "gzip"),
            get("/files/page.html")
                .header("Accept-Encoding", "gzip")
                .method("HEAD"),
            session(gz("/a")),
            session(html("/a")),
            session(gz("/a").header(CHUNKED_HEADER, "1")),
            session(gz("/a").header(HEADERS_HEADER, "ETag: \"v1\"|Accept-Ranges: bytes")),
            session(html("/vary/a")),
            session(gz("/vary/a")),
            session(typed("/a", "text/css", "49")),
        ])
        .run();
}

/// gzip_static as ngx_http_gzip_static_handler serves it: a file's `.gz` beside it, sent with
/// Content-Encoding (and without ranges) to a client that accepts gzip (`on`) or to every
/// client (`always`), `Vary` when gzip_vary is on and the `.gz` exists, the plain file
/// otherwise (which `gzip on` may still compress), conditional requests on the `.gz`.
#[test]
fn gzip_static() {
    use std::io::Write;
    let dir = support::TempDir::new("gzip-static");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
    gz.write_all(b"<p>from the .gz file</p>\n").expect("gzip");
    let gz = gz.finish().expect("gzip");
    // nginx's ETag: the mtime and the size, in hex.
    let gz_etag = format!("\"6553f100-{:x}\"", gz.len());
    let plain = format!("<p>{}</p>\n", "plain file ".repeat(10));
    let files: [(&str, &[u8]); 4] = [
        ("page.html", plain.as_bytes()),
        ("page.html.gz", &gz),
        ("other.html", plain.as_bytes()),
        ("dir.html", plain.as_bytes()),
    ];
    for (name, bytes) in files {
        write_dated(&dir.path.join(name), bytes);
    }
    // A `.gz` that is a directory is passed over.
    std::fs::create_dir_all(dir.path.join("dir.html.gz")).expect("dir");
    let root = dir.path.display().to_string();
    let config = format!(
        "server {{
             listen {{listen}};
             location /on/ {{ alias {root}/; gzip_static on; }}
             location /vary/ {{ alias {root}/; gzip_static on; gzip_vary on; }}
             location /always/ {{ alias {root}/; gzip_static always; }}
             location /both/ {{ alias {root}/; gzip_static on; gzip on; gzip_vary on; }}
             location /off/ {{ alias {root}/; gzip_static off; }}
             location /via/ {{ alias {root}/; gzip_static on; }}
         }}"
    );
    let gz = |path: &str| get(path).header("Accept-Encoding", "gzip");
    Scenario::new("gzip_static")
        .backends(0)
        .compare_headers(&[
            "Content-Encoding",
            "Vary",
            "ETag",
            "Last-Modified",
            "Accept-Ranges",
            "Content-Length",
            "Content-Range",
        ])
        .config(&config)
        .send_all([
            gz("/on/page.html"),
            get("/on/page.html"),
            get("/on/page.html").header("Accept-Encoding", "gzip;q=0"),
            gz("/on/other.html"),
            gz("/on/dir.html"),
            gz("/on/page.html").method("HEAD"),
            gz("/on/page.html").header("Range", "bytes=0-4"),
            get("/on/page.html").header("Range", "bytes=0-4"),
            gz("/on/page.html").header("If-None-Match", &gz_etag),
            gz("/on/page.html").header("If-Modified-Since", "Tue, 14 Nov 2023 22:13:20 GMT"),
            gz("/vary/page.html"),
            get("/vary/page.html"),
            get("/vary/other.html"),
            gz("/always/page.html"),
            get("/always/page.html"),
            gz("/both/page.html"),
            get("/both/page.html"),
            gz("/both/other.html"),
            gz("/off/page.html"),
            gz("/via/page.html").header("Via", "1.1 cache"),
        ])
        .run();
}

/// autoindex as ngx_http_autoindex_module lists a directory: HTML (names escaped, cut at 50
/// bytes, directories first, exact and rounded sizes), XML, JSON and JSONP (with and without a
/// callback, and a refused one), hidden files left out, an index file taking precedence, and
/// what is not listed (POST, a missing directory).
#[test]
fn autoindex() {
    let dir = support::TempDir::new("autoindex");
    let long = format!("{}.txt", "n".repeat(60));
    let files: [(&str, &[u8]); 7] = [
        ("pub/a.txt", b"hello\n"),
        ("pub/b & <c>.html", b"<p>x</p>\n"),
        ("pub/.hidden", b"secret\n"),
        ("pub/sub/x.txt", b"x\n"),
        ("pub/big.bin", &[b'0'; 123_456]),
        ("pub/withindex/index.html", b"<h1>index</h1>\n"),
        ("pub/empty/.keep", b""),
    ];
    for (name, bytes) in files {
        write_dated(&dir.path.join(name), bytes);
    }
    write_dated(&dir.path.join("pub").join(&long), b"long\n");
    // Directories get the fixed mtime too, after their files are in place.
    let when = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
    for sub in ["pub/sub", "pub/withindex", "pub/empty"] {
        let file = std::fs::File::open(dir.path.join(sub)).expect("dir");
        file.set_modified(when).expect("mtime");
    }
    let root = dir.path.display().to_string();
    let config = format!(
        "server {{
             listen {{listen}};
             root {root};
             location /pub/ {{ autoindex on; }}
             location /rounded/ {{ alias {root}/pub/; autoindex on; autoindex_exact_size off; }}
             location /xml/ {{ alias {root}/pub/; autoindex on; autoindex_format xml; }}
             location /json/ {{ alias {root}/pub/; autoindex on; autoindex_format json; }}
             location /jsonp/ {{ alias {root}/pub/; autoindex on; autoindex_format jsonp; }}
             location /off/ {{ alias {root}/pub/; }}
         }}"
    );
    Scenario::new("autoindex")
        .backends(0)
        .compare_headers(&[
            "Content-Type",
            "Last-Modified",
            "ETag",
            "Transfer-Encoding",
            "Connection",
        ])
        .config(&config)
        .send_all([
            get("/pub/"),
            get("/pub/").http10(),
            get("/json/").method("HEAD").http10(),
            get("/pub/sub/"),
            get("/pub/empty/"),
            get("/pub/withindex/"),
            get("/pub/missing/"),
            get("/pub/").method("HEAD"),
            post("/pub/", "a=1"),
            get("/rounded/"),
            get("/xml/"),
            get("/json/"),
            get("/jsonp/?callback=show.list_1"),
            get("/jsonp/"),
            get("/jsonp/?callback=bad-name"),
            get("/off/"),
        ])
        .run();
}
