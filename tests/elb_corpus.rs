//! Every script of the corpus's elb/ directory compiles to the model its notes describe, or
//! fails with the diagnostic they predict, at the offending text.

mod support;

use std::path::PathBuf;
use std::process::Command;

use appliance::compile::elb::{script, semantics, Source};
use appliance::compile::{compile_file, Compiled, Options, Support};
use appliance::config::{Appliance, Balance};

fn corpus(name: &str) -> PathBuf {
    support::corpus_dir().join("elb").join(name)
}

fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// An instances file for the scripts that register instances.
fn instances_file() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("elb-corpus-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("instances.txt");
    std::fs::write(
        &path,
        "# id address\ni-29184c43 10.0.1.5\ni-0a1b2c3d 10.0.1.6\ni-0a1b2c3e 10.0.1.7\n",
    )
    .unwrap();
    path
}

fn compile(name: &str, options: &Options) -> Compiled {
    match compile_file(&corpus(name), options) {
        Ok(c) => c,
        Err(f) => panic!("{name} failed: {}", f.diagnostic),
    }
}

/// The diagnostic a script fails with: message, `file:line:column`, and the text it points at.
fn failure(name: &str, options: &Options) -> (String, String, String) {
    let path = corpus(name);
    let text = std::fs::read_to_string(&path).unwrap();
    let failed = match compile_file(&path, options) {
        Ok(_) => panic!("{name} compiled, but must fail"),
        Err(f) => f,
    };
    let d = failed.diagnostic;
    let origin = d.origin.as_ref().expect("the diagnostic has a place");
    let file = path.to_string_lossy();
    assert_eq!(&*origin.file, &*file);
    let at = format!("{}:{}:{}", name, origin.line, origin.column);
    let span = d.span.clone().expect("the diagnostic has a span");
    (d.message.clone(), at, text[span].to_string())
}

fn state(name: &str, options: &Options) -> semantics::State {
    let path = corpus(name);
    let text = std::fs::read_to_string(&path).unwrap();
    let src = Source::new(&path.to_string_lossy(), &text);
    let s = script::read(&src).unwrap();
    semantics::apply(&s, &src, options).unwrap()
}

fn http_ports(model: &Appliance) -> Vec<String> {
    model
        .http
        .servers
        .iter()
        .flat_map(|s| s.listen.iter().map(|l| l.address.to_string()))
        .collect()
}

#[test]
fn s1_timeout_below_the_api_minimum() {
    let (message, at, text) = failure("s1.sh", &Options::default());
    assert_eq!(
        message,
        "elb-configure-healthcheck: --timeout 1 is out of range: ELB accepts 2 to 60 seconds"
    );
    assert_eq!(at, "s1.sh:2:93");
    assert_eq!(text, "1");
}

#[test]
fn s2_typo_in_a_command_name() {
    for options in [
        Options::default(),
        Options {
            vars: vars(&[("LBNAME", "web"), ("REGION", "eu-west-1"), ("2", "i-1")]),
            ..Options::default()
        },
    ] {
        let (message, at, text) = failure("s2.sh", &options);
        assert_eq!(
            message,
            "unknown ELB command \"elb-deregister-instances-with-lb\"; did you mean \"elb-deregister-instances-from-lb\"?"
        );
        assert_eq!(at, "s2.sh:9:21");
        assert_eq!(text, "elb-deregister-instances-with-lb");
    }
}

fn s3_vars() -> Options {
    Options {
        vars: vars(&[
            ("ELB", "fbsync"),
            ("HEALTHCHECK_INTERVAL", "30"),
            ("HEALTHCHECK_TIMEOUT", "5"),
            ("UNHEALTHY_THRESHOLD", "2"),
            ("HEALTHY_THRESHOLD", "3"),
        ]),
        ..Options::default()
    }
}

#[test]
fn s3_variables_continuations_and_commented_listeners() {
    let (message, at, text) = failure("s3.sh", &Options::default());
    assert_eq!(
        message,
        "variable \"ELB\" is not set: assign it in the script or pass --var ELB=VALUE"
    );
    assert_eq!((at.as_str(), text.as_str()), ("s3.sh:1:19", "${ELB}"));

    let c = compile("s3.sh", &s3_vars());
    // The commented-out listeners (443 among them) are not applied.
    assert_eq!(http_ports(&c.model), ["0.0.0.0:80"]);
    let location = &c.model.http.servers[0].locations[0];
    assert_eq!(location.return_.as_ref().map(|r| r.status), Some(503));
    let commented = c
        .report
        .items
        .iter()
        .filter(|i| i.note == "commented out")
        .count();
    assert_eq!(commented, 6);
    assert!(c
        .report
        .items
        .iter()
        .any(|i| i.name == "elb-describe-lbs" && i.support == Support::Skipped));
    let s = state("s3.sh", &s3_vars());
    let health = s.lbs["fbsync"].health.as_ref().unwrap();
    assert_eq!(health.target.to_string(), "HTTP:80/health_check?elb=true");
    assert_eq!(
        (
            health.interval,
            health.timeout,
            health.unhealthy,
            health.healthy
        ),
        (30, 5, 2, 3)
    );
}

#[test]
fn s4_proxy_protocol_on_a_backend_port() {
    let c = compile("s4.sh", &Options::default());
    assert!(c.model.http.servers.is_empty() && c.model.stream.servers.is_empty());
    let skipped: Vec<&str> = c
        .report
        .items
        .iter()
        .filter(|i| i.support == Support::Skipped)
        .map(|i| i.name.as_str())
        .collect();
    assert_eq!(skipped, ["OK-Creating", "OK-Setting"]);
    let s = state("s4.sh", &Options::default());
    let lb = &s.lbs["elb123-testproxyprotocol"];
    assert_eq!(lb.backend[&443], ["EnableProxyProtocol"]);
    assert_eq!(
        lb.policies["EnableProxyProtocol"].kind,
        semantics::PolicyKind::ProxyProtocol { enabled: true }
    );
}

#[test]
fn s5_certificate_upload_in_a_root_session() {
    let c = compile("s5.sh", &Options::default());
    assert_eq!(c.report.mapped.get("iam-servercertupload"), Some(&1));
    let prompts = c
        .report
        .warnings
        .iter()
        .filter(|w| w.message.contains("root prompt"))
        .count();
    assert_eq!(prompts, 2);
    assert!(c
        .report
        .items
        .iter()
        .any(|i| i.name == "elb-set-lb-listener-ssl-cert"
            && i.note
                .contains("port 443 of \"mysite-stage\" is not defined")));
    let s = state("s5.sh", &Options::default());
    let upload = &s.uploads["stage.mysite.com"];
    assert!(upload.body.0.ends_with("stage.mysite.com.crt"));
    assert!(upload
        .chain
        .as_ref()
        .unwrap()
        .0
        .ends_with("stage.mysite.com.intermediate.crt"));
}

#[test]
fn s6_option_lines_wrapped_without_backslash() {
    let (message, at, _) = failure("s6.sh", &Options::default());
    assert!(
        message.starts_with("variable \"LB_NAME\" is not set"),
        "{message}"
    );
    assert_eq!(at, "s6.sh:2:15");
    let options = Options {
        vars: vars(&[("LB_NAME", "web"), ("ZONE", "us-east-1a")]),
        ..Options::default()
    };
    let c = compile("s6.sh", &options);
    assert_eq!(http_ports(&c.model), ["0.0.0.0:80"]);
    let joined: Vec<u32> = c
        .report
        .warnings
        .iter()
        .filter(|w| w.message.contains("joined to the command"))
        .map(|w| w.origin.as_ref().unwrap().line)
        .collect();
    assert_eq!(joined, [3, 5]);
    let s = state("s6.sh", &options);
    let h = s.lbs["web"].health.as_ref().unwrap();
    assert_eq!(h.target.to_string(), "HTTP:80/alive.php");
    assert_eq!(
        (h.interval, h.timeout, h.unhealthy, h.healthy),
        (6, 2, 2, 7)
    );
}

#[test]
fn s7_https_listener_without_a_certificate() {
    let (message, at, text) = failure("s7.sh", &Options::default());
    assert!(
        message
            .starts_with("elb-create-lb-listeners: the HTTPS listener on port 443 has no cert-id"),
        "{message}"
    );
    assert_eq!(at, "s7.sh:20:61");
    assert_eq!(text, "lb-port=443,instance-port=443,protocol=https");
    // The blog's typography on line 12 is read as ASCII, and said so.
    let path = corpus("s7.sh");
    let src = Source::new("s7.sh", &std::fs::read_to_string(path).unwrap());
    let s = script::read(&src).unwrap();
    let typography: Vec<u32> = s
        .warnings
        .iter()
        .filter(|w| w.message.contains("typographic"))
        .map(|w| w.origin.as_ref().unwrap().line)
        .collect();
    assert_eq!(typography, [12]);
}

#[test]
fn s8_single_dash_options_and_backticks() {
    let base = vars(&[("loadBalancer", "web")]);
    let (message, at, text) = failure(
        "s8.sh",
        &Options {
            vars: base.clone(),
            ..Options::default()
        },
    );
    assert!(
        message.contains("\"instanceIds\" is set by a command substitution in")
            && message.ends_with(
                "s8.sh:1:13, which the compiler does not run: pass --var instanceIds=VALUE"
            ),
        "{message}"
    );
    assert_eq!(
        (at.as_str(), text.as_str()),
        ("s8.sh:3:77", "${instanceIds}")
    );
    let mut all = base;
    all.extend(vars(&[("instanceIds", "i-0a1b2c3d,i-0a1b2c3e")]));
    let c = compile(
        "s8.sh",
        &Options {
            vars: all,
            instances_file: Some(instances_file()),
            ..Options::default()
        },
    );
    assert_eq!(http_ports(&c.model), ["0.0.0.0:80"]);
    let pool = &c.model.http.upstreams[0];
    assert_eq!(pool.name, "web-80");
    assert_eq!(pool.balance, Balance::LeastConn);
    let servers: Vec<&str> = pool.servers.iter().map(|s| s.address.as_str()).collect();
    assert_eq!(servers, ["10.0.1.6:80", "10.0.1.7:80"]);
}

#[test]
fn s9_short_flags_and_printf_prefixes() {
    let c = compile(
        "s9.sh",
        &Options {
            vars: vars(&[("NAME_ELB", "shop"), ("line", "i-0a1b2c3d")]),
            instances_file: Some(instances_file()),
            ..Options::default()
        },
    );
    let pool = &c.model.http.upstreams[0];
    assert_eq!(pool.name, "shop-8080");
    assert_eq!(pool.servers[0].address, "10.0.1.6:8080");
    let h = pool.health_check.as_ref().unwrap();
    assert_eq!(h.target.to_string(), "HTTP:80/index.php");
    assert_eq!(
        (h.interval.to_string(), h.timeout.to_string()),
        ("30s".to_string(), "5s".to_string())
    );
    assert_eq!((h.healthy_threshold, h.unhealthy_threshold), (10, 2));
    let printf = c.report.items.iter().filter(|i| i.name == "printf").count();
    assert_eq!(printf, 2);
}

#[test]
fn s10_minimal_create_lb() {
    let c = compile("s10.sh", &Options::default());
    assert_eq!(http_ports(&c.model), ["0.0.0.0:80"]);
    assert!(c.model.http.upstreams.is_empty(), "no instance, no pool");
    assert!(c
        .report
        .items
        .iter()
        .any(|i| i.name == "echo" && i.support == Support::Skipped));
}

#[test]
fn s11_http_and_tcp_listeners() {
    let c = compile(
        "s11.sh",
        &Options {
            instances_file: Some(instances_file()),
            ..Options::default()
        },
    );
    assert_eq!(http_ports(&c.model), ["0.0.0.0:80"]);
    let http = &c.model.http.upstreams[0];
    assert_eq!(http.servers[0].address, "10.0.1.5:80");
    assert_eq!(
        http.servers[0].max_fails, 0,
        "ELB judges by its health check alone"
    );
    let pass = c.model.http.servers[0].locations[0]
        .proxy
        .pass
        .as_ref()
        .unwrap();
    assert_eq!(pass.to_string(), "http://production-80");
    let headers = c.model.http.servers[0].locations[0]
        .proxy
        .set_header
        .as_ref()
        .unwrap();
    assert_eq!(headers["X-Forwarded-For"], "$proxy_add_x_forwarded_for");
    assert_eq!(headers["X-Forwarded-Proto"], "$scheme");
    assert_eq!(headers["X-Forwarded-Port"], "$server_port");
    let stream = &c.model.stream.servers[0];
    assert_eq!(stream.listen[0].address.to_string(), "0.0.0.0:443");
    assert_eq!(stream.pass.as_deref(), Some("production-443"));
    let tcp = &c.model.stream.upstreams[0];
    assert_eq!(tcp.balance, Balance::RoundRobin);
    assert_eq!(tcp.servers[0].address, "10.0.1.5:443");
    // One health check for the load balancer, on every pool, at its own port.
    for pool in [http, tcp] {
        let h = pool.health_check.as_ref().unwrap();
        assert_eq!(h.target.to_string(), "HTTP:80/");
        assert_eq!((h.healthy_threshold, h.unhealthy_threshold), (6, 2));
        assert_eq!(h.origin.as_ref().unwrap().line, 6);
    }
    // Without the file, the addresses come from EC2; with no reachable endpoint that is an
    // error naming the call and the instance.
    let (message, at, text) = failure(
        "s11.sh",
        &Options {
            aws_endpoint: Some(format!("http://127.0.0.1:{}", support::free_port())),
            region: Some("us-east-1".into()),
            ..Options::default()
        },
    );
    assert!(
        message.starts_with("AWS call ec2:DescribeInstances failed for i-29184c43"),
        "{message}"
    );
    assert_eq!((at.as_str(), text.as_str()), ("s11.sh:14:15", "i-29184c43"));
}

#[test]
fn s12_placeholder_certificate_id() {
    let (message, at, text) = failure("s12.sh", &Options::default());
    assert!(
        message.starts_with(
            "elb-create-lb-listeners: cert-id \"&<certificate name>\" is not a certificate ARN"
        ),
        "{message}"
    );
    assert_eq!(at, "s12.sh:1:131");
    assert_eq!(text, "&<certificate name>");
}

/// `appliance check -c` behaves like `nginx -t`: the one-line diagnostic and exit status 1, or
/// the two success lines and 0.
#[test]
fn check_behaves_like_nginx_t() {
    let out = Command::new(support::appliance_bin())
        .args(["check", "-c"])
        .arg(corpus("s1.sh"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let first = stderr.lines().next().unwrap();
    assert!(
        first.starts_with(
            "appliance: [emerg] elb-configure-healthcheck: --timeout 1 is out of range"
        ) && first.ends_with("/elb/s1.sh:2"),
        "{first}"
    );
    assert!(stderr.contains("test failed"), "{stderr}");

    let out = Command::new(support::appliance_bin())
        .args(["check", "-c"])
        .arg(corpus("s10.sh"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("syntax is ok") && stderr.contains("test is successful"),
        "{stderr}"
    );
}

/// `appliance migrate` prints TOML that reads back as the same model, and the report.
#[test]
fn migrate_prints_the_model_and_the_report() {
    let file = instances_file();
    let out = Command::new(support::appliance_bin())
        .arg("migrate")
        .arg(corpus("s11.sh"))
        .arg("--instances-file")
        .arg(&file)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let back = Appliance::from_toml(&stdout, "out.toml").unwrap();
    let direct = compile(
        "s11.sh",
        &Options {
            instances_file: Some(file),
            ..Options::default()
        },
    );
    assert_eq!(back, direct.model);
    assert!(
        stdout.contains("# ") && stdout.contains("s11.sh:3: --listener"),
        "{stdout}"
    );
    assert!(
        stderr.contains("availability zones \"us-east-1b\""),
        "{stderr}"
    );
}

/// `--strict` turns what is left out and changes traffic into an error.
#[test]
fn strict_refuses_what_would_change_traffic() {
    compile("s5.sh", &Options::default());
    let failed = compile_file(
        &corpus("s5.sh"),
        &Options {
            strict: true,
            ..Options::default()
        },
    )
    .unwrap_err();
    assert!(
        failed
            .diagnostic
            .message
            .contains("the listener on port 443 of \"mysite-stage\" is not defined in this script"),
        "{}",
        failed.diagnostic.message
    );
    assert_eq!(failed.diagnostic.origin.as_ref().unwrap().line, 3);
}
