//! `worker_cpu_affinity` and `worker_priority` from a real nginx.conf: the appliance's worker
//! threads get the CPUs and the nice value Debian's nginx gives its worker processes from the
//! same config, read back from /proc; and a reload that changes them starts a new process
//! whose threads have the new ones, as nginx's reload starts new workers.

mod ops_common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use ops_common::*;

/// A config proxying HTTP and TCP on `http` and `tcp` to `backend`, with `placement` in main.
fn conf(pid: &Path, err: &Path, placement: &str, http: u16, tcp: u16, backend: u16) -> String {
    format!(
        "pid {};\nerror_log {} info;\nworker_processes 2;\n{placement}\nevents {{}}\n\
         http {{\n  access_log off;\n  upstream pool {{ server 127.0.0.1:{backend}; }}\n\
           server {{ listen 127.0.0.1:{http}; location / {{ proxy_pass http://pool; }} }}\n}}\n\
         stream {{\n  server {{ listen 127.0.0.1:{tcp}; proxy_pass 127.0.0.1:{backend}; }}\n}}\n",
        pid.display(),
        err.display()
    )
}

/// A thread's or process's allowed CPUs (as Linux lists them, "0-1", "1") and nice value.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Placed {
    cpus: String,
    nice: i32,
}

fn placed(task: &Path) -> Option<Placed> {
    let status = std::fs::read_to_string(task.join("status")).ok()?;
    let cpus = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))?
        .trim()
        .to_string();
    let stat = std::fs::read_to_string(task.join("stat")).ok()?;
    // Fields after "pid (comm) ": state is field 3, nice field 19.
    let after = &stat[stat.rfind(')')? + 2..];
    let nice = after.split(' ').nth(16)?.parse().ok()?;
    Some(Placed { cpus, nice })
}

/// The appliance's threads by name, each name with the placements of its threads.
fn threads(pid: i32) -> BTreeMap<String, Vec<Placed>> {
    let mut by_name: BTreeMap<String, Vec<Placed>> = BTreeMap::new();
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("the appliance's threads");
    for task in tasks.flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if let Some(p) = placed(&task.path()) {
            by_name.entry(comm.trim().to_string()).or_default().push(p);
        }
    }
    by_name
}

/// The placements of nginx's worker processes: the master's children named as workers.
fn nginx_workers(master: i32) -> Vec<Placed> {
    let mut workers: Vec<Placed> = std::fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter(|e| {
            let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
            let cmdline = std::fs::read_to_string(e.path().join("cmdline")).unwrap_or_default();
            // Fields after "pid (comm) ": the parent is field 4.
            let parent = stat
                .rfind(')')
                .and_then(|i| stat[i + 2..].split(' ').nth(1)?.parse::<i32>().ok());
            parent == Some(master) && cmdline.starts_with("nginx: worker process")
        })
        .filter_map(|e| placed(&e.path()))
        .collect();
    workers.sort();
    workers
}

fn worker_threads(pid: i32) -> Vec<Placed> {
    let threads = threads(pid);
    let mut workers: Vec<Placed> = threads
        .iter()
        .filter(|(name, _)| name.starts_with("worker-"))
        .flat_map(|(_, p)| p.clone())
        .collect();
    workers.sort();
    workers
}

/// One round trip through the TCP listener.
fn through_tcp(port: u16) -> String {
    let mut s = TcpStream::connect(local(port)).expect("the stream listener");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

#[test]
fn worker_threads_are_placed_as_nginx_places_its_workers() {
    let dir = Scratch::new("workers");
    let backend = Backend::start_anywhere("A");
    let placement = "worker_priority 5;\nworker_cpu_affinity auto;";
    let (n_http, n_tcp) = (free_port(), free_port());
    let n_pid = dir.path("nginx.pid");
    // Debian builds nginx's stream module as a dynamic one.
    let n_conf = dir.write(
        "nginx.conf",
        &("load_module /usr/lib/nginx/modules/ngx_stream_module.so;\n".to_string()
            + &conf(
                &n_pid,
                &dir.path("nginx.err"),
                placement,
                n_http,
                n_tcp,
                backend.port,
            )),
    );
    let _nginx = nginx(&n_conf, n_pid.clone());
    let (a_http, a_tcp) = (free_port(), free_port());
    let a_pid = dir.path("app.pid");
    let a_conf = dir.write(
        "app.conf",
        &conf(
            &a_pid,
            &dir.path("app.err"),
            placement,
            a_http,
            a_tcp,
            backend.port,
        ),
    );
    let app = appliance(
        &["run", "-c", &a_conf.to_string_lossy()],
        Some(a_pid.clone()),
        &dir.path("stderr"),
    );
    for port in [n_http, a_http] {
        assert!(
            wait_until(Duration::from_secs(10), || get(local(port), "/", &[])
                .is_ok_and(|(s, _)| s == 200)),
            "port {port} does not answer"
        );
    }
    let master = read_pid(&n_pid).expect("nginx's pid");
    let theirs = nginx_workers(master);
    assert_eq!(theirs.len(), 2, "nginx's workers: {theirs:?}");
    assert!(theirs.iter().all(|w| w.nice == 5), "{theirs:?}");

    let pid = app.pid().expect("the appliance's pid");
    let ours = worker_threads(pid);
    assert_eq!(
        ours,
        theirs,
        "the worker threads against nginx's workers; all threads: {:?}",
        threads(pid)
    );
    // Threads that are not workers stay as the process started, as nginx's master does.
    let main = placed(Path::new(&format!("/proc/{pid}/task/{pid}"))).unwrap();
    let nginx_master = placed(Path::new(&format!("/proc/{master}"))).unwrap();
    assert_eq!(main, nginx_master);

    // Stream connections are served by the same worker threads, as by nginx's workers: no
    // other thread serves them, and none appeared for them.
    let before = threads(pid);
    assert!(through_tcp(a_tcp).contains("A"), "the stream proxy answers");
    assert_eq!(
        threads(pid).keys().collect::<Vec<_>>(),
        before.keys().collect::<Vec<_>>()
    );
    assert!(!before.contains_key("stream"), "threads: {before:?}");
    let log = std::fs::read_to_string(dir.path("app.err")).unwrap_or_default();
    assert!(
        log.contains("sched_setaffinity(): using cpu #0"),
        "the error log says where workers run, as nginx's does:\n{log}"
    );
}

#[test]
fn a_reload_that_changes_them_starts_workers_with_the_new_ones() {
    let dir = Scratch::new("workers-reload");
    let backend = Backend::start_anywhere("A");
    let (http, tcp) = (free_port(), free_port());
    let pid_file = dir.path("app.pid");
    let err = dir.path("app.err");
    let write = |placement: &str| {
        dir.write(
            "app.conf",
            &conf(&pid_file, &err, placement, http, tcp, backend.port),
        )
    };
    let conf_path = write("worker_priority 3;");
    let app = appliance(
        &["run", "-c", &conf_path.to_string_lossy()],
        Some(pid_file.clone()),
        &dir.path("stderr"),
    );
    assert!(wait_until(Duration::from_secs(10), || get(
        local(http),
        "/",
        &[]
    )
    .is_ok_and(|(s, _)| s == 200)));
    // Signalled only once it has written its pid file and started its workers: a HUP that
    // comes before the process handles it would end it.
    let mut first = 0;
    assert!(wait_until(Duration::from_secs(10), || {
        first = read_pid(&pid_file).unwrap_or(0);
        first != 0 && worker_threads(first).len() == 2
    }));
    assert_eq!(Some(first), app.pid());
    assert!(worker_threads(first).iter().all(|w| w.nice == 3));

    write("worker_priority 7;");
    assert!(kill(first, libc::SIGHUP));
    assert!(
        wait_until(Duration::from_secs(15), || !alive(first)),
        "the old process did not stop; error log:\n{}",
        std::fs::read_to_string(&err).unwrap_or_default()
    );
    let second = read_pid(&pid_file).expect("the new process wrote the pid file");
    assert_ne!(second, first);
    let workers = worker_threads(second);
    assert_eq!(workers.len(), 2, "{:?}", threads(second));
    assert!(workers.iter().all(|w| w.nice == 7), "{workers:?}");
    assert_eq!(get(local(http), "/", &[]).map(|(s, _)| s).ok(), Some(200));
}
