//! The variables a config defines with a table: `map`, `geo` and `split_clients`, by the name
//! of the variable. Each is evaluated when a request uses it, as nginx evaluates them.

use std::collections::HashMap;

use super::geo::Geo;
use super::maps::Map;
use super::split_clients::Split;
use super::vars::RequestVars;
use crate::compile::diag::Diagnostic;
use crate::config::template::Template;
use crate::config::{Defined, Http, Origin};

#[derive(Default)]
pub struct Tables(HashMap<String, Table>);

enum Table {
    Map(Map),
    Geo(Geo),
    Split(Split),
}

impl Tables {
    pub fn build(http: &Http, defined: Defined<'_>) -> Result<Tables, Diagnostic> {
        let mut tables = HashMap::new();
        for m in &http.maps {
            tables.insert(m.variable.clone(), Table::Map(Map::build(m, defined)?));
        }
        for g in &http.geo {
            tables.insert(g.variable.clone(), Table::Geo(Geo::build(g, defined)?));
        }
        for s in &http.split_clients {
            tables.insert(s.variable.clone(), Table::Split(Split::build(s, defined)?));
        }
        Ok(Tables(tables))
    }

    /// Appends the value of the variable `name` (nothing for a name no table defines).
    pub fn write(&self, name: &str, vars: &RequestVars<'_>, out: &mut Vec<u8>) {
        match self.0.get(name) {
            Some(Table::Map(map)) => map.write(vars, out),
            Some(Table::Geo(geo)) => geo.write(vars, out),
            Some(Table::Split(split)) => split.write(vars, out),
            None => {}
        }
    }
}

/// A template of the config (a table's source or value, a realm, an `expires` value), its
/// error placed at the origin of the item that holds it.
pub(super) fn template(
    text: &str,
    defined: Defined<'_>,
    at: Option<&Origin>,
) -> Result<Template, Diagnostic> {
    Template::parse_in(text, defined).map_err(|e| Diagnostic::error(e.to_string()).at_opt(at))
}
