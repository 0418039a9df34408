//! Reading the instance's user data through IMDSv2 (a session token first, then the GET), with
//! the SDK's IMDS client, and deciding where IMDS is.

use std::path::Path;
use std::time::{Duration, Instant};

use aws_config::imds::client::error::ImdsError;
use aws_config::imds::Client;

/// The kernel command-line parameter that points first boot at another IMDS (tests, qemu).
pub const CMDLINE_PARAMETER: &str = "appliance.imds_endpoint";

/// What IMDS said about the user data.
#[derive(Debug, PartialEq, Eq)]
pub enum Fetched {
    UserData(String),
    /// IMDS answered, and the instance has no user data (404).
    NoUserData,
    /// IMDS did not answer, refused the token, or answered with an error; why.
    Unreachable(String),
}

/// Where IMDS is: `explicit` (a command-line flag) wins, then `appliance.imds_endpoint=` on the
/// kernel command line, then the first line of `endpoint_file`; `None` leaves it to the SDK
/// (`AWS_EC2_METADATA_SERVICE_ENDPOINT`, then http://169.254.169.254).
pub fn endpoint(explicit: Option<&str>, cmdline: &str, endpoint_file: &Path) -> Option<String> {
    if let Some(e) = explicit {
        return Some(e.to_string());
    }
    let prefix = format!("{CMDLINE_PARAMETER}=");
    if let Some(e) = cmdline
        .split_whitespace()
        .find_map(|word| word.strip_prefix(prefix.as_str()))
    {
        return Some(e.to_string());
    }
    std::fs::read_to_string(endpoint_file)
        .ok()
        .and_then(|text| text.lines().next().map(|l| l.trim().to_string()))
        .filter(|l| !l.is_empty())
}

/// Fetches `/latest/user-data`, retrying for up to `patience` while IMDS does not answer (the
/// network may still be coming up).
pub async fn fetch_user_data(endpoint: Option<&str>, patience: Duration) -> Fetched {
    let mut builder = Client::builder()
        .connect_timeout(Duration::from_secs(1))
        .read_timeout(Duration::from_secs(5))
        .operation_attempt_timeout(Duration::from_secs(5))
        .operation_timeout(Duration::from_secs(15))
        .max_attempts(3);
    if let Some(e) = endpoint {
        builder = match builder.endpoint(e) {
            Ok(b) => b,
            Err(err) => return Fetched::Unreachable(format!("bad IMDS endpoint \"{e}\": {err}")),
        };
    }
    let client = builder.build();
    let deadline = Instant::now() + patience;
    loop {
        match client.get("/latest/user-data").await {
            Ok(text) => return Fetched::UserData(text.as_ref().to_string()),
            Err(ImdsError::ErrorResponse(response))
                if response.response().status().as_u16() == 404 =>
            {
                return Fetched::NoUserData
            }
            Err(err) => {
                let why = describe(&err);
                if Instant::now() >= deadline {
                    return Fetched::Unreachable(why);
                }
                tracing::debug!("IMDS not ready: {why}");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

fn describe(err: &ImdsError) -> String {
    if let ImdsError::ErrorResponse(response) = err {
        return format!(
            "IMDS answered GET /latest/user-data with status {}",
            response.response().status().as_u16()
        );
    }
    let mut text = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_precedence() {
        let none = Path::new("/nonexistent/imds-endpoint");
        let cmdline =
            "root=LABEL=x console=ttyS0 appliance.imds_endpoint=http://10.0.2.100:80 quiet";
        assert_eq!(
            endpoint(Some("http://a"), cmdline, none).as_deref(),
            Some("http://a")
        );
        assert_eq!(
            endpoint(None, cmdline, none).as_deref(),
            Some("http://10.0.2.100:80")
        );
        assert_eq!(endpoint(None, "root=/dev/vda", none), None);
        let dir = std::env::temp_dir().join(format!("imds-endpoint-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("imds-endpoint");
        std::fs::write(&file, "http://127.0.0.1:1234\n# comment\n").unwrap();
        assert_eq!(
            endpoint(None, "quiet", &file).as_deref(),
            Some("http://127.0.0.1:1234")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn nothing_listening_is_unreachable_not_an_error() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap();
        let fetched =
            fetch_user_data(Some(&format!("http://127.0.0.1:{port}")), Duration::ZERO).await;
        assert!(matches!(fetched, Fetched::Unreachable(_)), "{fetched:?}");
    }
}
