//! Choosing the location for a request, exactly as ngx_http_core_find_location does:
//!
//! 1. at each level, an exact (`=`) location equal to the URI wins at once;
//! 2. otherwise the longest matching prefix is remembered and its nested locations searched;
//! 3. unless that prefix is `^~`, the level's regular expressions are tried in order, and the
//!    first that matches wins (then its own nested locations are searched);
//! 4. otherwise the remembered prefix (or the deepest nested prefix) is used.
//!
//! A prefix location ending in `/` whose handler is proxy_pass also answers its name without
//! the slash with a 301 to the name (nginx's auto_redirect).

use std::ops::Range;

use regex::bytes::{Regex, RegexBuilder};

use crate::config::LocationKind;

/// The locations of one level, ready for matching. `T` is what a location resolves to.
#[derive(Debug)]
pub struct LocationTree<T> {
    exact: Vec<Node<T>>,
    /// Prefix locations (plain and `^~`), longest name first so the first match is the longest.
    prefixes: Vec<Node<T>>,
    /// Regular-expression locations in config order.
    regexes: Vec<Node<T>>,
}

#[derive(Debug)]
struct Node<T> {
    name: Vec<u8>,
    kind: LocationKind,
    regex: Option<Regex>,
    /// Answers `name` without its trailing slash with a redirect.
    auto_redirect: bool,
    value: T,
    children: LocationTree<T>,
}

/// One location as the tree is built: its match, payload and nested locations.
pub struct Spec<T> {
    pub kind: LocationKind,
    pub path: String,
    pub auto_redirect: bool,
    pub value: T,
    pub children: Vec<Spec<T>>,
}

/// The outcome of a lookup.
#[derive(Debug)]
pub enum Found<'a, T> {
    /// This location handles the request; `captures` are the byte ranges of a regex location's
    /// groups in the URI (`$1`..`$9`).
    Location {
        value: &'a T,
        captures: Vec<Option<Range<usize>>>,
        /// The matched prefix, for `proxy_pass` URI replacement (`None` for regexes).
        prefix_len: Option<usize>,
    },
    /// Redirect to the URI with a slash appended (301), using this location's settings.
    AddSlash(&'a T),
    /// No location matches.
    None,
}

impl<T> LocationTree<T> {
    /// Builds a level. Regex compilation errors were caught by config validation; one that
    /// slips through here is reported rather than panicking.
    pub fn build(specs: Vec<Spec<T>>) -> Result<Self, String> {
        let mut tree = LocationTree {
            exact: Vec::new(),
            prefixes: Vec::new(),
            regexes: Vec::new(),
        };
        for spec in specs {
            let regex = match spec.kind {
                LocationKind::Regex | LocationKind::RegexCaseless => Some(
                    RegexBuilder::new(&spec.path)
                        .case_insensitive(spec.kind == LocationKind::RegexCaseless)
                        .build()
                        .map_err(|e| format!("location \"{}\": {e}", spec.path))?,
                ),
                _ => None,
            };
            let node = Node {
                name: spec.path.into_bytes(),
                kind: spec.kind,
                regex,
                auto_redirect: spec.auto_redirect,
                value: spec.value,
                children: LocationTree::build(spec.children)?,
            };
            match node.kind {
                LocationKind::Exact => tree.exact.push(node),
                LocationKind::Prefix | LocationKind::PrefixNoRegex => tree.prefixes.push(node),
                LocationKind::Regex | LocationKind::RegexCaseless => tree.regexes.push(node),
                // Reached by name only: the server keeps them apart.
                LocationKind::Named => {}
            }
        }
        // Stable: among equal names (nginx rejects duplicates) the order does not matter.
        tree.prefixes
            .sort_by_key(|n| std::cmp::Reverse(n.name.len()));
        Ok(tree)
    }

    /// Finds the location for a normalized URI.
    pub fn find<'a>(&'a self, uri: &[u8]) -> Found<'a, T> {
        match self.find_level(uri) {
            Level::Exact(found) => found,
            Level::Prefix(found) => found,
            Level::Declined => Found::None,
        }
    }

    fn find_level<'a>(&'a self, uri: &[u8]) -> Level<'a, T> {
        if let Some(node) = self.exact.iter().find(|n| n.name == uri) {
            // An exact location cannot have nested locations (validation rejects them).
            return Level::Exact(Found::Location {
                value: &node.value,
                captures: Vec::new(),
                prefix_len: Some(node.name.len()),
            });
        }
        // nginx's tree walk lets an auto-redirect (`/dir/` asked as `/dir`) beat any shorter
        // prefix, and returns before regexes are tried.
        if let Some(node) = self
            .prefixes
            .iter()
            .find(|n| n.auto_redirect && n.name.len() == uri.len() + 1 && n.name.starts_with(uri))
        {
            return Level::Exact(Found::AddSlash(&node.value));
        }
        let prefix = self.prefixes.iter().find(|n| uri.starts_with(&n.name));
        let mut best = Level::Declined;
        if let Some(node) = prefix {
            match node.children.find_level(uri) {
                Level::Exact(found) => return Level::Exact(found),
                Level::Prefix(found) => best = Level::Prefix(found),
                Level::Declined => {
                    best = Level::Prefix(Found::Location {
                        value: &node.value,
                        captures: Vec::new(),
                        prefix_len: Some(node.name.len()),
                    })
                }
            }
            if node.kind == LocationKind::PrefixNoRegex {
                return best;
            }
        }
        for node in &self.regexes {
            let Some(regex) = &node.regex else { continue };
            if let Some(caps) = regex.captures(uri) {
                let captures = caps.iter().map(|m| m.map(|m| m.range())).collect();
                return match node.children.find_level(uri) {
                    Level::Exact(found) | Level::Prefix(found) => Level::Exact(found),
                    Level::Declined => Level::Exact(Found::Location {
                        value: &node.value,
                        captures,
                        prefix_len: None,
                    }),
                };
            }
        }
        best
    }
}

/// A level's result: final (exact, redirect or regex), a prefix that regexes of outer levels
/// may still override, or nothing.
enum Level<'a, T> {
    Exact(Found<'a, T>),
    Prefix(Found<'a, T>),
    Declined,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(kind: LocationKind, path: &str, value: &'static str) -> Spec<&'static str> {
        Spec {
            kind,
            path: path.into(),
            auto_redirect: false,
            value,
            children: Vec::new(),
        }
    }

    fn name(tree: &LocationTree<&'static str>, uri: &str) -> String {
        match tree.find(uri.as_bytes()) {
            Found::Location { value, .. } => value.to_string(),
            Found::AddSlash(v) => format!("301 {v}"),
            Found::None => "none".into(),
        }
    }

    /// The example from nginx's documentation of `location`.
    #[test]
    fn nginx_documentation_example() {
        use LocationKind::*;
        let tree = LocationTree::build(vec![
            spec(Exact, "/", "A"),
            spec(Prefix, "/", "B"),
            spec(Prefix, "/documents/", "C"),
            spec(PrefixNoRegex, "/images/", "D"),
            spec(RegexCaseless, r"\.(gif|jpg|jpeg)$", "E"),
        ])
        .unwrap();
        assert_eq!(name(&tree, "/"), "A");
        assert_eq!(name(&tree, "/index.html"), "B");
        assert_eq!(name(&tree, "/documents/document.html"), "C");
        assert_eq!(name(&tree, "/images/1.gif"), "D");
        assert_eq!(name(&tree, "/documents/1.jpg"), "E");
    }

    #[test]
    fn nested_and_regex_order() {
        use LocationKind::*;
        let mut outer = spec(Prefix, "/a/", "outer");
        outer.children = vec![
            spec(Prefix, "/a/b/", "inner"),
            spec(Regex, r"\.php$", "inner-php"),
        ];
        let tree = LocationTree::build(vec![
            outer,
            spec(Regex, r"^/a/", "first-regex"),
            spec(Regex, r"^/a/b", "second-regex"),
        ])
        .unwrap();
        assert_eq!(name(&tree, "/a/x.php"), "inner-php", "nested regex wins");
        assert_eq!(
            name(&tree, "/a/b/c"),
            "first-regex",
            "outer regexes beat prefixes, in order"
        );
        assert_eq!(name(&tree, "/b"), "none");
    }

    #[test]
    fn deepest_prefix_kept_when_no_regex_matches() {
        use LocationKind::*;
        let mut outer = spec(Prefix, "/a/", "outer");
        outer.children = vec![spec(Prefix, "/a/b/", "inner")];
        let tree = LocationTree::build(vec![outer, spec(Regex, r"\.x$", "re")]).unwrap();
        assert_eq!(name(&tree, "/a/b/c"), "inner");
        assert_eq!(name(&tree, "/a/c"), "outer");
    }

    #[test]
    fn auto_redirect_and_captures() {
        use LocationKind::*;
        let mut dir = spec(Prefix, "/dir/", "dir");
        dir.auto_redirect = true;
        let tree = LocationTree::build(vec![
            spec(Prefix, "/", "root"),
            dir,
            spec(Regex, r"^/u/(\d+)/(\w+)", "user"),
        ])
        .unwrap();
        assert_eq!(name(&tree, "/dir"), "301 dir");
        assert_eq!(name(&tree, "/dir/x"), "dir");
        match tree.find(b"/u/42/name") {
            Found::Location { captures, .. } => {
                assert_eq!(captures[1], Some(3..5));
                assert_eq!(captures[2], Some(6..10));
            }
            _ => panic!("regex location expected"),
        }
    }
}
