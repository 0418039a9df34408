//! The end-to-end seed script (tests/data/seed-elb.sh) compiles to the model the data plane is
//! to serve: both listeners on one sticky, health-checked pool of the two instances, the HTTPS
//! one with the uploaded certificate. (Serving it with real requests is the data plane's test.)

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration as StdDuration;

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
