//! The http context's `geo` and `split_clients` blocks, read as ngx_http_geo_module and
//! ngx_http_split_clients_module read them, with their messages and warnings. (`map`, the
//! third variable defined by a table, is in http.rs beside the rest of the http context.)

use super::{Lowering, Result};
use crate::compile::nginx::tree::Statement;
use crate::config::geo::parse_network;
use crate::config::template::Variable;
use crate::config::{GeoEntry, GeoVar, SplitClients, SplitPart};

impl Lowering<'_> {
    /// The name a block defines (`$name`), refused where nginx refuses it.
    pub(super) fn defined_name(&self, stmt: &Statement, text: &str) -> Result<String> {
        let Some(name) = text.strip_prefix('$') else {
            return Err(self.error(stmt, format!("invalid variable name \"{text}\"")));
        };
        // nginx's own variables cannot be redefined (and the appliance reads `$http_*` and
        // the other prefixed names as nginx's, so those are refused too).
        let (context, _) = self.variables();
        if Variable::from_name(name).is_some_and(|v| v.in_context(context)) {
            return Err(self.error(stmt, format!("the duplicate \"{name}\" variable")));
        }
        Ok(name.to_string())
    }

    /// `split_clients KEY $name { PERCENT% VALUE; ... * VALUE; }`.
    pub(super) fn split_clients_block(&mut self, stmt: &Statement) -> Result<Option<SplitClients>> {
        let source = self.arg(stmt, 0)?.to_string();
        let variable = self.defined_name(stmt, self.arg(stmt, 1)?)?;
        let lines = stmt.block.as_deref().unwrap_or_default();
        let mut parts = Vec::new();
        // nginx reads a line's value as its second word without counting the words: a line
        // with none gets what its parser's array still holds there, the value of the last
        // line that had one, else the block's key.
        let mut last_value = source.clone();
        for line in lines {
            if let Some(value) = line.args.first() {
                last_value = value.value.clone();
            }
            parts.push(SplitPart {
                percent: line.name.clone(),
                value: last_value.clone(),
            });
        }
        let split = SplitClients {
            origin: self.origin(stmt),
            source,
            variable,
            parts,
        };
        if let Err((part, message)) = split.bounds() {
            // nginx checks each percent as it reads its line, the total once the block ends.
            return Err(match part.and_then(|i| lines.get(i)) {
                Some(line) => self.error(line, message),
                None => self.error(stmt, message).at(stmt.nginx_block_end_origin()),
            });
        }
        if self.template(stmt, &split.source)?.is_none() {
            return Ok(None);
        }
        Ok(Some(split))
    }

    /// `geo [ADDRESS] $name { ... }`.
    pub(super) fn geo_block(&mut self, stmt: &Statement) -> Result<Option<GeoVar>> {
        let (source, name) = match stmt.args.len() {
            2 => (
                Some(stmt.args[0].value.clone()),
                stmt.args[1].value.as_str(),
            ),
            _ => (None, self.arg(stmt, 0)?),
        };
        if let Some(source) = &source {
            // ngx_http_get_variable_index: the address must be one variable.
            if !source.starts_with('$') {
                return Err(self.error(stmt, format!("invalid variable name \"{source}\"")));
            }
        }
        let variable = self.defined_name(stmt, name)?;
        let mut geo = GeoVar {
            origin: self.origin(stmt),
            source,
            variable,
            ..GeoVar::default()
        };
        let lines = stmt.block.as_deref().unwrap_or_default();
        // The statement each entry came from, for the messages of building the table.
        let mut entry_lines = Vec::new();
        for line in lines {
            match (line.name.as_str(), line.args.len()) {
                ("ranges", 0) => {
                    // Any network or `default` before it has made nginx's radix tree.
                    if !geo.ranges && !geo.entries.is_empty() {
                        return Err(self.error(
                            line,
                            "the \"ranges\" directive must be the first directive inside \
                             \"geo\" block",
                        ));
                    }
                    geo.ranges = true;
                }
                // Stream's geo has no `proxy`: there, the word is a network it cannot read.
                ("proxy_recursive", 0) if !self.in_stream => geo.proxy_recursive = true,
                (_, n) if n != 1 => {
                    return Err(self.error(line, "invalid number of the geo parameters"));
                }
                ("proxy", _) if !self.in_stream => {
                    let text = line.args[0].value.clone();
                    let (_, low_bits) = parse_network(&text).map_err(|e| self.error(line, e))?;
                    if low_bits {
                        self.warn(line, format!("low address bits of {text} are meaningless"));
                    }
                    geo.proxies.push(text);
                }
                ("delete", _) => {
                    geo.entries.push(GeoEntry {
                        network: line.args[0].value.clone(),
                        value: String::new(),
                        delete: true,
                    });
                    entry_lines.push(line);
                }
                (network, _) => {
                    geo.entries.push(GeoEntry {
                        network: network.to_string(),
                        value: line.args[0].value.clone(),
                        delete: false,
                    });
                    entry_lines.push(line);
                }
            }
        }
        let warnings = match geo.table() {
            Ok((_, warnings)) => warnings,
            Err((entry, message)) => {
                let at = entry.and_then(|i| entry_lines.get(i).copied());
                return Err(self.error(at.unwrap_or(stmt), message));
            }
        };
        for (i, message) in warnings {
            self.warn(entry_lines[i], message);
        }
        if let Some(source) = geo.source.clone() {
            if self.template(stmt, &source)?.is_none() {
                return Ok(None);
            }
        }
        Ok(Some(geo))
    }
}
