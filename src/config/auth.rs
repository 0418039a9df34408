//! nginx's `auth_basic`, `auth_basic_user_file`, `auth_request`, `auth_request_set` and
//! `satisfy` at one level: who must give a user and password from an htpasswd file, which
//! URI a subrequest asks whether the request may go on, and whether those or the
//! `allow`/`deny` rules (or all of them) let a request in. Each setting is inherited on its
//! own, as nginx merges them.
//!
//! ```toml
//! [[http.server.location]]
//! path = "/admin/"
//! auth = { basic = "Admin area", basic_user_file = "/etc/nginx/htpasswd", satisfy = "any" }
//! access = [{ allow = "10.0.0.0/8" }, { deny = "all" }]
//!
//! [[http.server.location]]
//! path = "/app/"
//! auth = { request = "/oauth2/auth", request_set = [{ variable = "user", value = "$upstream_http_x_user" }] }
//! ```

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Auth {
    /// `auth_basic`: the realm, a template; `"off"` (as written or as evaluated) turns
    /// authentication off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub basic: Option<String>,
    /// `auth_basic_user_file`: the htpasswd file, a template, read on every request (as nginx
    /// reads it), so that a changed file needs no reload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub basic_user_file: Option<String>,
    /// `satisfy`: `all` (nginx's default) or `any`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub satisfy: Option<Satisfy>,
    /// `auth_request`: the URI of the subrequest, in this server; `"off"` turns it off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<String>,
    /// `auth_request_set`, in order: variables set from the subrequest's once it is done
    /// (inherited as a whole list, as nginx merges it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_set: Option<Vec<RequestSet>>,
}

/// `auth_request_set $variable value`: `value` is a template evaluated in the subrequest
/// (its `$upstream_http_*`, `$upstream_status`, ...).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestSet {
    /// The name, without its `$`.
    pub variable: String,
    pub value: String,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Satisfy {
    /// The access rules and authentication must both let the request in.
    #[default]
    All,
    /// Either is enough.
    Any,
}

impl Auth {
    pub fn is_empty(&self) -> bool {
        *self == Auth::default()
    }

    /// The subrequest's URI, unless there is none or it is `off`.
    pub fn request_uri(&self) -> Option<&str> {
        self.request.as_deref().filter(|uri| *uri != "off")
    }

    /// Inner settings win setting by setting.
    pub fn merged(&self, outer: &Auth) -> Auth {
        Auth {
            basic: self.basic.clone().or_else(|| outer.basic.clone()),
            basic_user_file: self
                .basic_user_file
                .clone()
                .or_else(|| outer.basic_user_file.clone()),
            satisfy: self.satisfy.or(outer.satisfy),
            request: self.request.clone().or_else(|| outer.request.clone()),
            request_set: self
                .request_set
                .clone()
                .or_else(|| outer.request_set.clone()),
        }
    }
}
