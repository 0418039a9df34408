//! nginx's `auth_basic`, `auth_basic_user_file` and `satisfy` at one level: who must give a
//! user and password from an htpasswd file, and whether that or the `allow`/`deny` rules
//! (or both) let a request in. Each setting is inherited on its own, as nginx merges them.
//!
//! ```toml
//! [[http.server.location]]
//! path = "/admin/"
//! auth = { basic = "Admin area", basic_user_file = "/etc/nginx/htpasswd", satisfy = "any" }
//! access = [{ allow = "10.0.0.0/8" }, { deny = "all" }]
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

    /// Inner settings win setting by setting.
    pub fn merged(&self, outer: &Auth) -> Auth {
        Auth {
            basic: self.basic.clone().or_else(|| outer.basic.clone()),
            basic_user_file: self
                .basic_user_file
                .clone()
                .or_else(|| outer.basic_user_file.clone()),
            satisfy: self.satisfy.or(outer.satisfy),
        }
    }
}
