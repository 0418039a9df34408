//! nginx's access phase: `allow`/`deny`, `auth_basic`, then `auth_request`, combined as
//! `satisfy` says (ngx_http_core_access_phase and ngx_http_core_post_access_phase).
//!
//! The handlers run in that order (the reverse of their modules' order in nginx's build), and
//! each says OK, declines, or refuses with 403, 401 or 500:
//! - With `satisfy all` (the default) a refusal ends the phase at once, before the handlers
//!   after it run: a client the rules deny is never asked for a password, nor is a
//!   subrequest made for it.
//! - With `satisfy any` the first OK lets the request in, and the handlers after it do not
//!   run. A 403 or 401 is remembered and the next handler runs; when none says OK the
//!   request is refused with what was remembered, a 401 winning over a 403. A 500 still ends
//!   the phase at once.
//! - A handler that declines (no rules, authentication off) counts for neither.
//!
//! Every 401 brings its `WWW-Authenticate` challenge, and all of them go out with the
//! refusal, in order. An OK under `satisfy any` drops them.

use super::auth_basic::BasicConf;
use crate::compile::diag::Diagnostic;
use crate::config::template::Template;
use crate::config::{Auth, Defined, Origin, Satisfy};

/// A location's authentication: `auth_basic` (when both it and its user file are set),
/// `auth_request`, and `satisfy`.
#[derive(Debug)]
pub struct AuthConf {
    pub basic: Option<BasicConf>,
    pub request: Option<AuthRequestConf>,
    pub satisfy: Satisfy,
}

/// `auth_request` and the location's `auth_request_set`s.
#[derive(Debug)]
pub struct AuthRequestConf {
    /// The subrequest's URI, as written: nginx neither normalizes nor splits off arguments.
    pub uri: Vec<u8>,
    /// Variables given values evaluated in the subrequest once it is done.
    pub set: Vec<(std::sync::Arc<str>, Template)>,
}

impl AuthConf {
    /// `None` when the location authenticates neither way (`satisfy` alone changes nothing:
    /// the rules are then the only handler).
    pub fn build(
        auth: &Auth,
        defined: Defined<'_>,
        at: Option<&Origin>,
    ) -> Result<Option<AuthConf>, Diagnostic> {
        let basic = BasicConf::build(auth, defined, at)?;
        let request = match auth.request_uri() {
            Some(uri) => {
                let template = |text: &str| super::tables::template(text, defined, at);
                let set = auth.request_set.iter().flatten();
                let set = set
                    .map(|s| Ok((s.variable.as_str().into(), template(&s.value)?)))
                    .collect::<Result<_, Diagnostic>>()?;
                Some(AuthRequestConf {
                    uri: uri.as_bytes().to_vec(),
                    set,
                })
            }
            None => None,
        };
        if basic.is_none() && request.is_none() {
            return Ok(None);
        }
        Ok(Some(AuthConf {
            basic,
            request,
            satisfy: auth.satisfy.unwrap_or_default(),
        }))
    }
}

/// What one handler of the phase said.
#[derive(Debug, PartialEq, Eq)]
pub enum Said {
    /// It has nothing to say about this request (nginx's NGX_DECLINED).
    Declined,
    Ok,
    Forbidden,
    /// 401, with the challenge to send, if any.
    Unauthorized(Option<Vec<u8>>),
    /// 500.
    Failed,
}

impl Said {
    /// What `allow`/`deny` say, from [`AccessRules::decide`](super::access::AccessRules::decide):
    /// no rule that holds is a decline.
    pub fn of_rules(decision: Option<bool>) -> Said {
        match decision {
            None => Said::Declined,
            Some(true) => Said::Ok,
            Some(false) => Said::Forbidden,
        }
    }
}

/// How the phase ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Access {
    Allowed,
    /// 403.
    Forbidden,
    /// 401, with these `WWW-Authenticate` values, in order.
    Unauthorized(Vec<Vec<u8>>),
    /// 500.
    Failed,
}

/// The phase as its handlers report in: [`AccessPhase::hear`] each, in order, until it gives
/// a verdict; [`AccessPhase::end`] after the last.
#[derive(Debug)]
pub struct AccessPhase {
    satisfy: Satisfy,
    /// `satisfy any`'s remembered refusal (nginx's `r->access_code`).
    refused: Option<u16>,
    challenges: Vec<Vec<u8>>,
}

impl AccessPhase {
    pub fn new(satisfy: Satisfy) -> AccessPhase {
        AccessPhase {
            satisfy,
            refused: None,
            challenges: Vec::new(),
        }
    }

    pub fn satisfy(&self) -> Satisfy {
        self.satisfy
    }

    /// Whether the handlers after this one still run: `Some` is the phase's verdict.
    pub fn hear(&mut self, said: Said) -> Option<Access> {
        if let Said::Unauthorized(Some(challenge)) = &said {
            self.challenges.push(challenge.clone());
        }
        match (self.satisfy, said) {
            (_, Said::Declined) | (Satisfy::All, Said::Ok) => None,
            (Satisfy::Any, Said::Ok) => Some(Access::Allowed),
            (Satisfy::All, Said::Forbidden) => Some(Access::Forbidden),
            (Satisfy::All, Said::Unauthorized(_)) => {
                Some(Access::Unauthorized(std::mem::take(&mut self.challenges)))
            }
            (Satisfy::Any, Said::Forbidden) => {
                self.refused.get_or_insert(403);
                None
            }
            (Satisfy::Any, Said::Unauthorized(_)) => {
                self.refused = Some(401);
                None
            }
            (_, Said::Failed) => Some(Access::Failed),
        }
    }

    /// The verdict once every handler has been heard.
    pub fn end(self) -> Access {
        match self.refused {
            None => Access::Allowed,
            Some(401) => Access::Unauthorized(self.challenges),
            Some(_) => Access::Forbidden,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(satisfy: Satisfy, handlers: Vec<Said>) -> (Access, usize) {
        let mut phase = AccessPhase::new(satisfy);
        let mut heard = 0;
        for said in handlers {
            heard += 1;
            if let Some(verdict) = phase.hear(said) {
                return (verdict, heard);
            }
        }
        (phase.end(), heard)
    }

    fn challenge(text: &str) -> Said {
        Said::Unauthorized(Some(text.as_bytes().to_vec()))
    }

    #[test]
    fn satisfy_all_stops_at_the_first_refusal() {
        use Said::*;
        assert_eq!(
            run(Satisfy::All, vec![Forbidden, Ok, Ok]),
            (Access::Forbidden, 1)
        );
        assert_eq!(
            run(Satisfy::All, vec![Ok, challenge("Basic"), Ok]),
            (Access::Unauthorized(vec![b"Basic".to_vec()]), 2)
        );
        assert_eq!(
            run(Satisfy::All, vec![Declined, Ok, Ok]),
            (Access::Allowed, 3)
        );
        assert_eq!(run(Satisfy::All, vec![Ok, Ok, Failed]), (Access::Failed, 3));
    }

    #[test]
    fn satisfy_any_lets_in_on_the_first_ok_and_prefers_401_to_403() {
        use Said::*;
        assert_eq!(
            run(Satisfy::Any, vec![Forbidden, Ok, Failed]),
            (Access::Allowed, 2)
        );
        assert_eq!(
            run(Satisfy::Any, vec![Forbidden, challenge("Basic"), Forbidden]),
            (Access::Unauthorized(vec![b"Basic".to_vec()]), 3)
        );
        assert_eq!(
            run(
                Satisfy::Any,
                vec![Declined, challenge("Basic"), challenge("Bearer")]
            ),
            (
                Access::Unauthorized(vec![b"Basic".to_vec(), b"Bearer".to_vec()]),
                3
            )
        );
        assert_eq!(
            run(Satisfy::Any, vec![Declined, Declined, Forbidden]),
            (Access::Forbidden, 3)
        );
        // Nothing said either way: in.
        assert_eq!(
            run(Satisfy::Any, vec![Declined, Declined, Declined]),
            (Access::Allowed, 3)
        );
        assert_eq!(
            run(Satisfy::Any, vec![Forbidden, Failed]),
            (Access::Failed, 2)
        );
    }
}
