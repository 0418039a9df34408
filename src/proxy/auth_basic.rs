//! nginx's auth_basic module (ngx_http_auth_basic_handler), one handler of the access phase
//! ([`access_phase`](super::access_phase)):
//!
//! - The credentials are `Authorization: Basic` (the word in any case, then spaces), base64 as
//!   nginx decodes it, a user before the first `:` that is not empty; anything else is "no
//!   user/password was provided": 401 with `WWW-Authenticate: Basic realm="..."`.
//! - The user file is read on every request, as nginx reads it: a line `user:hash[:...]`
//!   (a `#` or CR at its start makes it a comment) whose user is the given one exactly; the
//!   first such line decides. A missing file is 403; one that cannot be read, 500.
//! - The hash is checked by [`crypt`](super::crypt); a mismatch, or a user no line names, is
//!   401 again.
//! - A realm of `off` (as written or as evaluated) turns authentication off: the handler
//!   declines.

use std::os::unix::ffi::OsStrExt;

use super::access_phase::Said;
use super::client_request::ClientRequest;
use super::error_context::{os_error, InRequest};
use super::vars::{eval_to_vec, RequestVars};
use crate::compile::diag::Diagnostic;
use crate::config::template::Template;
use crate::config::{Auth, Defined, LogLevel, Origin};

/// `auth_basic` and `auth_basic_user_file`, when both apply.
#[derive(Debug)]
pub struct BasicConf {
    realm: Template,
    user_file: Template,
}

impl BasicConf {
    /// `None` unless the merged settings name both a realm and a file.
    pub fn build(
        auth: &Auth,
        defined: Defined<'_>,
        at: Option<&Origin>,
    ) -> Result<Option<BasicConf>, Diagnostic> {
        let (Some(realm), Some(user_file)) = (&auth.basic, &auth.basic_user_file) else {
            return Ok(None);
        };
        let template = |text: &str| super::tables::template(text, defined, at);
        Ok(Some(BasicConf {
            realm: template(realm)?,
            user_file: template(user_file)?,
        }))
    }
}

/// Where the handler stands once what needs no file is decided.
pub enum Step {
    Done(Said),
    /// The password is to be checked against the user file: [`PasswordCheck::run`], off the
    /// event loop (it reads the file and may hash for milliseconds).
    Check(PasswordCheck),
}

/// ngx_http_auth_basic_handler up to the file.
pub fn authenticate(auth: &BasicConf, vars: &RequestVars<'_>) -> Step {
    let realm = eval_to_vec(&auth.realm, vars);
    if realm == b"off" {
        return Step::Done(Said::Declined);
    }
    let Some(credentials) = Credentials::of(vars.request) else {
        InRequest::new(vars).log(
            LogLevel::Info,
            format_args!("no user/password was provided for basic authentication"),
        );
        return Step::Done(challenge(&realm));
    };
    let mut path = eval_to_vec(&auth.user_file, vars);
    // nginx opens it as a C string: up to the first NUL.
    if let Some(nul) = path.iter().position(|&b| b == 0) {
        path.truncate(nul);
    }
    Step::Check(PasswordCheck {
        path,
        credentials,
        realm,
    })
}

fn challenge(realm: &[u8]) -> Said {
    let mut value = b"Basic realm=\"".to_vec();
    value.extend_from_slice(realm);
    value.push(b'"');
    Said::Unauthorized(Some(value))
}

/// A password to check against the user file.
pub struct PasswordCheck {
    path: Vec<u8>,
    credentials: Credentials,
    realm: Vec<u8>,
}

impl PasswordCheck {
    /// Reads the file and checks the password (blocking): what the handler says, and the
    /// error to log (nginx's words) when it refused.
    pub fn run(self) -> (Said, Option<(LogLevel, String)>) {
        let shown = String::from_utf8_lossy(&self.path).into_owned();
        let text = match std::fs::read(std::ffi::OsStr::from_bytes(&self.path)) {
            Ok(text) => text,
            Err(e) => {
                let (said, level) = match e.kind() {
                    std::io::ErrorKind::NotFound => (Said::Forbidden, LogLevel::Error),
                    _ => (Said::Failed, LogLevel::Crit),
                };
                let why = format!("open() \"{shown}\" failed ({})", os_error(&e));
                return (said, Some((level, why)));
            }
        };
        let user = String::from_utf8_lossy(self.credentials.user()).into_owned();
        let Some(stored) = stored_hash(&text, self.credentials.user()) else {
            let why = format!("user \"{user}\" was not found in \"{shown}\"");
            return (challenge(&self.realm), Some((LogLevel::Error, why)));
        };
        if super::crypt::matches(self.credentials.password(), stored) {
            return (Said::Ok, None);
        }
        let why = format!("user \"{user}\": password mismatch");
        (challenge(&self.realm), Some((LogLevel::Error, why)))
    }
}

/// The hash of the first line of an htpasswd file that names `user`, read as nginx reads it:
/// lines that start with `#` or CR are skipped, the user must be followed by `:`, and the hash
/// ends at the next LF, CR or `:`.
fn stored_hash<'t>(text: &'t [u8], user: &[u8]) -> Option<&'t [u8]> {
    for line in text.split(|&b| b == b'\n') {
        if matches!(line.first(), Some(b'#' | b'\r')) {
            continue;
        }
        let Some(rest) = line.strip_prefix(user).and_then(|r| r.strip_prefix(b":")) else {
            continue;
        };
        let end = rest
            .iter()
            .position(|&b| b == b'\r' || b == b':')
            .unwrap_or(rest.len());
        return Some(&rest[..end]);
    }
    None
}

/// The user and password of `Authorization: Basic ...` (ngx_http_auth_basic_user), which
/// `$remote_user` also shows.
pub struct Credentials {
    decoded: Vec<u8>,
    colon: usize,
}

impl Credentials {
    pub fn of(request: ClientRequest<'_>) -> Option<Credentials> {
        let value = request.header("authorization")?;
        if value.len() < 6 || !value[..6].eq_ignore_ascii_case(b"Basic ") {
            return None;
        }
        // Spaces are skipped, not tabs.
        let rest = &value[6..];
        let encoded = &rest[rest.iter().take_while(|&&b| b == b' ').count()..];
        if encoded.is_empty() {
            return None;
        }
        let decoded = super::crypt::decode_base64(encoded)?;
        let colon = decoded.iter().position(|&b| b == b':')?;
        if colon == 0 {
            return None;
        }
        Some(Credentials { decoded, colon })
    }

    pub fn user(&self) -> &[u8] {
        &self.decoded[..self.colon]
    }

    pub fn password(&self) -> &[u8] {
        &self.decoded[self.colon + 1..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_line_naming_the_user_decides() {
        let file = b"# alice:nope\nbob:{PLAIN}b\nalice:{PLAIN}a:comment\nalice:{PLAIN}x\n\r\n";
        assert_eq!(stored_hash(file, b"alice"), Some(&b"{PLAIN}a"[..]));
        assert_eq!(stored_hash(file, b"bob"), Some(&b"{PLAIN}b"[..]));
        assert_eq!(stored_hash(file, b"ali"), None);
        assert_eq!(
            stored_hash(b"carol:{PLAIN}c\r\n", b"carol"),
            Some(&b"{PLAIN}c"[..])
        );
        assert_eq!(
            stored_hash(b"dave:{PLAIN}d", b"dave"),
            Some(&b"{PLAIN}d"[..])
        );
    }
}
