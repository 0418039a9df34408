//! The end-to-end seed script (tests/data/seed-elb.sh) compiles to the model the data plane is
//! to serve: both listeners on one sticky, health-checked pool of the two instances, the HTTPS
//! one with the uploaded certificate; and `appliance run` serves it: balancing, the LB cookie,
//! TLS with the uploaded certificate, and an instance failing its health check.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration as StdDuration, Instant};

use appliance::compile::{compile_file, Options};
use appliance::config::{Appliance, Balance, HealthProtocol, Sticky, TlsVersion};

/// The seed script in a fresh directory with a self-signed certificate beside it, and an
/// instances file placing the two instances on 127.0.0.1 and 127.0.0.2.
fn seed_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "elb-seed-{}-{}",
        std::process::id(),
        support::free_port()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/seed-elb.sh");
    std::fs::copy(script, dir.join("seed-elb.sh")).unwrap();
    let status = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args(["-subj", "/CN=localhost", "-keyout"])
        .arg(dir.join("seed.key"))
        .arg("-out")
        .arg(dir.join("seed.crt"))
        .stderr(std::process::Stdio::null())
        .status()
        .expect("openssl must be installed (scripts/test-all installs it)");
    assert!(status.success());
    std::fs::write(
        dir.join("instances.txt"),
        "i-0000000000000001 127.0.0.1\ni-0000000000000002 127.0.0.2\n",
    )
    .unwrap();
    dir
}

fn options(dir: &Path) -> Options {
    Options {
        vars: [
            ("HTTP_PORT", "18080"),
            ("HTTPS_PORT", "18443"),
            ("BACKEND_PORT", "19080"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect(),
        instances_file: Some(dir.join("instances.txt")),
        ..Options::default()
    }
}

#[test]
fn seed_script_compiles_to_the_expected_model() {
    let dir = seed_dir();
    let compiled = compile_file(&dir.join("seed-elb.sh"), &options(&dir))
        .unwrap_or_else(|f| panic!("{}", f.diagnostic));
    let model = &compiled.model;

    // One pool: both listeners send to instance port 19080 with the same stickiness.
    assert_eq!(model.http.upstreams.len(), 1);
    let pool = &model.http.upstreams[0];
    assert_eq!(pool.name, "seed-lb-19080");
    assert_eq!(pool.balance, Balance::LeastConn);
    let servers: Vec<&str> = pool.servers.iter().map(|s| s.address.as_str()).collect();
    assert_eq!(servers, ["127.0.0.1:19080", "127.0.0.2:19080"]);
    let check = pool.health_check.as_ref().unwrap();
    assert_eq!(check.target.protocol, HealthProtocol::Http);
    assert_eq!(check.target.port, 19080);
    assert_eq!(check.target.path.as_deref(), Some("/status"));
    assert_eq!(check.interval.get(), StdDuration::from_secs(5));
    assert_eq!(check.timeout.get(), StdDuration::from_secs(2));
    assert_eq!((check.healthy_threshold, check.unhealthy_threshold), (2, 2));
    match pool.sticky.as_ref().unwrap() {
        Sticky::LbCookie {
            cookie, expires, ..
        } => {
            assert_eq!(cookie, "AWSELB");
            assert_eq!(expires.unwrap().get(), StdDuration::from_secs(300));
        }
        other => panic!("not an LB cookie: {other:?}"),
    }

    // Two servers: HTTP on 18080, HTTPS on 18443 with the uploaded certificate.
    assert_eq!(model.http.servers.len(), 2);
    let (http, https) = (&model.http.servers[0], &model.http.servers[1]);
    assert_eq!(http.listen[0].address.to_string(), "0.0.0.0:18080");
    assert!(!http.listen[0].ssl);
    assert_eq!(https.listen[0].address.to_string(), "0.0.0.0:18443");
    assert!(https.listen[0].ssl);
    let cert = &https.tls.certificates.as_ref().unwrap()[0];
    assert_eq!(cert.certificate, dir.join("seed.crt"));
    assert_eq!(cert.key, dir.join("seed.key"));
    // No SSL policy in the script: ELB's default, ELBSecurityPolicy-2016-08.
    assert_eq!(
        https.tls.protocols.as_deref(),
        Some(&[TlsVersion::Tls10, TlsVersion::Tls11, TlsVersion::Tls12][..])
    );
    for server in [http, https] {
        let location = &server.locations[0];
        assert_eq!(location.path, "/");
        let pass = location.proxy.pass.as_ref().unwrap();
        assert_eq!(pass.to_string(), "http://seed-lb-19080");
        let headers = location.proxy.set_header.as_ref().unwrap();
        assert_eq!(
            headers.keys().collect::<Vec<_>>(),
            ["X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Port"]
        );
        assert_eq!(
            server.client.keepalive_timeout.unwrap().get(),
            StdDuration::from_secs(60),
            "ELB's default idle timeout"
        );
    }
    assert!(model.stream.servers.is_empty());

    // Every item says where it came from.
    let script = std::fs::read_to_string(dir.join("seed-elb.sh")).unwrap();
    let line = |n: u32| script.lines().nth(n as usize - 1).unwrap().to_string();
    assert!(line(pool.servers[0].origin.as_ref().unwrap().line).contains("register-instances"));
    assert!(line(check.origin.as_ref().unwrap().line).contains("configure-healthcheck"));
    assert!(line(https.origin.as_ref().unwrap().line).contains("protocol=HTTPS"));

    // The printed TOML is the same model.
    let toml = appliance::compile::render::render_toml(model, &compiled.sources, &[]);
    assert_eq!(&Appliance::from_toml(&toml, "seed.toml").unwrap(), model);
}

#[test]
fn seed_script_without_its_certificate_says_which_file() {
    let dir = seed_dir();
    std::fs::remove_file(dir.join("seed.key")).unwrap();
    let failed = compile_file(&dir.join("seed-elb.sh"), &options(&dir)).unwrap_err();
    let d = failed.diagnostic;
    assert!(
        d.message.starts_with("iam-servercertupload: \"")
            && d.message
                .contains("seed.key\" cannot be read (2: No such file or directory)"),
        "{}",
        d.message
    );
    assert_eq!(d.origin.unwrap().line, 22);
}

/// Two "instances" on 127.0.0.1 and 127.0.0.2, same port, each answering with its name; the
/// health check path answers 200 until `failing` is set for it.
struct Instances {
    failing: [Arc<AtomicBool>; 2],
    _threads: Vec<std::thread::JoinHandle<()>>,
}

impl Instances {
    fn start(port: u16) -> Instances {
        let failing = [
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicBool::new(false)),
        ];
        let mut threads = Vec::new();
        for (i, ip) in ["127.0.0.1", "127.0.0.2"].into_iter().enumerate() {
            let listener = TcpListener::bind((ip, port)).expect("bind an instance");
            let failing = failing[i].clone();
            let name = format!("instance-{}", i + 1);
            threads.push(std::thread::spawn(move || {
                for stream in listener.incoming().flatten() {
                    let failing = failing.clone();
                    let name = name.clone();
                    std::thread::spawn(move || serve_one(stream, &name, &failing));
                }
            }));
        }
        Instances {
            failing,
            _threads: threads,
        }
    }
}

/// Answers the requests of one connection (keep-alive), the health check path by `failing`.
fn serve_one(stream: TcpStream, name: &str, failing: &AtomicBool) {
    let _ = stream.set_read_timeout(Some(StdDuration::from_secs(30)));
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                return;
            }
            if header == "\r\n" || header == "\n" {
                break;
            }
        }
        let (status, body) = if path == "/status" && failing.load(Ordering::SeqCst) {
            ("500 Internal Server Error", "failing\n".to_string())
        } else {
            ("200 OK", format!("{name}\n"))
        };
        let response = format!(
            "HTTP/1.1 {status}\r\nContent-Length: {}\r\nContent-Type: text/plain\r\n\r\n{body}",
            body.len()
        );
        if writer.write_all(response.as_bytes()).is_err() {
            return;
        }
    }
}

/// `curl -sk -i` with an optional cookie; the status line, the headers and the body.
fn curl(url: &str, cookie: Option<&str>) -> String {
    let mut command = Command::new("curl");
    command.args(["-sk", "-i", "--max-time", "5", url]);
    if let Some(c) = cookie {
        command.args(["-H", &format!("Cookie: {c}")]);
    }
    let out = command.output().expect("curl is installed");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn served_by(response: &str) -> Option<&'static str> {
    ["instance-1", "instance-2"]
        .into_iter()
        .find(|n| response.lines().last() == Some(*n))
}

/// The `AWSELB=...` pair of a response's Set-Cookie.
fn lb_cookie(response: &str) -> Option<String> {
    response.lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        if !name.eq_ignore_ascii_case("set-cookie") {
            return None;
        }
        let pair = value.trim().split(';').next()?.to_string();
        pair.starts_with("AWSELB=").then_some(pair)
    })
}

/// The seed script served for real: `appliance run -c seed-elb.sh` balances HTTP and HTTPS over
/// both instances, sets the LB cookie and keeps a client with it on its instance, and when an
/// instance fails its health check everything (sticky clients too) goes to the other.
#[test]
fn seed_script_serves_balances_sticks_and_fails_over() {
    let dir = seed_dir();
    let (http, https, backend) = (
        support::free_port(),
        support::free_port(),
        support::free_port(),
    );
    let instances = Instances::start(backend);
    let log = std::fs::File::create(dir.join("appliance.log")).unwrap();
    let _lb = support::ChildGuard::spawn(
        "appliance",
        Command::new(support::appliance_bin())
            .arg("run")
            .arg("-c")
            .arg(dir.join("seed-elb.sh"))
            .arg("--instances-file")
            .arg(dir.join("instances.txt"))
            .args(["--var", &format!("HTTP_PORT={http}")])
            .args(["--var", &format!("HTTPS_PORT={https}")])
            .args(["--var", &format!("BACKEND_PORT={backend}")])
            .current_dir(&dir)
            .stdout(log.try_clone().unwrap())
            .stderr(log),
    );
    support::wait_for_listen(http, StdDuration::from_secs(20));
    support::wait_for_listen(https, StdDuration::from_secs(20));
    let log_text = || std::fs::read_to_string(dir.join("appliance.log")).unwrap_or_default();

    // Without a cookie, both instances serve, over HTTP and HTTPS, and each answer carries a
    // new LB cookie.
    let base = format!("http://127.0.0.1:{http}/");
    let tls = format!("https://localhost:{https}/");
    let mut seen = Vec::new();
    for url in [&base, &tls, &base, &tls] {
        let response = curl(url, None);
        let by = served_by(&response)
            .unwrap_or_else(|| panic!("{url}: no instance answered:\n{response}\n{}", log_text()));
        assert!(
            lb_cookie(&response).is_some(),
            "{url}: no AWSELB cookie:\n{response}"
        );
        seen.push(by);
    }
    assert!(
        seen.contains(&"instance-1") && seen.contains(&"instance-2"),
        "the two instances should share the requests: {seen:?}"
    );

    // A client with the cookie stays on its instance, on either listener.
    let first = curl(&base, None);
    let home = served_by(&first).unwrap();
    let cookie = lb_cookie(&first).unwrap();
    for url in [&base, &tls, &base, &tls, &base, &tls] {
        let response = curl(url, Some(&cookie));
        assert_eq!(served_by(&response), Some(home), "{url}:\n{response}");
    }

    // The sticky client's instance fails its health check (interval 5 s, unhealthy after 2):
    // within a few intervals every request, the sticky client's too, goes to the other one.
    let (home_index, other) = if home == "instance-1" {
        (0, "instance-2")
    } else {
        (1, "instance-1")
    };
    instances.failing[home_index].store(true, Ordering::SeqCst);
    let deadline = Instant::now() + StdDuration::from_secs(40);
    loop {
        let response = curl(&base, Some(&cookie));
        if served_by(&response) == Some(other) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{home} failed its health check but still serves:\n{response}\n{}",
            log_text()
        );
        std::thread::sleep(StdDuration::from_millis(500));
    }
    for url in [&base, &tls, &base, &tls] {
        let response = curl(url, Some(&cookie));
        assert_eq!(served_by(&response), Some(other), "{url}:\n{response}");
        let fresh = curl(url, None);
        assert_eq!(served_by(&fresh), Some(other), "{url}:\n{fresh}");
    }
}
