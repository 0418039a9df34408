//! Who this instance is, from the instance metadata service (IMDSv2: a session token first,
//! then the reads, as the SDK's client does it).

use std::fmt;

/// The facts the HA side needs about the instance it runs on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub instance_id: String,
    pub region: String,
    /// The MAC of the primary interface (device 0), which the VIP goes on.
    pub mac: String,
    pub eni_id: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImdsError {
    /// The metadata path that failed, or the endpoint when the client could not be built.
    pub path: String,
    pub detail: String,
}

impl fmt::Display for ImdsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "instance metadata {}: {}", self.path, self.detail)
    }
}

impl std::error::Error for ImdsError {}

/// A metadata client, on `endpoint` when given (tests, unusual networks), else the SDK's
/// default (169.254.169.254, or `AWS_EC2_METADATA_SERVICE_ENDPOINT`).
pub fn client(endpoint: Option<&str>) -> Result<aws_config::imds::Client, ImdsError> {
    let mut builder = aws_config::imds::Client::builder();
    if let Some(url) = endpoint {
        builder = builder.endpoint(url).map_err(|e| ImdsError {
            path: url.to_string(),
            detail: format!("not a usable endpoint: {e}"),
        })?;
    }
    Ok(builder.build())
}

async fn get(client: &aws_config::imds::Client, path: &str) -> Result<String, ImdsError> {
    let value = client.get(path).await.map_err(|e| ImdsError {
        path: path.to_string(),
        detail: error_chain(&e),
    })?;
    let value = value.as_ref().trim().to_string();
    if value.is_empty() {
        return Err(ImdsError {
            path: path.to_string(),
            detail: "empty answer".to_string(),
        });
    }
    Ok(value)
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Reads instance id, region, primary MAC and that interface's ENI id.
pub async fn identity(endpoint: Option<&str>) -> Result<Identity, ImdsError> {
    let client = client(endpoint)?;
    let instance_id = get(&client, "/latest/meta-data/instance-id").await?;
    let region = get(&client, "/latest/meta-data/placement/region").await?;
    let mac = get(&client, "/latest/meta-data/mac").await?;
    if !mac.bytes().all(|b| b.is_ascii_hexdigit() || b == b':') {
        return Err(ImdsError {
            path: "/latest/meta-data/mac".to_string(),
            detail: format!("\"{mac}\" is not a MAC address"),
        });
    }
    let eni_path = format!("/latest/meta-data/network/interfaces/macs/{mac}/interface-id");
    let eni_id = get(&client, &eni_path).await?;
    Ok(Identity {
        instance_id,
        region,
        mac,
        eni_id,
    })
}
