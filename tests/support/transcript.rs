//! Transcripts of a differential run: what the client got and what each backend received,
//! written as one item per fact so two runs compare position by position, and the report of
//! where they differ.

use super::backends::Reception;
use super::client::{Outcome, Request};
use super::proxies::Kind;

/// Everything one run produced, with the listeners' ports written as placeholders.
#[derive(Clone, Debug)]
pub struct Observation {
    pub target: Kind,
    pub requests: Vec<Request>,
    pub outcomes: Vec<Outcome>,
    pub receptions: Vec<Reception>,
    pub connections: Vec<usize>,
    /// The requests sent with `start` (numbered from 1), left out of distributions.
    pub started: Vec<usize>,
    /// Response headers (beyond Location and Refresh) that count, by name, in every response:
    /// each occurrence in order, or `-` when absent. Empty for most scenarios.
    pub shown_headers: Vec<String>,
    pub log_tail: String,
}

/// How the i-th listener is written in templates and transcripts: `{listen}`, `{listen1}`, ...
pub fn listen_placeholder(i: usize) -> String {
    if i == 0 {
        "{listen}".into()
    } else {
        format!("{{listen{i}}}")
    }
}

impl Observation {
    /// Writes each listener's port as its placeholder wherever it shows.
    pub fn with_placeholders(mut self, ports: &[u16]) -> Observation {
        let fix = |text: &str| -> String {
            ports
                .iter()
                .enumerate()
                .fold(text.to_string(), |t, (i, port)| {
                    replace_number(&t, *port, &listen_placeholder(i))
                })
        };
        let fix_bytes = |bytes: &[u8]| fix(&String::from_utf8_lossy(bytes)).into_bytes();
        for r in &mut self.receptions {
            r.request_line = fix_bytes(&r.request_line);
            r.header_lines = r.header_lines.iter().map(|l| fix_bytes(l)).collect();
        }
        for outcome in &mut self.outcomes {
            match outcome {
                Outcome::Response(response) => {
                    response.body = fix_bytes(&response.body);
                    for (_, value) in &mut response.headers {
                        *value = fix(value);
                    }
                }
                Outcome::Failed(why) => *why = fix(why),
            }
        }
        for request in &mut self.requests {
            request.target = fix(&request.target);
        }
        self
    }
}

/// Replaces `number` in `text` where it stands alone (not inside a longer run of digits).
fn replace_number(text: &str, number: u16, with: &str) -> String {
    let needle = number.to_string();
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find(&needle) {
        let before = rest[..at].chars().last();
        let after = rest[at + needle.len()..].chars().next();
        let alone = !before.is_some_and(|c| c.is_ascii_digit())
            && !after.is_some_and(|c| c.is_ascii_digit());
        out.push_str(&rest[..at]);
        out.push_str(if alone { with } else { &needle });
        rest = &rest[at + needle.len()..];
    }
    out.push_str(rest);
    out
}

/// nginx's own error and redirect pages end with this; their wording is not part of the
/// contract (a status is), so such bodies are not compared.
const NGINX_PAGE_MARK: &str = "<hr><center>nginx";

/// Which responses' bodies (and Content-Type) count: all but those where nginx answered with
/// a page of its own.
pub fn bodies_that_count(nginx: &Observation) -> Vec<bool> {
    nginx
        .outcomes
        .iter()
        .map(|outcome| match outcome {
            Outcome::Response(r) => !String::from_utf8_lossy(&r.body).contains(NGINX_PAGE_MARK),
            Outcome::Failed(_) => false,
        })
        .collect()
}

/// One line (or block) per fact, in an order both runs share.
pub fn exact_items(o: &Observation, bodies: &[bool]) -> Vec<String> {
    let mut items: Vec<String> = o
        .outcomes
        .iter()
        .zip(&o.requests)
        .enumerate()
        .map(|(i, (outcome, request))| {
            let body = bodies.get(i).copied().unwrap_or(false);
            let mut text = describe_outcome(i + 1, request, outcome, true, body);
            if let Outcome::Response(response) = outcome {
                text.push_str(&shown_headers(response, &o.shown_headers));
            }
            text
        })
        .collect();
    items.extend(o.receptions.iter().map(|r| describe_reception(r, true)));
    items.push(format!(
        "connections accepted per backend: {:?}",
        o.connections
    ));
    items
}

/// As [`exact_items`], without which backend served what (random balancers).
pub fn anonymous_items(o: &Observation) -> Vec<String> {
    let mut items: Vec<String> = o
        .outcomes
        .iter()
        .zip(&o.requests)
        .enumerate()
        .map(|(i, (outcome, request))| describe_outcome(i + 1, request, outcome, false, false))
        .collect();
    let mut receptions: Vec<&Reception> = o.receptions.iter().collect();
    receptions.sort_by_key(|r| r.seq);
    items.extend(receptions.into_iter().map(|r| describe_reception(r, false)));
    items
}

fn describe_outcome(
    seq: usize,
    request: &Request,
    outcome: &Outcome,
    with_backend: bool,
    with_body: bool,
) -> String {
    let what = match outcome {
        Outcome::Failed(why) => format!("no response ({why})"),
        Outcome::Response(response) => {
            let mut text = format!("{}", response.status);
            if let (Some(b), true) = (response.backend(), with_backend) {
                text.push_str(&format!(" from backend {b}"));
            }
            if let Some(location) = response.header("Location") {
                text.push_str(&format!(", Location: {location}"));
            }
            if let Some(refresh) = response.header("Refresh") {
                text.push_str(&format!(", Refresh: {refresh}"));
            }
            if with_body {
                if let Some(content_type) = response.header("Content-Type") {
                    text.push_str(&format!(", Content-Type: {content_type}"));
                }
                text.push_str(&format!(
                    ", body {:?}",
                    String::from_utf8_lossy(&response.body)
                ));
            }
            text
        }
    };
    format!("response to #{seq} ({}): {what}", request.describe())
}

/// The chosen headers of a response: `, Name: value` for each occurrence, `, Name: -` when it
/// has none. An `Expires` within ten years of the response's `Date` is shown as its distance
/// from it (`Date+3600s`): nginx and the appliance answer at different seconds, but both
/// count from the time they send.
fn shown_headers(response: &super::client::Response, names: &[String]) -> String {
    let mut text = String::new();
    for name in names {
        let values: Vec<&str> = response
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect();
        if values.is_empty() {
            text.push_str(&format!(", {name}: -"));
        }
        for value in values {
            let shown = match name.eq_ignore_ascii_case("expires") {
                true => from_date(response, value).unwrap_or_else(|| value.to_string()),
                false => value.to_string(),
            };
            text.push_str(&format!(", {name}: {shown}"));
        }
    }
    text
}

/// `value`, an HTTP date, as its distance from the response's `Date`, when both parse and it is
/// within ten years.
fn from_date(response: &super::client::Response, value: &str) -> Option<String> {
    let seconds = |text: &str| -> Option<i64> {
        let time = httpdate::parse_http_date(text).ok()?;
        let since = time.duration_since(std::time::UNIX_EPOCH).ok()?;
        i64::try_from(since.as_secs()).ok()
    };
    let offset = seconds(value)? - seconds(response.header("Date")?)?;
    (offset.abs() < 10 * 365 * 86_400).then(|| format!("Date{offset:+}s"))
}

fn describe_reception(r: &Reception, with_backend: bool) -> String {
    let seq = r.seq.map_or("?".to_string(), |s| s.to_string());
    let mut text = if with_backend {
        format!(
            "backend {} received #{seq} (connection {}, request {} on it) and answers {:?}:",
            r.backend, r.connection, r.on_connection, r.behaviour
        )
    } else {
        format!("a backend received #{seq}:")
    };
    text.push_str(&format!(
        "\n      {}",
        String::from_utf8_lossy(&r.request_line)
    ));
    for line in &r.header_lines {
        text.push_str(&format!("\n      {}", String::from_utf8_lossy(line)));
    }
    text.push_str(&format!("\n      ({} body bytes)", r.body_len));
    text
}

/// The items that differ, position by position. One-line items are shown as expected/got
/// pairs; blocks (a request a backend received) line by line, `-` for lines only nginx's run
/// had and `+` for lines only the target's had.
pub fn diff(expected: &[String], got: &[String]) -> String {
    let mut report = Vec::new();
    for i in 0..expected.len().max(got.len()) {
        let (e, g) = (expected.get(i), got.get(i));
        if e == g {
            continue;
        }
        match (e, g) {
            (Some(e), Some(g)) if e.contains('\n') && g.contains('\n') => {
                report.push(format!("  differs:\n{}", line_diff(e, g)));
            }
            _ => report.push(format!(
                "  expected: {}\n  got:      {}",
                e.map_or("(nothing)", String::as_str),
                g.map_or("(nothing)", String::as_str)
            )),
        }
        if report.len() == 20 {
            report.push("  (further differences left out)".into());
            break;
        }
    }
    report.join("\n")
}

/// A line diff of two short blocks (longest common subsequence).
fn line_diff(expected: &str, got: &str) -> String {
    let (a, b): (Vec<&str>, Vec<&str>) = (expected.lines().collect(), got.lines().collect());
    // common[i][j]: length of the longest common subsequence of a[i..] and b[j..].
    let mut common = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            common[i][j] = if a[i] == b[j] {
                common[i + 1][j + 1] + 1
            } else {
                common[i + 1][j].max(common[i][j + 1])
            };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, Vec::new());
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            out.push(format!("    {}", a[i]));
            (i, j) = (i + 1, j + 1);
        } else if i < a.len() && (j == b.len() || common[i + 1][j] >= common[i][j + 1]) {
            out.push(format!("  - {}", a[i]));
            i += 1;
        } else {
            out.push(format!("  + {}", b[j]));
            j += 1;
        }
    }
    out.join("\n")
}

/// Responses to `send` steps served per backend, by the backend header of each response.
pub fn served_counts(o: &Observation, backends: usize) -> Vec<usize> {
    let mut counts = vec![0; backends];
    let sent = o
        .outcomes
        .iter()
        .enumerate()
        .filter(|(i, _)| !o.started.contains(&(i + 1)))
        .map(|(_, outcome)| outcome);
    for backend in sent.filter_map(Outcome::backend) {
        if let Some(c) = counts.get_mut(backend) {
            *c += 1;
        }
    }
    counts
}
