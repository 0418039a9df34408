//! The admin listener: status, metrics and the health endpoint load balancers and DNS check.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::origin::Origin;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Admin {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<Origin>,
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Required (as a bearer token) when `listen` is not a loopback address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
}

pub fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9901))
}

impl Default for Admin {
    fn default() -> Self {
        Admin {
            origin: None,
            listen: default_listen(),
            token: None,
            token_file: None,
        }
    }
}
