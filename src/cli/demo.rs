//! `appliance demo`: the first minute with the appliance. It starts three small backends on
//! loopback, serves the bundled nginx.conf in front of them with the real data plane, sends a
//! gentle trickle of requests, and keeps a live count of which backend served how many, so the
//! smooth weighted round robin is visible at once. Requests you send yourself are counted too.

use std::io::{IsTerminal, Write};
use std::net::{SocketAddr, TcpListener as StdListener};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::compile::Options;
use crate::proxy::{self, RunOptions};

const CONFIG: &str = include_str!("demo/nginx.conf");

pub struct DemoOptions {
    pub port: u16,
    /// Requests per second the demo sends itself; 0 for none.
    pub rate: u32,
}

pub fn run(options: &DemoOptions) -> ExitCode {
    super::init_logging_at("warn");
    let port = if port_is_free(options.port) {
        options.port
    } else {
        let free = free_port();
        eprintln!("port {} is taken; using {free}", options.port);
        free
    };
    let backend_ports = [free_port(), free_port(), free_port()];
    let counts: Arc<[AtomicU64; 3]> = Arc::new(Default::default());

    let dir = std::env::temp_dir().join(format!("appliance-demo-{}", std::process::id()));
    let path = dir.join("nginx.conf");
    let text = CONFIG
        .replace("@PORT@", &port.to_string())
        .replace("@BACKEND1@", &backend_ports[0].to_string())
        .replace("@BACKEND2@", &backend_ports[1].to_string())
        .replace("@BACKEND3@", &backend_ports[2].to_string());
    if let Err(e) = std::fs::create_dir_all(&dir).and_then(|_| std::fs::write(&path, text)) {
        eprintln!(
            "appliance: cannot write the demo config in {}: {e}",
            dir.display()
        );
        return ExitCode::FAILURE;
    }
    let compiled = match super::compile(&path, &Options::default()) {
        Ok(c) => c,
        Err(failed) => {
            super::print_failure(&failed, "appliance");
            return ExitCode::FAILURE;
        }
    };

    let proxy_addr = SocketAddr::from(([127, 0, 0, 1], port));
    let side = {
        let counts = counts.clone();
        let rate = options.rate;
        std::thread::spawn(move || {
            let rt = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("appliance: cannot start the demo backends: {e}");
                    std::process::exit(1);
                }
            };
            rt.block_on(side_show(backend_ports, counts, proxy_addr, rate));
        })
    };

    println!("appliance demo: three backends behind the appliance, balanced as nginx would.");
    println!();
    println!("  proxy     http://{proxy_addr}/     (try: curl http://{proxy_addr}/)");
    for (i, p) in backend_ports.iter().enumerate() {
        println!(
            "  backend {} http://127.0.0.1:{p}/  weight {}",
            i + 1,
            [3, 2, 1][i]
        );
    }
    println!(
        "  config    {} (compiled by the nginx front end)",
        path.display()
    );
    println!();
    if options.rate > 0 {
        println!(
            "Sending {} requests a second; Ctrl-C stops the demo.",
            options.rate
        );
    }
    let reload_path = path.clone();
    let reload: proxy::signals::Reload = Arc::new(move || {
        let compiled = crate::compile::compile_file(&reload_path, &Options::default())
            .map_err(|f| *f.diagnostic)?;
        Ok(compiled.model)
    });
    let run = RunOptions {
        program: "appliance".to_string(),
        ..RunOptions::default()
    };
    let result = crate::process::run(compiled.model, &run, reload);
    drop(side);
    let _ = std::fs::remove_dir_all(&dir);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(d) => {
            eprintln!("{}", d.one_line("appliance"));
            ExitCode::FAILURE
        }
    }
}

/// The backends, the trickle of requests and the live count.
async fn side_show(ports: [u16; 3], counts: Arc<[AtomicU64; 3]>, proxy: SocketAddr, rate: u32) {
    for (i, port) in ports.into_iter().enumerate() {
        let counts = counts.clone();
        tokio::spawn(async move {
            if let Err(e) = backend(i, port, counts).await {
                eprintln!("appliance: demo backend {} stopped: {e}", i + 1);
            }
        });
    }
    if rate > 0 {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rate)));
            loop {
                tick.tick().await;
                let _ = get(proxy).await;
            }
        });
    }
    let live = std::io::stdout().is_terminal();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut last = [0u64; 3];
    loop {
        tick.tick().await;
        let now: Vec<u64> = counts.iter().map(|c| c.load(Ordering::Relaxed)).collect();
        let line = format!(
            "served by backend 1: {:>6}   backend 2: {:>6}   backend 3: {:>6}",
            now[0], now[1], now[2]
        );
        let mut out = std::io::stdout();
        if live {
            let _ = write!(out, "\r{line}");
        } else if now[..] != last[..] {
            let _ = writeln!(out, "{line}");
        }
        let _ = out.flush();
        last.copy_from_slice(&now);
    }
}

/// A backend: answers every request with its own name and counts it.
async fn backend(index: usize, port: u16, counts: Arc<[AtomicU64; 3]>) -> std::io::Result<()> {
    let listener = TcpListener::bind(("127.0.0.1", port)).await?;
    loop {
        let (mut socket, _) = listener.accept().await?;
        let counts = counts.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 8192];
            let mut read = 0;
            while !buf[..read].windows(4).any(|w| w == b"\r\n\r\n") {
                match socket.read(&mut buf[read..]).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => read += n,
                }
                if read == buf.len() {
                    return;
                }
            }
            counts[index].fetch_add(1, Ordering::Relaxed);
            let body = format!("hello from backend {}\n", index + 1);
            let response = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = socket.write_all(response.as_bytes()).await;
        });
    }
}

async fn get(addr: SocketAddr) -> std::io::Result<()> {
    let mut s = TcpStream::connect(addr).await?;
    s.write_all(b"GET / HTTP/1.0\r\nHost: demo\r\n\r\n").await?;
    let mut sink = Vec::new();
    s.read_to_end(&mut sink).await?;
    Ok(())
}

fn port_is_free(port: u16) -> bool {
    StdListener::bind(("127.0.0.1", port)).is_ok()
}

fn free_port() -> u16 {
    StdListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(18_181)
}
