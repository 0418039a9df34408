//! nginx's command line as an operator uses it, the appliance (a symlink named `nginx`) beside
//! Debian's nginx: `-t` on good and bad configs, `-T`, `-s reload|reopen|quit|stop` through the
//! pid file, logrotate's move-then-reopen, the pid file errors, `-v`, `-V`, `-h`, bad options.
//! Messages are compared after the parts that must differ (timestamps, pids, the config's own
//! path and wording of a config error) are normalized; exit statuses are compared as they are.
//!
//! The appliance reads appliance.toml here; nginx.conf variants join when the nginx parser
//! lands (the configs are built by `configs`).

mod ops_common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use ops_common::*;

/// Which program: the appliance as `nginx`, or Debian's.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Which {
    Appliance,
    Debian,
}

struct Setup {
    which: Which,
    bin: PathBuf,
    conf: PathBuf,
    pid: PathBuf,
    access: PathBuf,
    port: u16,
}

/// The same server for both: `listen` proxies to `backend`, access log and pid in `dir`.
fn configs(dir: &Scratch, which: Which, backend: u16) -> Setup {
    let port = free_port();
    let tag = match which {
        Which::Appliance => "app",
        Which::Debian => "deb",
    };
    let pid = dir.path(&format!("{tag}.pid"));
    let access = dir.path(&format!("{tag}-access.log"));
    let err = dir.path(&format!("{tag}-error.log"));
    let (conf, bin) = match which {
        Which::Appliance => (
            dir.write(
                "app.toml",
                &format!(
                    "[global]\npid = \"{}\"\nerror_log = {{ path = \"{}\", level = \"notice\" }}\n\
                     [http]\naccess_log = [{{ path = \"{}\" }}]\n\
                     [[http.upstream]]\nname = \"pool\"\nserver = [{{ address = \"127.0.0.1:{backend}\" }}]\n\
                     [[http.server]]\nlisten = [{{ address = \"127.0.0.1:{port}\" }}]\n\
                     [[http.server.location]]\npath = \"/\"\nproxy = {{ pass = \"http://pool\" }}\n",
                    pid.display(),
                    err.display(),
                    access.display()
                ),
            ),
            dir.nginx_symlink(),
        ),
        Which::Debian => (
            dir.write(
                "deb.conf",
                &format!(
                    "pid {};\nerror_log {} notice;\nevents {{}}\n\
                     http {{\n    access_log {};\n    upstream pool {{ server 127.0.0.1:{backend}; }}\n\
                     server {{ listen 127.0.0.1:{port}; location / {{ proxy_pass http://pool; }} }}\n}}\n",
                    pid.display(),
                    err.display(),
                    access.display()
                ),
            ),
            PathBuf::from("nginx"),
        ),
    };
    Setup {
        which,
        bin,
        conf,
        pid,
        access,
        port,
    }
}

struct Ran {
    code: i32,
    stdout: String,
    /// stderr with timestamps and pids normalized, the config and pid paths as CONF and PID.
    lines: Vec<String>,
}

fn run(s: &Setup, args: &[&str]) -> Ran {
    let out = Command::new(&s.bin)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("running nginx");
    let err = String::from_utf8_lossy(&out.stderr)
        .replace(&s.conf.display().to_string(), "CONF")
        .replace(&s.pid.display().to_string(), "PID");
    Ran {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        lines: normalize_log_lines(&err),
    }
}

fn conf_arg(s: &Setup) -> String {
    s.conf.display().to_string()
}

#[test]
fn test_flag_on_good_and_bad_configs_like_nginx() {
    let dir = Scratch::new("cli-t");
    let backend = Backend::start_anywhere("A");
    let both = [
        configs(&dir, Which::Appliance, backend.port),
        configs(&dir, Which::Debian, backend.port),
    ];
    let good: Vec<Ran> = both
        .iter()
        .map(|s| run(s, &["-t", "-c", &conf_arg(s)]))
        .collect();
    for r in &good {
        assert_eq!(r.code, 0);
        assert_eq!(
            r.lines,
            [
                "nginx: the configuration file CONF syntax is ok",
                "nginx: configuration file CONF test is successful"
            ]
        );
    }
    let quiet: Vec<Ran> = both
        .iter()
        .map(|s| run(s, &["-tq", "-c", &conf_arg(s)]))
        .collect();
    for r in &quiet {
        assert_eq!((r.code, r.lines.len()), (0, 0), "{:?}", r.lines);
    }
    // -T: the test, then every file as "# configuration file X:".
    for s in &both {
        let r = run(s, &["-T", "-c", &conf_arg(s)]);
        assert_eq!(r.code, 0);
        let text = std::fs::read_to_string(&s.conf).unwrap();
        assert_eq!(
            r.stdout,
            format!("# configuration file {}:\n{text}\n", s.conf.display())
        );
    }

    // A broken config: an error naming the file and line, then "test failed", status 1.
    std::fs::write(&both[0].conf, "[global]\npid = \"/x\"\nbogus line\n").unwrap();
    std::fs::write(&both[1].conf, "pid /x;\nevents {}\nbogus line;\n").unwrap();
    for s in &both {
        let r = run(s, &["-t", "-c", &conf_arg(s)]);
        println!(
            "{:?} -t on a broken config: {:?} -> {}",
            s.which, r.lines, r.code
        );
        assert_eq!(r.code, 1);
        assert_eq!(r.lines.len(), 2, "{:?}", r.lines);
        assert!(
            r.lines[0].starts_with("[emerg] ") && r.lines[0].ends_with(" in CONF:3"),
            "{:?}",
            r.lines
        );
        assert_eq!(r.lines[1], "nginx: configuration file CONF test failed");
    }
    // A config that is not there.
    for s in &both {
        let missing = format!("{}.missing", s.conf.display());
        let r = run(s, &["-t", "-c", &missing]);
        assert_eq!(r.code, 1);
        let want = "[emerg] open() \"CONF.missing\" failed (2: No such file or directory)";
        assert_eq!(r.lines[0], want, "{:?}", s.which);
    }
}

#[test]
fn signals_through_the_pid_file_like_nginx() {
    let dir = Scratch::new("cli-s");
    let backend = Backend::start_anywhere("A");
    for which in [Which::Appliance, Which::Debian] {
        let s = configs(&dir, which, backend.port);
        // `daemon on` (nginx's default): the command returns once the server runs.
        let started = run(&s, &["-c", &conf_arg(&s)]);
        let _guard = Proc {
            child: None,
            pid_file: Some(s.pid.clone()),
        };
        assert_eq!(
            started.code, 0,
            "{which:?} did not start: {:?}",
            started.lines
        );
        let pid = read_pid(&s.pid).expect("the pid file is written before the parent exits");
        assert!(alive(pid));
        assert!(wait_until(Duration::from_secs(5), || get(
            local(s.port),
            "/",
            &[]
        )
        .is_ok()));

        let reload = run(&s, &["-c", &conf_arg(&s), "-s", "reload"]);
        assert_eq!(
            (reload.code, reload.lines.clone()),
            (0, vec!["[notice] signal process started".to_string()])
        );
        assert!(wait_until(Duration::from_secs(5), || get(
            local(s.port),
            "/",
            &[]
        )
        .map(|r| r.0)
            == Ok(200)));

        // logrotate: move the log away, reopen, and new lines go to a new file at the path.
        assert!(wait_until(Duration::from_secs(5), || {
            std::fs::read_to_string(&s.access).is_ok_and(|t| !t.is_empty())
        }));
        let rotated = PathBuf::from(format!("{}.1", s.access.display()));
        std::fs::rename(&s.access, &rotated).unwrap();
        let reopen = run(&s, &["-c", &conf_arg(&s), "-s", "reopen"]);
        assert_eq!(reopen.code, 0);
        assert!(
            wait_until(Duration::from_secs(5), || s.access.exists()),
            "{which:?}: no new log after reopen"
        );
        get(local(s.port), "/after-reopen", &[]).unwrap();
        assert!(
            wait_until(Duration::from_secs(5), || std::fs::read_to_string(
                &s.access
            )
            .is_ok_and(|t| t.contains("/after-reopen"))),
            "{which:?}: the request after reopen is not in the new file"
        );
        assert!(!std::fs::read_to_string(&rotated)
            .unwrap()
            .contains("/after-reopen"));

        let quit = run(&s, &["-c", &conf_arg(&s), "-s", "quit"]);
        assert_eq!(quit.code, 0);
        assert!(
            wait_until(Duration::from_secs(10), || !alive(pid)),
            "{which:?} did not quit"
        );
        assert!(
            wait_until(Duration::from_secs(2), || !s.pid.exists()),
            "{which:?} left its pid file"
        );

        // The pid file errors, in nginx's words.
        let missing = run(&s, &["-c", &conf_arg(&s), "-s", "reload"]);
        assert_eq!(missing.code, 1);
        assert_eq!(
            missing.lines,
            [
                "[notice] signal process started",
                "[error] open() \"PID\" failed (2: No such file or directory)"
            ]
        );
        std::fs::write(&s.pid, "").unwrap();
        let empty = run(&s, &["-c", &conf_arg(&s), "-s", "reload"]);
        assert_eq!(empty.code, 1);
        assert_eq!(empty.lines[1], "[error] invalid PID number \"\" in \"PID\"");
        let gone = {
            let mut c = Command::new("true").spawn().unwrap();
            let id = c.id();
            c.wait().unwrap();
            id
        };
        std::fs::write(&s.pid, format!("{gone}\n")).unwrap();
        let stale = run(&s, &["-c", &conf_arg(&s), "-s", "reload"]);
        assert_eq!(stale.code, 1);
        assert_eq!(
            stale.lines[1],
            format!("[alert] kill({gone}, 1) failed (3: No such process)")
        );
        std::fs::remove_file(&s.pid).unwrap();

        // -s stop against a server in the foreground.
        let mut fg = Command::new(&s.bin);
        fg.args(["-c", &conf_arg(&s), "-g", "daemon off;"])
            .stdin(Stdio::null())
            .stderr(Stdio::null());
        let mut fg = Proc::spawn(&mut fg, Some(s.pid.clone()));
        assert!(wait_until(Duration::from_secs(5), || read_pid(&s.pid)
            .is_some()
            && get(local(s.port), "/", &[]).is_ok()));
        let stop = run(&s, &["-c", &conf_arg(&s), "-s", "stop"]);
        assert_eq!(stop.code, 0);
        let child = fg.child.as_mut().unwrap();
        assert!(wait_until(Duration::from_secs(10), || matches!(
            child.try_wait(),
            Ok(Some(_))
        )));
        println!(
            "{which:?}: -s reload, reopen, quit, stop and the pid file errors behave as nginx's"
        );
    }
}

#[test]
fn version_help_and_bad_options_like_nginx() {
    let dir = Scratch::new("cli-v");
    let ours = dir.nginx_symlink();
    let run_both = |args: &[&str]| -> (std::process::Output, std::process::Output) {
        let o = Command::new(&ours).args(args).output().unwrap();
        let d = Command::new("nginx").args(args).output().unwrap();
        (o, d)
    };
    let (o, d) = run_both(&["-v"]);
    assert_eq!((o.status.code(), d.status.code()), (Some(0), Some(0)));
    assert_eq!(
        String::from_utf8_lossy(&o.stderr),
        format!(
            "nginx version: appliance/{} (compatible with nginx/1.22.1)\n",
            env!("CARGO_PKG_VERSION")
        )
    );
    assert!(String::from_utf8_lossy(&d.stderr).starts_with("nginx version: nginx/"));
    let (o, _) = run_both(&["-V"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&o.stderr)
        .lines()
        .last()
        .is_some_and(
            |l| l.starts_with("configure arguments: ") && l.contains("--pid-path=/run/nginx.pid")
        ));
    // -h: the usage text is nginx's, word for word, after the version line.
    let (o, d) = run_both(&["-h"]);
    assert_eq!((o.status.code(), d.status.code()), (Some(0), Some(0)));
    let usage = |out: &[u8]| {
        String::from_utf8_lossy(out)
            .lines()
            .skip(1)
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(usage(&o.stderr), usage(&d.stderr));
    for bad in [
        &["-x"][..],
        &["-c"],
        &["-s", "bogus"],
        &["foo"],
        &["-p"],
        &["-g"],
        &["-e"],
    ] {
        let (o, d) = run_both(bad);
        assert_eq!(o.status.code(), d.status.code(), "{bad:?}");
        assert_eq!(
            String::from_utf8_lossy(&o.stderr),
            String::from_utf8_lossy(&d.stderr),
            "{bad:?}"
        );
    }
    // The same command line is reachable without the symlink.
    let o = Command::new(appliance_bin())
        .args(["nginx", "-v"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&o.stderr).starts_with("nginx version: appliance/"));
}

#[test]
fn the_systemd_unit_verifies() {
    let unit = Path::new(env!("CARGO_MANIFEST_DIR")).join("appliance/appliance.service");
    let text = std::fs::read_to_string(&unit).unwrap();
    let settings: Vec<(&str, &str)> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .collect();
    let get = |k: &str| {
        settings
            .iter()
            .filter(|(n, _)| *n == k)
            .map(|(_, v)| *v)
            .collect::<Vec<_>>()
    };
    assert_eq!(get("Type"), ["notify"]);
    assert_eq!(get("NotifyAccess"), ["all"]);
    // `systemctl reload` checks the config first, so a broken one fails the command the
    // operator typed (the running process would keep its config either way), then signals.
    let reload = get("ExecReload");
    assert_eq!(
        reload.last(),
        Some(&"/bin/kill -HUP $MAINPID"),
        "{reload:?}"
    );
    assert!(reload[0].contains(" check -q -c "), "{reload:?}");
    assert_eq!(get("KillSignal"), ["SIGQUIT"]);
    let caps = get("CapabilityBoundingSet").join(" ");
    assert!(
        caps.contains("CAP_NET_ADMIN") && caps.contains("CAP_NET_RAW"),
        "{caps}"
    );
    let families = get("RestrictAddressFamilies").join(" ");
    assert!(
        families.contains("AF_NETLINK") && families.contains("AF_PACKET"),
        "{families}"
    );

    // systemd-analyze verify, with the binary paths pointing at this build.
    let Ok(probe) = Command::new("systemd-analyze").arg("--version").output() else {
        panic!("systemd-analyze is not installed (scripts/test-all installs systemd)");
    };
    assert!(probe.status.success());
    let dir = Scratch::new("unit");
    let copy = dir.write(
        "appliance.service",
        &text.replace(
            "/usr/local/bin/appliance",
            &appliance_bin().display().to_string(),
        ),
    );
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&copy)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let complaints: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("appliance.service"))
        // Outside a booted systemd (a container) the verifier cannot resolve the cgroup or the
        // unit's dependencies on targets; those lines do not concern the unit's own text.
        .filter(|l| !l.contains("Failed to") || l.contains("Unknown") || l.contains("assignment"))
        .collect();
    println!(
        "systemd-analyze verify: status {:?}\n{stderr}",
        out.status.code()
    );
    assert!(complaints.is_empty(), "{complaints:?}");
}

/// `-t` reads the certificates, as nginx's does: a missing one fails the test with its path,
/// for both programs, where a syntax-only check would have said "successful".
#[test]
fn test_flag_reads_the_certificates_like_nginx() {
    let dir = Scratch::new("cli-t-cert");
    let missing = dir.path("missing.crt");
    let key = dir.path("missing.key");
    let conf = dir.write(
        "nginx.conf",
        &format!(
            "pid {pid};\nerror_log stderr;\nevents {{}}\nhttp {{\n  server {{\n    listen 127.0.0.1:{port} ssl;\n    ssl_certificate {crt};\n    ssl_certificate_key {key};\n    return 200;\n  }}\n}}\n",
            pid = dir.path("nginx.pid").display(),
            port = free_port(),
            crt = missing.display(),
            key = key.display(),
        ),
    );
    for (program, mut command) in [
        ("appliance", {
            let mut c = Command::new(appliance_bin());
            c.arg("nginx");
            c
        }),
        ("nginx", Command::new("nginx")),
    ] {
        let out = command
            .args(["-t", "-c"])
            .arg(&conf)
            .stdout(Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        println!("{program} -t: {stderr}");
        assert_eq!(out.status.code(), Some(1), "{program}: {stderr}");
        assert!(
            stderr.contains(&missing.display().to_string()),
            "{program} names the certificate: {stderr}"
        );
        assert!(stderr.contains("test failed"), "{program}: {stderr}");
    }
}
