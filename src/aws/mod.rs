//! What every AWS caller shares: building SDK clients (with an endpoint override for moto and
//! other stand-ins) and turning SDK errors into sentences that say which call failed and which
//! IAM permission is missing.

pub mod iam;
pub mod imds;

use std::fmt;

use aws_sdk_ec2::error::{ProvideErrorMetadata, SdkError};

/// Where and how to reach AWS.
#[derive(Clone, Debug, Default)]
pub struct Endpoint {
    /// Region; when unset, the SDK's normal chain (environment, profile, IMDS) decides.
    pub region: Option<String>,
    /// A URL that replaces every service endpoint (moto's server in tests).
    pub url: Option<String>,
}

/// Loads the SDK configuration with the normal credential chain.
pub async fn sdk_config(endpoint: &Endpoint) -> aws_config::SdkConfig {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
    if let Some(region) = &endpoint.region {
        loader = loader.region(aws_config::Region::new(region.clone()));
    }
    if let Some(url) = &endpoint.url {
        loader = loader.endpoint_url(url.clone());
    }
    loader.load().await
}

pub async fn ec2_client(endpoint: &Endpoint) -> aws_sdk_ec2::Client {
    aws_sdk_ec2::Client::new(&sdk_config(endpoint).await)
}

pub async fn iam_client(endpoint: &Endpoint) -> aws_sdk_iam::Client {
    aws_sdk_iam::Client::new(&sdk_config(endpoint).await)
}

/// A failed AWS call, explained.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AwsError {
    /// `service:Operation`, which is also the IAM action it needs.
    pub call: String,
    /// The resource the call was about, when there is one.
    pub resource: Option<String>,
    pub kind: AwsErrorKind,
    /// The service's own code and message, or the transport's.
    pub detail: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AwsErrorKind {
    /// The credentials lack the permission named by `call`.
    PermissionDenied,
    /// No credentials could be found.
    NoCredentials,
    /// The resource does not exist.
    NotFound,
    /// The endpoint could not be reached or did not answer.
    Unreachable,
    /// The service refused the request for another reason.
    Service,
}

impl fmt::Display for AwsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AWS call {} failed", self.call)?;
        if let Some(r) = &self.resource {
            write!(f, " for {r}")?;
        }
        match self.kind {
            AwsErrorKind::PermissionDenied => write!(
                f,
                ": permission denied; the role or user needs the IAM permission \"{}\"",
                self.call
            )?,
            AwsErrorKind::NoCredentials => f.write_str(
                ": no AWS credentials were found (environment, ~/.aws, or an instance profile)",
            )?,
            AwsErrorKind::NotFound => f.write_str(": not found")?,
            AwsErrorKind::Unreachable => f.write_str(": the endpoint could not be reached")?,
            AwsErrorKind::Service => {}
        }
        write!(f, " ({})", self.detail)
    }
}

impl std::error::Error for AwsError {}

/// The HTTP status of a raw SDK response.
pub trait RawStatus {
    fn status_code(&self) -> Option<u16>;
}

impl RawStatus for aws_sdk_ec2::config::http::HttpResponse {
    fn status_code(&self) -> Option<u16> {
        Some(self.status().as_u16())
    }
}

/// Explains an SDK error. `call` is `service:Operation`, e.g. `ec2:DescribeInstances`.
pub fn explain<E, R>(call: &str, resource: Option<&str>, err: &SdkError<E, R>) -> AwsError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: fmt::Debug + RawStatus,
{
    let (kind, detail) = match err {
        SdkError::ServiceError(service) => {
            let e = service.err();
            let code = e.code().unwrap_or("Unknown");
            let message = e.message().unwrap_or("");
            // A 403 whose body the SDK could not read (moto's IAM, some proxies) is a denial.
            let forbidden = e.code().is_none() && service.raw().status_code() == Some(403);
            let kind = if is_denied(code) || forbidden {
                AwsErrorKind::PermissionDenied
            } else if code.contains("NotFound") || code.contains("NoSuchEntity") {
                AwsErrorKind::NotFound
            } else {
                AwsErrorKind::Service
            };
            let detail = match (e.code(), service.raw().status_code()) {
                (None, Some(status)) => format!("HTTP {status}, an error the SDK could not read"),
                _ => format!("{code}: {message}"),
            };
            (kind, detail)
        }
        SdkError::DispatchFailure(d) => {
            // Credential providers fail inside the dispatch too (an unreachable IMDS, for one).
            let text = error_chain(err);
            let lower = text.to_ascii_lowercase();
            let kind = if lower.contains("credential") || format!("{d:?}").contains("ProviderError")
            {
                AwsErrorKind::NoCredentials
            } else {
                AwsErrorKind::Unreachable
            };
            (kind, text)
        }
        SdkError::TimeoutError(_) => (AwsErrorKind::Unreachable, "timed out".to_string()),
        other => {
            let text = error_chain(other);
            let kind = if text.to_ascii_lowercase().contains("credential") {
                AwsErrorKind::NoCredentials
            } else {
                AwsErrorKind::Service
            };
            (kind, text)
        }
    };
    AwsError {
        call: call.to_string(),
        resource: resource.map(str::to_string),
        kind,
        detail,
    }
}

/// The error codes AWS services use for a missing permission.
fn is_denied(code: &str) -> bool {
    matches!(
        code,
        "UnauthorizedOperation" | "AccessDenied" | "AccessDeniedException" | "Forbidden"
    )
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
