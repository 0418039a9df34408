//! The self-check: is this node's data plane able to serve? The HA side does not know the data
//! plane; it asks through [`DataPlaneHealth`], which the data plane implements (or which a plain
//! closure implements, for a data plane that keeps its health in a flag). [`HttpProbe`] is the
//! stand-in used by `appliance ha-agent` and the tests: an HTTP GET to the local listener.

use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "fit", content = "reason")]
pub enum Fitness {
    #[serde(rename = "yes")]
    Fit,
    /// Why not, for the status page and the logs (e.g. "no healthy backend in pool web").
    #[serde(rename = "no")]
    Unfit(String),
}

impl Fitness {
    pub fn is_fit(&self) -> bool {
        matches!(self, Fitness::Fit)
    }
}

/// What the data plane tells the HA side. Called once per heartbeat interval, with that interval
/// as its time limit: it should answer from state the data plane already keeps (listeners up,
/// healthy backends per pool) rather than do slow work.
#[async_trait]
pub trait DataPlaneHealth: Send + Sync {
    async fn fitness(&self) -> Fitness;
}

/// A data plane that keeps its health in memory can hand in a closure.
#[async_trait]
impl<F> DataPlaneHealth for F
where
    F: Fn() -> Fitness + Send + Sync,
{
    async fn fitness(&self) -> Fitness {
        self()
    }
}

/// An HTTP GET to a local URL; fit when it answers with a 2xx or 3xx status. It speaks just
/// enough HTTP/1.0 to read a status line: a client library would add a dependency and a
/// connection pool for a request a second that must not be pooled anyway.
#[derive(Clone, Debug)]
pub struct HttpProbe {
    host: String,
    port: u16,
    path: String,
    timeout: Duration,
}

impl HttpProbe {
    /// Parses `http://host[:port][/path]`.
    pub fn new(url: &str, timeout: Duration) -> Result<HttpProbe, String> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| format!("probe URL \"{url}\" must start with http://"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let (host, port) = crate::config::validate::server_address(authority, 80)
            .map_err(|e| format!("probe URL \"{url}\": {e}"))?;
        if path
            .bytes()
            .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
        {
            return Err(format!(
                "probe URL \"{url}\" has spaces or control characters"
            ));
        }
        Ok(HttpProbe {
            host,
            port,
            path: path.to_string(),
            timeout,
        })
    }

    async fn get(&self) -> Result<u16, String> {
        let mut stream = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| format!("connect to {}:{}: {e}", self.host, self.port))?;
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        let request = format!(
            "GET {} HTTP/1.0\r\nHost: {host}:{}\r\nUser-Agent: appliance-ha-probe\r\nConnection: close\r\n\r\n",
            self.path, self.port
        );
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| format!("send: {e}"))?;
        // The status line is all we need; read until it is complete.
        let mut head = Vec::with_capacity(256);
        let mut buf = [0u8; 256];
        while !head.contains(&b'\n') && head.len() < 4096 {
            let n = stream
                .read(&mut buf)
                .await
                .map_err(|e| format!("read: {e}"))?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        let line = head.split(|b| *b == b'\n').next().unwrap_or_default();
        let line = String::from_utf8_lossy(line);
        let mut words = line.split_whitespace();
        match (
            words.next(),
            words.next().and_then(|c| c.parse::<u16>().ok()),
        ) {
            (Some(v), Some(code)) if v.starts_with("HTTP/") => Ok(code),
            _ => Err(format!("not an HTTP response: {:?}", line.trim_end())),
        }
    }
}

#[async_trait]
impl DataPlaneHealth for HttpProbe {
    async fn fitness(&self) -> Fitness {
        let target = format!("http://{}:{}{}", self.host, self.port, self.path);
        match tokio::time::timeout(self.timeout, self.get()).await {
            Ok(Ok(code)) if (200..400).contains(&code) => Fitness::Fit,
            Ok(Ok(code)) => Fitness::Unfit(format!("{target} answered {code}")),
            Ok(Err(e)) => Fitness::Unfit(format!("{target}: {e}")),
            Err(_) => Fitness::Unfit(format!("{target}: no answer in {:?}", self.timeout)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_urls_parse_or_say_why_not() {
        let p = HttpProbe::new("http://127.0.0.1:8080/healthz", Duration::from_secs(1)).unwrap();
        assert_eq!(
            (p.host.as_str(), p.port, p.path.as_str()),
            ("127.0.0.1", 8080, "/healthz")
        );
        let p = HttpProbe::new("http://[::1]", Duration::from_secs(1)).unwrap();
        assert_eq!((p.host.as_str(), p.port, p.path.as_str()), ("::1", 80, "/"));
        assert!(HttpProbe::new("https://x/", Duration::from_secs(1)).is_err());
        assert!(HttpProbe::new("http://x:0/", Duration::from_secs(1)).is_err());
        assert!(HttpProbe::new("http://x/a b", Duration::from_secs(1)).is_err());
    }

    #[tokio::test]
    async fn a_closure_over_the_data_plane_state_is_a_health_source() {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::Arc;
        let healthy = Arc::new(AtomicBool::new(true));
        let seen = healthy.clone();
        let health: Arc<dyn DataPlaneHealth> = Arc::new(move || {
            if seen.load(Ordering::SeqCst) {
                Fitness::Fit
            } else {
                Fitness::Unfit("no healthy backend in pool web".into())
            }
        });
        assert_eq!(health.fitness().await, Fitness::Fit);
        healthy.store(false, Ordering::SeqCst);
        assert!(!health.fitness().await.is_fit());
    }

    #[tokio::test]
    async fn probe_reads_real_status_lines() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            for status in ["200 OK", "503 Service Unavailable"] {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let reply = format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n");
                s.write_all(reply.as_bytes()).await.unwrap();
            }
        });
        let url = format!("http://127.0.0.1:{port}/health");
        let probe = HttpProbe::new(&url, Duration::from_secs(2)).unwrap();
        assert_eq!(probe.fitness().await, Fitness::Fit);
        let second = probe.fitness().await;
        assert!(
            matches!(&second, Fitness::Unfit(r) if r.contains("503")),
            "{second:?}"
        );
        server.await.unwrap();
        // Nobody listens any more.
        assert!(!probe.fitness().await.is_fit());
    }
}
