//! The variables a config defines with a table: `map`, `geo` and `split_clients`, by the name
//! of the variable. Each is evaluated when a request uses it, as nginx evaluates them.

use std::collections::HashMap;

use super::geo::Geo;
use super::maps::Map;
use super::split_clients::Split;
use super::vars::RequestVars;
use crate::compile::diag::Diagnostic;
use crate::config::template::{Context, Template};
use crate::config::{Defined, GeoVar, Http, MapVar, Origin, SplitClients, Stream};

#[derive(Default)]
pub struct Tables(HashMap<String, Table>);

enum Table {
    Map(Map),
    Geo(Geo),
    Split(Split),
}

impl Tables {
    pub fn build(http: &Http, defined: Defined<'_>) -> Result<Tables, Diagnostic> {
        let (maps, geo, splits) = (&http.maps, &http.geo, &http.split_clients);
        Tables::of(Context::Http, maps, geo, splits, defined)
    }

    /// The stream's own, evaluated for a connection.
    pub fn of_stream(stream: &Stream, defined: Defined<'_>) -> Result<Tables, Diagnostic> {
        let (maps, geo, splits) = (&stream.maps, &stream.geo, &stream.split_clients);
        Tables::of(Context::Stream, maps, geo, splits, defined)
    }

    fn of(
        context: Context,
        maps: &[MapVar],
        geo: &[GeoVar],
        splits: &[SplitClients],
        defined: Defined<'_>,
    ) -> Result<Tables, Diagnostic> {
        let mut tables = HashMap::new();
        for m in maps {
            let map = Map::build(m, context, defined)?;
            tables.insert(m.variable.clone(), Table::Map(map));
        }
        for g in geo {
            let geo = Geo::build(g, context, defined)?;
            tables.insert(g.variable.clone(), Table::Geo(geo));
        }
        for s in splits {
            let split = Split::build(s, context, defined)?;
            tables.insert(s.variable.clone(), Table::Split(split));
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
    template_in(Context::Http, text, defined, at)
}

/// As [`template`], with the variables of `context`.
pub(super) fn template_in(
    context: Context,
    text: &str,
    defined: Defined<'_>,
    at: Option<&Origin>,
) -> Result<Template, Diagnostic> {
    Template::parse_for(context, text, defined)
        .map_err(|e| Diagnostic::error(e.to_string()).at_opt(at))
}
