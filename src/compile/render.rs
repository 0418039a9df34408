//! Prints a model as an appliance.toml an operator can read: pools, servers and locations as
//! tables of their own, each preceded by a comment quoting the source line it came from.

use toml_edit::{ArrayOfTables, DocumentMut, Item, Table, Value};

use super::diag::Sources;
use crate::config::{Appliance, Origin};

/// Keys whose arrays print as `[[...]]` tables: the items an operator looks for.
const TABLE_ARRAYS: &[&str] = &[
    "upstream",
    "server",
    "location",
    "map",
    "geo",
    "split_clients",
    "charset_map",
];
/// Keys whose arrays print one item to a line, as the blocks they come from list them.
const LINE_ARRAYS: &[&str] = &["codes"];
/// Keys whose values print as `[...]` tables rather than inline.
const TABLES: &[&str] = &[
    "global",
    "http",
    "stream",
    "ha",
    "admin",
    "proxy",
    "client",
    "tls",
    "health_check",
    "sticky",
];

/// The annotated TOML. `header` lines are printed first, as comments.
pub fn render_toml(model: &Appliance, sources: &Sources, header: &[String]) -> String {
    let mut doc = match toml_edit::ser::to_document(model) {
        Ok(doc) => doc,
        // Cannot happen for the model's types; fall back to the plain form rather than fail.
        Err(_) => return model.to_toml(),
    };
    let root: &mut Table = doc.as_table_mut();
    shape(root, sources);
    let mut out = String::new();
    for line in header {
        out.push_str("# ");
        out.push_str(line);
        out.push('\n');
    }
    if !header.is_empty() {
        out.push('\n');
    }
    out.push_str(&DocumentMut::from(doc.as_table().clone()).to_string());
    out
}

/// Turns the inline tables serde produced into standard tables and arrays of tables where that
/// reads better, and puts the origin comments on them.
fn shape(table: &mut Table, sources: &Sources) {
    let keys: Vec<String> = table.iter().map(|(k, _)| k.to_string()).collect();
    for key in keys {
        let Some(item) = table.get_mut(&key) else {
            continue;
        };
        let replacement = match item {
            Item::Value(Value::Array(array))
                if TABLE_ARRAYS.contains(&key.as_str())
                    && array.iter().all(|v| v.is_inline_table()) =>
            {
                let mut tables = ArrayOfTables::new();
                for value in array.iter() {
                    if let Value::InlineTable(inline) = value {
                        let mut t = inline.clone().into_table();
                        shape(&mut t, sources);
                        annotate(&mut t, sources);
                        tables.push(t);
                    }
                }
                Some(Item::ArrayOfTables(tables))
            }
            Item::Value(Value::Array(array)) if LINE_ARRAYS.contains(&key.as_str()) => {
                for value in array.iter_mut() {
                    value.decor_mut().set_prefix("\n    ");
                }
                array.set_trailing("\n");
                array.set_trailing_comma(true);
                None
            }
            Item::Value(Value::InlineTable(inline)) if TABLES.contains(&key.as_str()) => {
                let mut t = inline.clone().into_table();
                shape(&mut t, sources);
                annotate(&mut t, sources);
                Some(Item::Table(t))
            }
            Item::Table(t) => {
                shape(t, sources);
                annotate(t, sources);
                None
            }
            Item::ArrayOfTables(tables) => {
                for t in tables.iter_mut() {
                    shape(t, sources);
                    annotate(t, sources);
                }
                None
            }
            _ => None,
        };
        if let Some(new) = replacement {
            table.insert(&key, new);
        }
    }
    let only_tables = table
        .iter()
        .all(|(_, v)| v.is_table() || v.is_array_of_tables());
    table.set_implicit(only_tables);
}

/// `# nginx.conf:12: upstream backend {` above a table whose item has an origin.
fn annotate(table: &mut Table, sources: &Sources) {
    let Some(origin) = table
        .get("origin")
        .and_then(|v| v.as_str())
        .and_then(|s| s.parse::<Origin>().ok())
    else {
        return;
    };
    let line = sources
        .get(&origin.file)
        .and_then(|text| text.lines().nth(origin.line.saturating_sub(1) as usize))
        .map(|l| l.trim())
        .filter(|l| !l.is_empty());
    let comment = match line {
        Some(l) => format!("\n# {}:{}: {}\n", origin.file, origin.line, l),
        None => format!("\n# {}:{}\n", origin.file, origin.line),
    };
    table.decor_mut().set_prefix(comment);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::*;

    #[test]
    fn pools_and_locations_are_tables_with_their_source_lines() {
        let mut model = Appliance::default();
        let mut pool = Upstream {
            name: "backend".into(),
            origin: Some(Origin::new("n.conf", 1, 1)),
            balance: Balance::LeastConn,
            servers: vec![UpstreamServer::new("10.0.0.1:80")],
            keepalive: None,
            keepalive_timeout: None,
            keepalive_requests: None,
            health_check: None,
            sticky: None,
            drain_timeout: None,
        };
        pool.servers[0].origin = Some(Origin::new("n.conf", 2, 5));
        model.http.upstreams.push(pool);
        let mut sources = Sources::default();
        sources.insert(
            "n.conf".into(),
            "upstream backend {\n    server 10.0.0.1:80;\n}\n".into(),
        );
        let text = render_toml(&model, &sources, &["compiled".into()]);
        assert!(text.starts_with("# compiled\n"), "{text}");
        assert!(
            text.contains("# n.conf:1: upstream backend {\n[[http.upstream]]"),
            "{text}"
        );
        assert!(
            text.contains("# n.conf:2: server 10.0.0.1:80;\n[[http.upstream.server]]"),
            "{text}"
        );
        let back = Appliance::from_toml(&text, "x.toml").unwrap();
        assert_eq!(back, model);
    }
}
