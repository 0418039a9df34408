//! The rewrite module's directives (`rewrite`, `set`, `if`, `break`, `return`) of a server or
//! a location, lowered into the steps of its script, in order, with nginx's checks.

use indexmap::IndexMap;

use super::http::Level;
use super::{Lowering, Result};
use crate::compile::nginx::tree::Statement;
use crate::config::rewrite::{settable_builtin, Condition};
use crate::config::template::Variable;
use crate::config::{
    Client, IfBlock, LocationKind, Proxy, RealIp, Return, Rewrite, RewriteFlag, SetVar, Step,
};

/// The names of the rewrite module's directives.
pub(super) fn is_rewrite_directive(name: &str) -> bool {
    matches!(name, "rewrite" | "set" | "if" | "break" | "return")
}

/// A level's steps, as the model writes them: a lone `return` in the level's `return`, the
/// rest as a script.
pub(super) fn into_model(mut steps: Vec<Step>) -> (Option<Return>, Vec<Step>) {
    if let [Step::Return(_)] = steps.as_slice() {
        if let Some(Step::Return(r)) = steps.pop() {
            return (Some(r), Vec::new());
        }
    }
    (None, steps)
}

impl Lowering<'_> {
    /// One of the rewrite module's directives (see [`is_rewrite_directive`]) into `steps`;
    /// `location` is the location it is in, `None` at server level. A directive whose
    /// variables only an unsupported directive defines is reported and left out.
    pub(super) fn rewrite_step(
        &mut self,
        stmt: &Statement,
        location: Option<LocationKind>,
        steps: &mut Vec<Step>,
    ) -> Result<()> {
        let step = match stmt.name.as_str() {
            "rewrite" => self.rewrite(stmt)?.map(Step::Rewrite),
            "set" => self.set(stmt)?.map(Step::Set),
            "if" => self
                .if_block(stmt, location)?
                .map(|b| Step::If(Box::new(b))),
            "break" => {
                self.mapped(stmt);
                Some(Step::Break(true))
            }
            "return" => self.return_directive(stmt)?.map(Step::Return),
            _ => None,
        };
        steps.extend(step);
        Ok(())
    }

    /// `rewrite regex replacement [last|break|redirect|permanent]`.
    fn rewrite(&mut self, stmt: &Statement) -> Result<Option<Rewrite>> {
        let regex = self.arg(stmt, 0)?.to_string();
        let replacement = self.arg(stmt, 1)?.to_string();
        if replacement.is_empty() {
            return Err(self.error(stmt, "empty replacement"));
        }
        self.usable_regex(stmt, &regex, false)?;
        let flag = match stmt.arg(2) {
            None => None,
            Some(f) => match RewriteFlag::parse(f) {
                Some(flag) => Some(flag),
                None => return Err(self.error(stmt, format!("invalid parameter \"{f}\""))),
            },
        };
        let text = replacement.strip_suffix('?').unwrap_or(&replacement);
        if self.template(stmt, text)?.is_none() {
            return Ok(None);
        }
        self.mapped(stmt);
        Ok(Some(Rewrite {
            regex,
            replacement,
            flag,
        }))
    }

    /// `set $variable value`.
    fn set(&mut self, stmt: &Statement) -> Result<Option<SetVar>> {
        let name = self.changeable_variable(stmt)?;
        if name == "limit_rate" {
            self.partial(
                stmt,
                crate::compile::Impact::ChangesTraffic,
                "responses are not rate-limited: left out",
            )?;
            return Ok(None);
        }
        let value = self.arg(stmt, 1)?.to_string();
        if self.template(stmt, &value)?.is_none() {
            return Ok(None);
        }
        self.mapped(stmt);
        Ok(Some(SetVar {
            variable: name,
            value,
        }))
    }

    /// `auth_request_set $variable value`, checked as ngx_http_auth_request_set checks it: a
    /// variable nginx cannot change is a duplicate, as for `set`.
    pub(super) fn auth_request_set(
        &mut self,
        stmt: &Statement,
    ) -> Result<Option<crate::config::RequestSet>> {
        let variable = self.changeable_variable(stmt)?;
        if variable == "limit_rate" || settable_builtin(&variable) {
            self.partial(
                stmt,
                crate::compile::Impact::ChangesTraffic,
                format!("${variable} is not set from the subrequest: left out"),
            )?;
            return Ok(None);
        }
        let value = self.arg(stmt, 1)?.to_string();
        if self.template(stmt, &value)?.is_none() {
            return Ok(None);
        }
        Ok(Some(crate::config::RequestSet { variable, value }))
    }

    /// The variable a `set` or `auth_request_set` assigns (its first argument), without the
    /// `$`: nginx's ngx_http_add_variable refuses one of its own that cannot be changed.
    fn changeable_variable(&mut self, stmt: &Statement) -> Result<String> {
        let target = self.arg(stmt, 0)?;
        let Some(name) = target.strip_prefix('$') else {
            return Err(self.error(stmt, format!("invalid variable name \"{target}\"")));
        };
        if name.is_empty() {
            return Err(self.error(stmt, "invalid variable name \"$\""));
        }
        // nginx's own changeable ones: $args and $limit_rate.
        let changeable = settable_builtin(name) || name == "limit_rate";
        if Variable::from_name(name).is_some_and(|v| !v.is_prefixed()) && !changeable {
            return Err(self.error(stmt, format!("the duplicate \"{name}\" variable")));
        }
        Ok(name.to_string())
    }

    /// `if (condition) { ... }`: the condition's words without the parentheses, checked as
    /// nginx checks them, and the block's directives. In a location the block may also set
    /// `proxy_pass` (without a URI part), `add_header`, `access_log`, `expires`, `gzip`,
    /// `error_page`, `sendfile`, `charset`, `source_charset` and `override_charset`.
    fn if_block(
        &mut self,
        stmt: &Statement,
        location: Option<LocationKind>,
    ) -> Result<Option<IfBlock>> {
        let condition = self.if_condition(stmt)?;
        let parsed = Condition::parse(&condition).map_err(|e| self.error(stmt, e))?;
        let mut usable = true;
        for text in parsed.templates() {
            usable &= self.template(stmt, text)?.is_some();
        }
        if let Condition::Matches {
            regex, caseless, ..
        } = parsed
        {
            self.usable_regex(stmt, regex, caseless)?;
        }
        let mut block = IfBlock {
            condition,
            proxy_pass: None,
            add_header: None,
            access_log: None,
            expires: None,
            gzip: None,
            error_page: None,
            sendfile: None,
            charset: Default::default(),
            script: Vec::new(),
        };
        for s in stmt.block.iter().flatten() {
            match s.name.as_str() {
                name if is_rewrite_directive(name) => {
                    self.rewrite_step(s, location, &mut block.script)?;
                }
                "proxy_pass" if location.is_some() => {
                    if let Some(pass) = self.proxy_pass(s, LocationKind::Prefix)? {
                        if pass.uri.is_some() {
                            return Err(self.error(
                                s,
                                "\"proxy_pass\" cannot have URI part in location given by regular \
                                 expression, or inside named location, or inside \"if\" \
                                 statement, or inside \"limit_except\" block",
                            ));
                        }
                        block.proxy_pass = Some(pass);
                    }
                }
                "add_header" | "access_log" | "expires" | "gzip" | "error_page" | "sendfile"
                | "charset" | "source_charset" | "override_charset"
                    if location.is_some() =>
                {
                    // The directive is read as at a location's level; the block keeps what it
                    // set of the settings above.
                    let mut proxy = Proxy::default();
                    let mut client = Client::default();
                    let (mut access, mut real_ip) = (None, RealIp::default());
                    let (mut limits, mut auth) = Default::default();
                    let mut gzip = crate::config::Gzip::default();
                    let (mut autoindex, mut conditional) = Default::default();
                    let (mut default_type, mut types) = (None, None::<IndexMap<_, _>>);
                    let (mut root, mut index) = (None, None);
                    let (mut recursive_error_pages, mut log_not_found) = (None, None);
                    let level = Level {
                        proxy: &mut proxy,
                        client: &mut client,
                        add_header: &mut block.add_header,
                        access: &mut access,
                        real_ip: &mut real_ip,
                        limits: &mut limits,
                        auth: &mut auth,
                        secure_link: &mut Default::default(),
                        sub_filter: &mut Default::default(),
                        expires: &mut block.expires,
                        gzip: &mut gzip,
                        charset: &mut block.charset,
                        resolver: &mut Default::default(),
                        autoindex: &mut autoindex,
                        conditional: &mut conditional,
                        error_page: &mut block.error_page,
                        recursive_error_pages: &mut recursive_error_pages,
                        log_not_found: &mut log_not_found,
                        access_log: &mut block.access_log,
                        default_type: &mut default_type,
                        root: &mut root,
                        index: &mut index,
                        types: &mut types,
                        tls: None,
                    };
                    if !self.setting(s, level)? {
                        self.unsupported(s)?;
                    }
                    // `gzip` is the one gzip directive nginx allows here.
                    block.gzip = block.gzip.or(gzip.enable);
                    block.sendfile = block.sendfile.or(client.sendfile);
                }
                _ => self.unsupported(s)?,
            }
        }
        if !usable {
            // Its condition cannot be evaluated: the block is left out, as reported.
            return Ok(None);
        }
        self.mapped(stmt);
        Ok(Some(block))
    }

    /// The words of `if ( ... )` between the parentheses (ngx_http_rewrite_if_condition):
    /// `(` and `)` may stand alone or touch the first and last words.
    fn if_condition(&self, stmt: &Statement) -> Result<Vec<String>> {
        let mut words: Vec<String> = stmt.values().map(str::to_string).collect();
        let invalid = |w: &str| self.error(stmt, format!("invalid condition \"{w}\""));
        let first = words.first().cloned().unwrap_or_default();
        if !first.starts_with('(') {
            return Err(invalid(&first));
        }
        let cur = if first.len() == 1 {
            1
        } else {
            words[0] = first[1..].to_string();
            0
        };
        let last_index = words.len() - 1;
        let last = words[last_index].clone();
        if !last.ends_with(')') {
            return Err(invalid(&last));
        }
        let end = if last.len() == 1 {
            last_index
        } else {
            words[last_index] = last[..last.len() - 1].to_string();
            last_index + 1
        };
        if cur >= end {
            return Err(invalid(words.get(cur).map_or("", String::as_str)));
        }
        Ok(words[cur..end].to_vec())
    }
}
