//! The appliance image: the Packer template validates with Debian's packer, first boot reads the
//! user data through IMDSv2, and the locally baked image boots under qemu, configures itself
//! from an IMDS stand-in and starts the appliance. The VM tests need root (debootstrap, chroot,
//! network namespaces), qemu and debootstrap, which scripts/test-all installs.
//!
//! Figures (bake and boot times) are printed, never asserted.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::{appliance_bin, free_port};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir =
            std::env::temp_dir().join(format!("appliance-image-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A process started in a process group of its own, killed as a group on drop: image-boot's
/// qemu, IMDS stand-in and socat forwarders go with it.
struct GroupGuard {
    child: Child,
    name: String,
}

impl GroupGuard {
    fn spawn(name: &str, command: &mut Command) -> GroupGuard {
        let child = command
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        GroupGuard {
            child,
            name: name.to_string(),
        }
    }

    /// Pulls the plug: SIGKILL to the whole group, as a power-off would stop everything at once.
    fn kill(&mut self) {
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.child.wait();
    }

    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        eprintln!("stopping {}", self.name);
        self.kill();
    }
}

fn run(command: &mut Command) -> std::process::Output {
    command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"))
}

// ---------------------------------------------------------------------------------------------
// The Packer template

/// The template as Debian's packer 1.6.6 can check it: the whole file for syntax, then a full
/// validation (every source's and provisioner's settings, file paths included) of the template
/// without the lines it marks as needing packer >= 1.7 (IMDSv2 settings of the amazon plugin).
#[test]
fn packer_template_validates_with_debians_packer() {
    let template = repo().join("packer/appliance.pkr.hcl");
    let text = std::fs::read_to_string(&template).unwrap();
    assert!(text.contains("http_tokens                 = \"required\""));
    let plugins = std::fs::read_to_string(repo().join("packer/plugins.pkr.hcl")).unwrap();
    assert!(plugins.contains("required_plugins") && !text.contains("required_plugins"));

    let syntax = run(Command::new("packer")
        .args(["validate", "-syntax-only"])
        .arg(&template)
        .current_dir(repo()));
    assert!(
        syntax.status.success(),
        "packer validate -syntax-only failed:\n{}{}",
        String::from_utf8_lossy(&syntax.stdout),
        String::from_utf8_lossy(&syntax.stderr)
    );

    let tmp = TempDir::new("packer");
    let mut kept = String::new();
    let mut skipping = false;
    for line in text.lines() {
        if line.contains("# BEGIN packer >= 1.7") {
            skipping = true;
        }
        if !skipping {
            kept.push_str(line);
            kept.push('\n');
        }
        if line.contains("# END packer >= 1.7") {
            skipping = false;
        }
    }
    assert!(!skipping, "a BEGIN packer >= 1.7 marker has no END");
    assert!(!kept.contains("metadata_options"));
    let stripped = tmp.path().join("appliance.pkr.hcl");
    std::fs::write(&stripped, &kept).unwrap();
    // The qemu source reads its SSH key.
    let base = tmp.path().join("base");
    std::fs::create_dir_all(&base).unwrap();
    let keygen = run(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(base.join("admin_ed25519")));
    assert!(keygen.status.success(), "ssh-keygen failed");

    let validate = |template: &Path| {
        run(Command::new("packer")
            .arg("validate")
            .arg(format!("-var=base_dir={}", base.display()))
            .arg(format!(
                "-var=appliance_binary={}",
                appliance_bin().display()
            ))
            .arg(template)
            .current_dir(repo()))
    };
    let full = validate(&stripped);
    assert!(
        full.status.success(),
        "packer validate failed:\n{}{}",
        String::from_utf8_lossy(&full.stdout),
        String::from_utf8_lossy(&full.stderr)
    );

    // The same validation rejects a broken template, so the pass above means something.
    let broken = tmp.path().join("broken.pkr.hcl");
    std::fs::write(
        &broken,
        kept.replace("var.instance_type", "var.no_such_variable"),
    )
    .unwrap();
    let rejected = validate(&broken);
    assert!(!rejected.status.success(), "a broken template validated");
}

/// The template's qemu source, run by Debian's packer on the locally built Debian base: it boots
/// the base, logs in over SSH as admin, uploads the same files and runs the same provision.sh as
/// the chroot bake and the AMI build. The disk it leaves has the appliance installed.
#[test]
fn packer_qemu_source_provisions_the_local_base() {
    let base = build_script(&["--base-only"]);
    let tmp = TempDir::new("packer-qemu");
    let binary = tmp.path().join("appliance");
    let strip = run(Command::new("strip")
        .arg("-o")
        .arg(&binary)
        .arg(appliance_bin()));
    assert!(strip.status.success(), "strip failed");
    let out_dir = tmp.path().join("output");
    let manifest = tmp.path().join("manifest.json");
    let accel = std::env::var("APPLIANCE_QEMU_ACCEL").unwrap_or_else(|_| "tcg".into());
    let started = Instant::now();
    let build = run(Command::new("timeout")
        .args([
            "1500",
            "packer",
            "build",
            "-color=false",
            "-only",
            "qemu.appliance",
        ])
        .arg(format!("-var=base_dir={}", base.display()))
        .arg(format!("-var=appliance_binary={}", binary.display()))
        .arg(format!("-var=qemu_accelerator={accel}"))
        .arg(format!("-var=qemu_output_directory={}", out_dir.display()))
        .arg(format!("-var=manifest={}", manifest.display()))
        .arg("packer/appliance.pkr.hcl")
        .env("PACKER_CACHE_DIR", tmp.path().join("packer_cache"))
        .current_dir(repo()));
    let log = String::from_utf8_lossy(&build.stdout).to_string();
    assert!(
        build.status.success(),
        "packer build failed:\n{log}{}",
        String::from_utf8_lossy(&build.stderr)
    );
    eprintln!(
        "packer qemu build ({accel}) took {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert!(log.contains("provision: appliance installed"), "{log}");
    let manifest = std::fs::read_to_string(&manifest).unwrap();
    assert!(
        manifest.contains("\"builder_type\": \"qemu\""),
        "{manifest}"
    );

    // Read the result without booting or mounting it: the unit and the config link as baked.
    let raw = tmp.path().join("disk.raw");
    let convert = run(Command::new("qemu-img")
        .args(["convert", "-O", "raw"])
        .arg(out_dir.join("appliance.qcow2"))
        .arg(&raw));
    assert!(convert.status.success());
    let debugfs = |request: &str| {
        let out = run(Command::new("debugfs").args(["-R", request]).arg(&raw));
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let unit = debugfs("cat /etc/systemd/system/appliance.service");
    let ours = std::fs::read_to_string(repo().join("appliance/appliance.service")).unwrap();
    assert_eq!(unit, ours, "the baked unit is the repository's");
    let link = debugfs("stat /etc/appliance/config");
    assert!(link.contains("default.toml"), "{link}");
    let bin = debugfs("stat /usr/local/bin/appliance");
    assert!(bin.contains("Mode:  0755"), "{bin}");
}

// ---------------------------------------------------------------------------------------------
// First boot against the IMDS stand-in, on loopback

struct Standin {
    _guard: GroupGuard,
    port: u16,
    log: PathBuf,
}

fn start_standin(dir: &Path, user_data: Option<&str>) -> Standin {
    let port_file = dir.join("imds.port");
    let log = dir.join("imds.log");
    let mut cmd = Command::new(repo().join("scripts/imds-standin"));
    cmd.arg("--port-file")
        .arg(&port_file)
        .arg("--log")
        .arg(&log);
    if let Some(text) = user_data {
        let file = dir.join("user-data");
        std::fs::write(&file, text).unwrap();
        cmd.arg("--user-data").arg(file);
    }
    let guard = GroupGuard::spawn("imds-standin", &mut cmd);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(port) = std::fs::read_to_string(&port_file)
            .ok()
            .and_then(|t| t.trim().parse().ok())
        {
            return Standin {
                _guard: guard,
                port,
                log,
            };
        }
        assert!(Instant::now() < deadline, "the IMDS stand-in did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
}

const POOL_TOML: &str = r#"
[[http.upstream]]
name = "app"
[[http.upstream.server]]
address = "127.0.0.1:8081"

[[http.server]]
listen = [{ address = "127.0.0.1:8080" }]
[[http.server.location]]
path = "/"
proxy.pass = "http://app"
"#;

fn firstboot(etc: &Path, state: &Path, port: u16) -> std::process::Output {
    run(Command::new(appliance_bin())
        .arg("firstboot")
        .arg("--etc")
        .arg(etc)
        .arg("--state")
        .arg(state)
        .arg("--imds-endpoint")
        .arg(format!("http://127.0.0.1:{port}"))
        .args(["--patience", "2"]))
}

fn fresh_etc(dir: &Path) -> (PathBuf, PathBuf) {
    let etc = dir.join("etc");
    let state = dir.join("state");
    std::fs::create_dir_all(&etc).unwrap();
    std::fs::copy(
        repo().join("appliance/default.toml"),
        etc.join("default.toml"),
    )
    .unwrap();
    std::os::unix::fs::symlink("default.toml", etc.join("config")).unwrap();
    (etc, state)
}

#[test]
fn firstboot_reads_user_data_through_imdsv2_and_checks_it() {
    let tmp = TempDir::new("firstboot");
    let user_data = format!(
        "[appliance]\nconfig = '''{POOL_TOML}'''\n\n[admin]\nlisten = \"127.0.0.1:9901\"\n"
    );
    let imds = start_standin(tmp.path(), Some(&user_data));
    let (etc, state) = fresh_etc(tmp.path());

    let out = firstboot(&etc, &state, imds.port);
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("applied the user data"), "{said}");
    let link = std::fs::read_link(etc.join("config")).unwrap();
    assert!(link.to_string_lossy().starts_with("user-data."), "{link:?}");
    let check = run(Command::new(appliance_bin())
        .args(["check", "-c"])
        .arg(etc.join("config")));
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let applied = std::fs::read_to_string(etc.join("config")).unwrap();
    assert!(
        applied.contains("[admin]") && applied.contains("127.0.0.1:8081"),
        "{applied}"
    );

    // IMDSv2: a token first, then the user data with it (the stand-in refuses a GET without).
    let log = std::fs::read_to_string(&imds.log).unwrap();
    let calls: Vec<&str> = log.lines().map(|l| l.split_once(' ').unwrap().1).collect();
    assert_eq!(
        calls,
        ["PUT /latest/api/token 200", "GET /latest/user-data 200"],
        "{log}"
    );

    // The next boot with the same user data changes nothing.
    let again = firstboot(&etc, &state, imds.port);
    assert!(String::from_utf8_lossy(&again.stdout).contains("unchanged"));
    assert_eq!(std::fs::read_link(etc.join("config")).unwrap(), link);
}

#[test]
fn firstboot_keeps_the_current_config_when_user_data_is_bad_or_missing() {
    let tmp = TempDir::new("firstboot-bad");
    let (etc, state) = fresh_etc(tmp.path());

    // Meant for the appliance, but wrong: exit 1 (the unit shows failed), the placeholder stays.
    let bad_dir = tmp.path().join("bad");
    std::fs::create_dir_all(&bad_dir).unwrap();
    let bad = "[appliance]\nconfig = '''\n[[http.server]]\nlisten = [{ address = \"0.0.0.0:80\" }]\nretrun = 1\n'''\n";
    let imds = start_standin(&bad_dir, Some(bad));
    let out = firstboot(&etc, &state, imds.port);
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        said.contains("rejected") && said.contains("retrun"),
        "{said}"
    );
    assert!(said.contains("appliance.toml:3"), "names the line: {said}");
    assert_eq!(
        std::fs::read_link(etc.join("config")).unwrap(),
        Path::new("default.toml")
    );
    drop(imds);

    // No user data (IMDS answers 404), and IMDS not there at all: not a failure.
    let none_dir = tmp.path().join("none");
    std::fs::create_dir_all(&none_dir).unwrap();
    let imds = start_standin(&none_dir, None);
    let out = firstboot(&etc, &state, imds.port);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("has no user data"));
    drop(imds);

    let started = Instant::now();
    let out = firstboot(&etc, &state, free_port());
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{said}");
    assert!(said.contains("no user data:"), "{said}");
    eprintln!(
        "firstboot with IMDS unreachable gave up after {:.1} s (patience 2 s)",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(
        std::fs::read_link(etc.join("config")).unwrap(),
        Path::new("default.toml")
    );
}

// ---------------------------------------------------------------------------------------------
// The local image under qemu

/// Runs scripts/image-build; returns the directory it printed last.
fn build_script(args: &[&str]) -> PathBuf {
    let started = Instant::now();
    let out = run(Command::new(repo().join("scripts/image-build"))
        .args(args)
        .stderr(Stdio::inherit()));
    assert!(
        out.status.success(),
        "scripts/image-build {args:?} failed (it needs root, debootstrap, qemu-utils, zstd)"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let dir = PathBuf::from(stdout.lines().last().unwrap_or_default().trim());
    assert!(dir.is_dir(), "image-build printed no directory: {stdout}");
    eprintln!(
        "image-build {args:?} ready in {:.1} s: {}",
        started.elapsed().as_secs_f64(),
        dir.display()
    );
    dir
}

/// Bakes (or reuses) the image with the binary these tests were built with.
fn image() -> PathBuf {
    let binary = appliance_bin();
    let dir = build_script(&["--binary", binary.to_str().unwrap()]);
    assert!(dir.join("appliance.qcow2").is_file(), "no image in {dir:?}");
    dir
}

struct Vm {
    guard: GroupGuard,
    console: PathBuf,
    run_dir: PathBuf,
    started: Instant,
}

impl Vm {
    fn boot(name: &str, image: &Path, dir: &Path, user_data: &str, extra: &[String]) -> Vm {
        let user_data_file = dir.join(format!("{name}.user-data"));
        std::fs::write(&user_data_file, user_data).unwrap();
        let console = dir.join(format!("{name}.console"));
        let run_dir = dir.join(format!("{name}.run"));
        let mut cmd = Command::new(repo().join("scripts/image-boot"));
        cmd.arg("--image")
            .arg(image)
            .arg("--user-data")
            .arg(&user_data_file)
            .arg("--console")
            .arg(&console)
            .arg("--run-dir")
            .arg(&run_dir)
            .args(extra)
            .stdin(Stdio::null());
        Vm {
            guard: GroupGuard::spawn(&format!("VM {name}"), &mut cmd),
            console,
            run_dir,
            started: Instant::now(),
        }
    }

    fn console(&self) -> String {
        std::fs::read(&self.console)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// Waits for a console line containing `needle`; fails with the console's tail otherwise.
    fn wait_for(&mut self, needle: &str, limit: Duration) -> Duration {
        self.wait_for_any(&[needle], limit).1
    }

    /// Waits for the first of `needles` to show on the console: which, and when.
    fn wait_for_any(&mut self, needles: &[&str], limit: Duration) -> (usize, Duration) {
        let needle = needles.join("\" or \"");
        let deadline = Instant::now() + limit;
        loop {
            let console = self.console();
            if let Some(i) = needles.iter().position(|n| console.contains(n)) {
                return (i, self.started.elapsed());
            }
            if let Some(status) = self.guard.exited() {
                panic!(
                    "the VM stopped ({status}) before \"{needle}\":\n{}",
                    self.tail()
                );
            }
            if Instant::now() > deadline {
                panic!(
                    "no \"{needle}\" on the console after {limit:?}:\n{}",
                    self.tail()
                );
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Waits until systemd reports appliance.service ready (Type=notify: `appliance run` said
    /// READY=1); fails at the unit's first failure rather than at the time limit.
    fn wait_until_serving(&mut self) -> Duration {
        let (which, at) = self.wait_for_any(
            &[
                "Started appliance.service",
                "appliance.service: Failed with result",
            ],
            BOOT_LIMIT,
        );
        assert_eq!(which, 0, "appliance.service failed:\n{}", self.tail());
        at
    }

    fn tail(&self) -> String {
        let console = self.console();
        let lines: Vec<&str> = console.lines().collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    }
}

/// How long a VM may take to get somewhere. Generous: without KVM (as on this project's
/// machines) the guest is emulated, and it shares two cores with the rest of the suite.
const BOOT_LIMIT: Duration = Duration::from_secs(600);

fn wrapped_user_data(config: &str) -> String {
    format!("[appliance]\nconfig = '''{config}'''\n")
}

/// The image boots, first boot reads the user data from the IMDS stand-in over IMDSv2, checks it
/// and links it, and systemd starts the appliance on it with the unit's command line.
#[test]
fn image_boots_and_configures_itself_from_user_data() {
    let image = image();
    let tmp = TempDir::new("boot");
    let config = POOL_TOML.replace("127.0.0.1:8080", "0.0.0.0:80");
    let mut vm = Vm::boot("boot", &image, tmp.path(), &wrapped_user_data(&config), &[]);

    let kernel = vm.wait_for("Linux version", BOOT_LIMIT);
    let applied = vm.wait_for("appliance-firstboot: applied the user data", BOOT_LIMIT);
    let started = vm.wait_for("Starting appliance.service", BOOT_LIMIT);
    // The unit's main process ran: systemd reports it ready, or reports how it exited (before
    // `appliance run` exists: "unrecognized subcommand"). A failing ExecStartPre check would be
    // a "control process" instead, and never gets this far.
    let (outcome, ran) = vm.wait_for_any(
        &[
            "Started appliance.service",
            "appliance.service: Main process exited",
        ],
        BOOT_LIMIT,
    );
    eprintln!(
        "boot: appliance.service {}",
        ["became ready", "ran its main process, which exited"][outcome]
    );
    eprintln!(
        "boot: kernel at {:.1} s, user data applied at {:.1} s, appliance.service starting at \
         {:.1} s, binary running at {:.1} s (wall clock since qemu started)",
        kernel.as_secs_f64(),
        applied.as_secs_f64(),
        started.as_secs_f64(),
        ran.as_secs_f64()
    );

    let console = vm.console();
    assert!(
        console.contains("read ") && console.contains("bytes of user data from http://10.0.2.100"),
        "first boot used the stand-in"
    );
    assert!(console.contains("(Toml) checked and linked as /etc/appliance/config"));
    let imds_log = std::fs::read_to_string(vm.run_dir.join("imds.log")).unwrap_or_default();
    assert!(
        imds_log.contains("PUT /latest/api/token 200")
            && imds_log.contains("GET /latest/user-data 200"),
        "the guest used IMDSv2: {imds_log}"
    );
    // systemd 252 accepted every setting of the image's units.
    for unit in ["appliance.service", "appliance-firstboot.service"] {
        for line in console.lines().filter(|l| l.contains(unit)) {
            assert!(
                !line.contains("Unknown key") && !line.contains("Ignoring unknown"),
                "{line}"
            );
        }
    }
    assert!(
        !console.contains("appliance-firstboot.service: Failed"),
        "first boot failed:\n{}",
        vm.tail()
    );
}

/// A backend on the host that answers every request with its token and counts them.
fn start_backend(token: &'static str) -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let served = Arc::new(AtomicUsize::new(0));
    let count = served.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let count = count.clone();
            std::thread::spawn(move || {
                let mut stream = stream;
                let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                count.fetch_add(1, Ordering::SeqCst);
                let body = format!("{token}\n");
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            });
        }
    });
    (port, served)
}

/// One GET with a short timeout; the whole response, or None.
fn get(addr: SocketAddr, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: appliance.test\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    (!response.is_empty()).then_some(response)
}

/// The image boots, takes its config from the user data, and serves traffic from the host
/// through it to a backend on the host side (guest 10.0.2.101:8080 is forwarded to it).
#[test]
fn image_serves_traffic_from_the_host_through_its_user_data_config() {
    let image = image();
    let tmp = TempDir::new("serve");
    let (backend_port, served) = start_backend("served-by-the-host-backend");
    let http_port = free_port();
    let config = POOL_TOML
        .replace("127.0.0.1:8081", "10.0.2.101:8080")
        .replace("127.0.0.1:8080", "0.0.0.0:80");
    let mut vm = Vm::boot(
        "serve",
        &image,
        tmp.path(),
        &wrapped_user_data(&config),
        &[
            "--forward".into(),
            format!("{http_port}:80"),
            "--backend".into(),
            format!("8080:{backend_port}"),
        ],
    );
    vm.wait_for("appliance-firstboot: applied the user data", BOOT_LIMIT);
    let ready = vm.wait_until_serving();
    eprintln!(
        "serve: appliance.service ready at {:.1} s",
        ready.as_secs_f64()
    );

    let addr = SocketAddr::from(([127, 0, 0, 1], http_port));
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut answered = 0;
    let mut last = None;
    for _ in 0..600 {
        if Instant::now() > deadline || answered == 10 {
            break;
        }
        match get(addr, "/") {
            Some(r) if r.contains("served-by-the-host-backend") => answered += 1,
            other => {
                last = other;
                std::thread::sleep(Duration::from_millis(500));
            }
        }
    }
    assert_eq!(
        answered,
        10,
        "requests through the VM did not reach the backend; last answer {last:?}\n{}",
        vm.tail()
    );
    assert!(served.load(Ordering::SeqCst) >= 10, "the backend saw them");
}

// ---------------------------------------------------------------------------------------------
// Two VMs from the image as an HA pair on a network of the test's own

/// A network namespace with a bridge and two taps, removed on drop. One at a time: the pair
/// tests run side by side otherwise (test-all runs two tests at once), and two namespaces of
/// the same name, or four VMs on a 2-core machine, made both fail.
struct PairNet {
    ns: String,
    _one_at_a_time: std::sync::MutexGuard<'static, ()>,
}

static PAIR_NET: std::sync::Mutex<()> = std::sync::Mutex::new(());

impl PairNet {
    const BRIDGE_IP: &'static str = "192.168.77.1";

    fn new() -> PairNet {
        let one_at_a_time = PAIR_NET
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let ns = format!("appl-img-{}", std::process::id());
        // One that a killed run left behind.
        let _ = run(Command::new("ip").args(["netns", "delete", &ns]));
        let net = PairNet {
            ns,
            _one_at_a_time: one_at_a_time,
        };
        net.ip(&["netns", "add", &net.ns]);
        for args in [
            vec!["link", "set", "lo", "up"],
            vec!["link", "add", "br0", "type", "bridge"],
            vec!["addr", "add", "192.168.77.1/24", "dev", "br0"],
            vec!["link", "set", "br0", "up"],
            vec!["tuntap", "add", "tapa", "mode", "tap"],
            vec!["tuntap", "add", "tapb", "mode", "tap"],
            vec!["link", "set", "tapa", "master", "br0", "up"],
            vec!["link", "set", "tapb", "master", "br0", "up"],
        ] {
            net.in_ns(&args);
        }
        net
    }

    fn ip(&self, args: &[&str]) {
        let out = run(Command::new("ip").args(args));
        assert!(
            out.status.success(),
            "ip {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn in_ns(&self, args: &[&str]) {
        let mut full = vec!["netns", "exec", &self.ns, "ip"];
        full.extend_from_slice(args);
        self.ip(&full);
    }

    fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns]).arg(program);
        cmd
    }

    /// Which node answered on the VIP (its X-Appliance-Node header), if one did.
    fn node_on_vip(&self) -> Option<String> {
        let out = self
            .command("curl")
            .args(["-s", "-m", "2", "-D", "-", "-o", "/dev/null"])
            .arg("http://192.168.77.100/")
            .output()
            .ok()?;
        let headers = String::from_utf8_lossy(&out.stdout).to_string();
        headers.lines().find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("x-appliance-node:")
                .map(|v| v.trim().to_string())
        })
    }
}

impl Drop for PairNet {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
    }
}

fn pair_user_data(node: &str, peer_ip: &str, priority: u8) -> String {
    let config = format!(
        r#"
[[http.upstream]]
name = "app"
[[http.upstream.server]]
address = "{bridge}:8080"

[[http.server]]
listen = [{{ address = "0.0.0.0:80" }}]
add_header = [{{ name = "X-Appliance-Node", value = "{node}", always = true }}]
[[http.server.location]]
path = "/"
proxy.pass = "http://app"
"#,
        bridge = PairNet::BRIDGE_IP
    );
    format!(
        "{}\n[ha]\nmode = \"local\"\npeer = \"{peer_ip}:5405\"\nvip = \"192.168.77.100\"\nvip_prefix = 24\ninterface = \"eth1\"\npriority = {priority}\nsecret = \"image-test\"\n",
        wrapped_user_data(&config)
    )
}

impl PairNet {
    /// Boots one node of the pair: a NIC on the namespace's bridge with a static address.
    fn boot(&self, image: &Path, dir: &Path, node: Node) -> Vm {
        let user_data = pair_user_data(node.name, node.peer, node.priority);
        let file = dir.join(format!("{}.user-data", node.name));
        std::fs::write(&file, user_data).unwrap();
        let console = dir.join(format!("{}.console", node.name));
        let run_dir = dir.join(format!("{}.run", node.name));
        let mut cmd = self.command(repo().join("scripts/image-boot"));
        cmd.arg("--image")
            .arg(image)
            .arg("--user-data")
            .arg(&file)
            .arg("--console")
            .arg(&console)
            .arg("--run-dir")
            .arg(&run_dir)
            .args(["--tap", node.tap, "--mac", node.mac, "--ip", node.ip])
            .stdin(Stdio::null());
        Vm {
            guard: GroupGuard::spawn(&format!("VM {}", node.name), &mut cmd),
            console,
            run_dir,
            started: Instant::now(),
        }
    }

    /// Pings `ip` from the namespace until it answers; how long that took.
    fn wait_for_ping(&self, ip: &str, limit: Duration) -> Option<Duration> {
        let started = Instant::now();
        while started.elapsed() < limit {
            let ok = self
                .command("ping")
                .args(["-c", "1", "-W", "1", ip])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                return Some(started.elapsed());
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        None
    }
}

struct Node {
    name: &'static str,
    tap: &'static str,
    mac: &'static str,
    ip: &'static str,
    peer: &'static str,
    priority: u8,
}

const NODE_A: Node = Node {
    name: "a",
    tap: "tapa",
    mac: "52:54:00:77:00:0a",
    ip: "192.168.77.11/24",
    peer: "192.168.77.12",
    priority: 200,
};

const NODE_B: Node = Node {
    name: "b",
    tap: "tapb",
    mac: "52:54:00:77:00:0b",
    ip: "192.168.77.12/24",
    peer: "192.168.77.11",
    priority: 100,
};

fn boot_pair(net: &PairNet, image: &Path, dir: &Path) -> (Vm, Vm) {
    (net.boot(image, dir, NODE_A), net.boot(image, dir, NODE_B))
}

/// What the failover test stands on, without the HA side: two VMs from one image on the test's
/// own bridge, each configured by its user data with its [ha] settings merged into the config,
/// both reachable at their static addresses from the namespace.
#[test]
fn image_pair_boots_on_the_tests_own_network() {
    let image = image();
    let tmp = TempDir::new("pair-net");
    let net = PairNet::new();
    let (mut a, mut b) = boot_pair(&net, &image, tmp.path());
    for vm in [&mut a, &mut b] {
        let applied = vm.wait_for("appliance-firstboot: applied the user data", BOOT_LIMIT);
        eprintln!("pair: user data applied at {:.1} s", applied.as_secs_f64());
        // [ha] beside the config makes first boot run the merged appliance.toml.
        assert!(
            vm.console()
                .contains("/appliance.toml (Toml) checked and linked"),
            "{}",
            vm.tail()
        );
    }
    for (vm, ip) in [(&a, "192.168.77.11"), (&b, "192.168.77.12")] {
        let answered = net.wait_for_ping(ip, Duration::from_secs(120));
        assert!(
            answered.is_some(),
            "{ip} never answered a ping\n{}",
            vm.tail()
        );
    }
}

/// Two VMs from the same image, configured by their user data as an HA pair with a VIP on a
/// bridge in the test's own network namespace: when the master is powered off (its qemu killed),
/// the backup takes the VIP and serves.
#[test]
fn image_pair_fails_over_when_the_master_is_powered_off() {
    let image = image();
    let tmp = TempDir::new("pair");
    let net = PairNet::new();
    let mut backend = net.command("python3");
    backend
        .args([
            "-m",
            "http.server",
            "8080",
            "--bind",
            PairNet::BRIDGE_IP,
            "--directory",
        ])
        .arg(tmp.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let _backend = GroupGuard::spawn("backend", &mut backend);

    let (mut a, mut b) = boot_pair(&net, &image, tmp.path());
    a.wait_until_serving();
    b.wait_until_serving();

    // The higher priority node holds the VIP.
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut holder = None;
    while Instant::now() < deadline {
        holder = net.node_on_vip();
        if holder.as_deref() == Some("a") {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(
        holder.as_deref(),
        Some("a"),
        "node a should hold the VIP\n{}",
        a.tail()
    );

    // Power the master off, then poll the VIP until the backup answers.
    let last_a = Instant::now();
    a.guard.kill();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut failed = 0;
    let mut took_over = None;
    while Instant::now() < deadline {
        match net.node_on_vip().as_deref() {
            Some("b") => {
                took_over = Some(last_a.elapsed());
                break;
            }
            _ => failed += 1,
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let took_over =
        took_over.unwrap_or_else(|| panic!("the backup never answered on the VIP\n{}", b.tail()));
    eprintln!(
        "pair: node b answered on the VIP {:.2} s after node a was powered off ({failed} \
         requests failed meanwhile)",
        took_over.as_secs_f64()
    );
}
