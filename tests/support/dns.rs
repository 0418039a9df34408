//! A real DNS server for the tests of nginx's `resolver`: dnsmasq (from dnsmasq-base) on
//! 127.0.0.1, answering for names under `.test` from a hosts file the test rewrites, with a
//! TTL of one second; any other `.test` name gets NXDOMAIN. Nothing is forwarded anywhere.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::proxies::TempDir;
use super::{free_port, ChildGuard};

pub struct DnsServer {
    pub port: u16,
    hosts: PathBuf,
    child: ChildGuard,
    _dir: TempDir,
}

impl DnsServer {
    pub fn start() -> DnsServer {
        let dir = TempDir::new("dns");
        let hosts = dir.path.join("hosts");
        std::fs::write(&hosts, "").expect("hosts file");
        let port = free_port();
        let child = ChildGuard::spawn(
            "dnsmasq",
            Command::new("dnsmasq")
                .arg("--keep-in-foreground")
                .arg("--conf-file=/dev/null")
                .arg(format!("--port={port}"))
                .arg("--listen-address=127.0.0.1")
                .arg("--bind-interfaces")
                .arg("--no-resolv")
                .arg("--no-hosts")
                .arg("--no-negcache")
                .arg("--local=/test/")
                .arg(format!("--addn-hosts={}", hosts.display()))
                .arg("--local-ttl=1")
                .arg("--user=root")
                .arg("--pid-file=")
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
        // dnsmasq binds before it serves; a moment is enough on loopback.
        std::thread::sleep(Duration::from_millis(300));
        DnsServer {
            port,
            hosts,
            child,
            _dir: dir,
        }
    }

    /// `name` (under `.test`) answers `ip` from now on, and nothing else does.
    pub fn set(&self, name: &str, ip: &str) {
        std::fs::write(&self.hosts, format!("{ip} {name}\n")).expect("hosts file");
        // SIGHUP: dnsmasq reads its hosts files again and empties its cache.
        let pid = self.child.pid().to_string();
        let status = Command::new("kill").args(["-HUP", &pid]).status();
        assert!(status.is_ok_and(|s| s.success()), "dnsmasq is not running");
        std::thread::sleep(Duration::from_millis(200));
    }
}
