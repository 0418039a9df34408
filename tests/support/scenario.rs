//! Differential scenarios: one nginx.conf template, run by nginx 1.22 and then by the target
//! (the appliance, or nginx again as the harness's self-check) in front of the same recording
//! backends, with the same client steps; the two transcripts must agree.
//!
//! A template is the inside of an `http {}` block. `{listen}`, `{listen1}`, ... become
//! `127.0.0.1:<port>` (fresh ports for each run) and `{b0}`, `{b1}`, ... the backends'
//! addresses (the same for both runs). Ports of the listeners are written back as
//! `{listen}`... in the transcripts, so `$server_port` or a redirect compares equal.

use std::net::SocketAddr;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::backends::{Backends, Behaviour, Plan, Reception};
use super::client::{self, Outcome, Request};
use super::proxies::{Kind, NginxOptions, Proxy};

/// What wraps every template: one worker, no access log, everything else nginx's defaults.
const PRELUDE: &str =
    "worker_processes 1;\nevents { worker_connections 1024; }\nhttp {\n    access_log off;\n";

/// `APPLIANCE_DIFF_TARGET=nginx` runs nginx in both slots (the harness checking itself);
/// unset or `appliance`, the second slot is `appliance run -c`.
pub const TARGET_ENV: &str = "APPLIANCE_DIFF_TARGET";

/// Set to print each scenario's nginx transcript (with `--nocapture`).
pub const SHOW_ENV: &str = "APPLIANCE_DIFF_SHOW";

pub fn target() -> Kind {
    match std::env::var(TARGET_ENV).as_deref() {
        Err(_) | Ok("") | Ok("appliance") => Kind::Appliance,
        Ok("nginx") => Kind::Nginx,
        Ok(other) => panic!("{TARGET_ENV}={other}: expected `nginx` or `appliance`"),
    }
}

/// One thing the client (or the test, on the backends) does, in order.
#[derive(Clone, Debug)]
pub enum Step {
    /// Send a request and wait for its response.
    Send(Request),
    /// Send a request in the background; go on once a backend holds or hangs on it, or it has
    /// been answered.
    Start(Request),
    /// Let a backend answer everything it holds, and wait until those answers have reached the
    /// client (so the proxy has counted the connections as finished).
    Release(usize),
    /// Close a backend's listener: connections to it are refused.
    Refuse(usize),
    /// Open it again.
    Accept(usize),
    /// Give a backend a new plan (its request numbering goes on).
    Plan(usize, Plan),
    /// Give every backend this plan.
    PlanAll(Plan),
    /// Let time pass (for `fail_timeout`).
    Pause(Duration),
}

pub fn send(request: Request) -> Step {
    Step::Send(request)
}
pub fn start(request: Request) -> Step {
    Step::Start(request)
}
pub fn release(backend: usize) -> Step {
    Step::Release(backend)
}
pub fn refuse(backend: usize) -> Step {
    Step::Refuse(backend)
}
pub fn accept(backend: usize) -> Step {
    Step::Accept(backend)
}
pub fn plan(backend: usize, plan: Plan) -> Step {
    Step::Plan(backend, plan)
}
pub fn plan_all(plan: Plan) -> Step {
    Step::PlanAll(plan)
}
pub fn pause_ms(ms: u64) -> Step {
    Step::Pause(Duration::from_millis(ms))
}

/// A scenario: backends and their plans, a config template, and the client's steps.
#[derive(Clone, Debug)]
pub struct Scenario {
    name: String,
    plans: Vec<Plan>,
    refusing: Vec<usize>,
    template: String,
    steps: Vec<Step>,
    nginx: NginxOptions,
}

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
    pub log_tail: String,
}

impl Scenario {
    pub fn new(name: &str) -> Scenario {
        Scenario {
            name: name.into(),
            plans: Vec::new(),
            refusing: Vec::new(),
            template: String::new(),
            steps: Vec::new(),
            nginx: NginxOptions::default(),
        }
    }

    /// `count` backends answering 200.
    pub fn backends(mut self, count: usize) -> Scenario {
        self.plans = vec![Plan::ok(); count];
        self
    }

    pub fn plan(mut self, backend: usize, plan: Plan) -> Scenario {
        self.plans[backend] = plan;
        self
    }

    /// This backend starts with its listener closed.
    pub fn refusing(mut self, backend: usize) -> Scenario {
        self.refusing.push(backend);
        self
    }

    pub fn config(mut self, template: &str) -> Scenario {
        self.template = template.into();
        self
    }

    pub fn master_process(mut self) -> Scenario {
        self.nginx.master_process = true;
        self
    }

    pub fn step(mut self, step: Step) -> Scenario {
        self.steps.push(step);
        self
    }

    pub fn steps(mut self, steps: impl IntoIterator<Item = Step>) -> Scenario {
        self.steps.extend(steps);
        self
    }

    pub fn send(self, request: Request) -> Scenario {
        self.step(Step::Send(request))
    }

    pub fn send_all(self, requests: impl IntoIterator<Item = Request>) -> Scenario {
        self.steps(requests.into_iter().map(Step::Send))
    }

    /// Runs nginx, then the target, and fails with a readable diff unless they agree exactly:
    /// every response (status, serving backend, Location, and body and Content-Type unless
    /// nginx answered with its own error page) and every request each backend received, in
    /// order, byte for byte, with its connection.
    pub fn run(self) {
        let (expected, got) = self.observe_both();
        let bodies = bodies_that_count(&expected);
        let expected_items = exact_items(&expected, &bodies);
        let got_items = exact_items(&got, &bodies);
        self.verdict(&expected, &got, &expected_items, &got_items);
    }

    /// For random balancers: runs both and checks each one's share of `send` responses per backend
    /// against `expected` (probabilities from the observation, e.g. the weights) with a
    /// chi-square test at significance 0.001. What each backend received is compared too, all
    /// but which backend it was.
    pub fn run_distribution(self, expected: impl Fn(&Observation) -> Vec<f64>) {
        let (nginx, got) = self.observe_both();
        let mut failures = Vec::new();
        for observation in [&nginx, &got] {
            let counts = served_counts(observation, self.plans.len());
            let probabilities = expected(observation);
            let test = chi_square(&counts, &probabilities);
            println!(
                "{}: {}: counts {counts:?}, expected shares {probabilities:.3?}: {test}",
                self.name,
                observation.target.name()
            );
            if !test.passes() {
                failures.push(format!(
                    "{}: counts {counts:?} do not fit shares {probabilities:.3?}: {test}",
                    observation.target.name()
                ));
            }
        }
        let (expected_items, got_items) = (anonymous_items(&nginx), anonymous_items(&got));
        if !failures.is_empty() {
            panic!("scenario {:?}: {}", self.name, failures.join("; "));
        }
        self.verdict(&nginx, &got, &expected_items, &got_items);
    }

    fn observe_both(&self) -> (Observation, Observation) {
        let mut backends = Backends::start(self.plans.len());
        let expected = self.observe(&mut backends, Kind::Nginx, &self.template);
        let got = self.observe(&mut backends, target(), &self.template);
        (expected, got)
    }

    /// For testing the harness itself: the differences it reports between nginx running this
    /// scenario's template and nginx running `other`. Empty when it sees none.
    pub fn differences_from(&self, other: &str) -> String {
        let mut backends = Backends::start(self.plans.len());
        let expected = self.observe(&mut backends, Kind::Nginx, &self.template);
        let got = self.observe(&mut backends, Kind::Nginx, other);
        let bodies = bodies_that_count(&expected);
        diff(
            &exact_items(&expected, &bodies),
            &exact_items(&got, &bodies),
        )
    }

    fn verdict(&self, expected: &Observation, got: &Observation, want: &[String], have: &[String]) {
        if std::env::var_os(SHOW_ENV).is_some() {
            println!(
                "--- {}: transcript of {} ---",
                self.name,
                expected.target.name()
            );
            for item in want {
                println!("{item}");
            }
        }
        let report = diff(want, have);
        if report.is_empty() {
            println!(
                "{}: {} and {} agree on {} responses and {} upstream requests",
                self.name,
                expected.target.name(),
                got.target.name(),
                expected.outcomes.len(),
                expected.receptions.len()
            );
            return;
        }
        panic!(
            "scenario {:?}: {} (expected) and {} (got) differ:\n{report}\n\
             --- nginx log (tail) ---\n{}\n--- {} log (tail) ---\n{}\n",
            self.name,
            expected.target.name(),
            got.target.name(),
            expected.log_tail,
            got.target.name(),
            got.log_tail
        );
    }

    fn requests(&self) -> Vec<Request> {
        self.steps
            .iter()
            .filter_map(|step| match step {
                Step::Send(r) | Step::Start(r) => Some(r.clone()),
                _ => None,
            })
            .collect()
    }

    /// The template as a complete nginx.conf for these listener ports.
    pub fn instantiate(&self, template: &str, ports: &[u16], backends: &Backends) -> String {
        let mut body = template.to_string();
        for (i, port) in ports.iter().enumerate().rev() {
            let name = if i == 0 {
                "{listen}".to_string()
            } else {
                format!("{{listen{i}}}")
            };
            body = body.replace(&name, &format!("127.0.0.1:{port}"));
        }
        for i in (0..backends.len()).rev() {
            body = body.replace(&format!("{{b{i}}}"), &backends.addr(i).to_string());
        }
        if let Some(at) = body.find("{listen").or_else(|| body.find("{b")) {
            let rest: String = body[at..].chars().take(12).collect();
            panic!("scenario {:?}: unknown placeholder at {rest:?}", self.name);
        }
        format!("{PRELUDE}{body}\n}}\n")
    }

    /// How many listeners the template names.
    fn listener_count(&self) -> usize {
        (1..10)
            .filter(|i| self.template.contains(&format!("{{listen{i}}}")))
            .max()
            .map_or(1, |i| i + 1)
    }

    fn observe(&self, backends: &mut Backends, kind: Kind, template: &str) -> Observation {
        backends.reset(&self.plans);
        for &index in &self.refusing {
            backends.set_refusing(index, true);
        }
        let ports: Vec<u16> = (0..self.listener_count())
            .map(|_| super::free_port())
            .collect();
        let addrs: Vec<SocketAddr> = ports
            .iter()
            .map(|p| SocketAddr::from(([127, 0, 0, 1], *p)))
            .collect();
        let proxy = Proxy::start(
            kind,
            &self.instantiate(template, &ports, backends),
            &addrs,
            self.nginx,
        );

        let requests = self.requests();
        let mut outcomes: Vec<Option<Outcome>> = vec![None; requests.len()];
        let mut background: Vec<(usize, JoinHandle<Outcome>)> = Vec::new();
        let mut seq = 0;
        for step in &self.steps {
            match step {
                Step::Send(request) => {
                    seq += 1;
                    outcomes[seq - 1] = Some(client::send(ports[request.listener], request, seq));
                }
                Step::Start(request) => {
                    seq += 1;
                    let (port, request2, n) = (ports[request.listener], request.clone(), seq);
                    let handle = std::thread::spawn(move || client::send(port, &request2, n));
                    wait_until_parked(backends, seq, &handle);
                    background.push((seq, handle));
                }
                Step::Release(i) => {
                    let held = held_on(backends, *i);
                    backends.release(*i);
                    wait_until_answered(&background, &held);
                }
                Step::Refuse(i) => backends.set_refusing(*i, true),
                Step::Accept(i) => backends.set_refusing(*i, false),
                Step::Plan(i, plan) => backends.set_plan(*i, plan.clone()),
                Step::PlanAll(plan) => {
                    for i in 0..backends.len() {
                        backends.set_plan(i, plan.clone());
                    }
                }
                Step::Pause(d) => std::thread::sleep(*d),
            }
        }
        backends.release_all();
        let background_seqs = background.iter().map(|(seq, _)| *seq).collect();
        for (seq, handle) in background {
            outcomes[seq - 1] = Some(
                handle
                    .join()
                    .unwrap_or_else(|_| Outcome::Failed("client thread panicked".into())),
            );
        }
        let log_tail = proxy.log_tail(30);
        drop(proxy);

        let observation = Observation {
            target: kind,
            requests,
            outcomes: outcomes.into_iter().flatten().collect(),
            receptions: backends.receptions(),
            connections: backends.connection_counts(),
            started: background_seqs,
            log_tail,
        };
        observation.with_placeholders(&ports)
    }
}

/// Waits (bounded) until request `seq` is held or hung by a backend, or has been answered.
fn wait_until_parked(backends: &Backends, seq: usize, handle: &JoinHandle<Outcome>) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline && !handle.is_finished() {
        let parked = backends.receptions().iter().any(|r| {
            r.seq == Some(seq) && matches!(r.behaviour, Behaviour::Hold | Behaviour::Hang)
        });
        if parked {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The client requests a backend is holding now.
fn held_on(backends: &Backends, backend: usize) -> Vec<usize> {
    backends
        .receptions()
        .iter()
        .filter(|r| r.backend == backend && r.behaviour == Behaviour::Hold)
        .filter_map(|r| r.seq)
        .collect()
}

/// Waits (bounded) until the background requests numbered in `seqs` have their responses.
fn wait_until_answered(background: &[(usize, JoinHandle<Outcome>)], seqs: &[usize]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let pending = || {
        background
            .iter()
            .any(|(seq, handle)| seqs.contains(seq) && !handle.is_finished())
    };
    while Instant::now() < deadline && pending() {
        std::thread::sleep(Duration::from_millis(5));
    }
}

impl Observation {
    /// Writes each listener's port as its placeholder wherever it shows.
    fn with_placeholders(mut self, ports: &[u16]) -> Observation {
        let fix = |text: &str| -> String {
            ports
                .iter()
                .enumerate()
                .fold(text.to_string(), |t, (i, port)| {
                    let name = if i == 0 {
                        "{listen}".into()
                    } else {
                        format!("{{listen{i}}}")
                    };
                    replace_number(&t, *port, &name)
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
fn bodies_that_count(nginx: &Observation) -> Vec<bool> {
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
fn exact_items(o: &Observation, bodies: &[bool]) -> Vec<String> {
    let mut items: Vec<String> = o
        .outcomes
        .iter()
        .zip(&o.requests)
        .enumerate()
        .map(|(i, (outcome, request))| {
            let body = bodies.get(i).copied().unwrap_or(false);
            describe_outcome(i + 1, request, outcome, true, body)
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
fn anonymous_items(o: &Observation) -> Vec<String> {
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

/// The items that differ, position by position, as expected/got pairs.
fn diff(expected: &[String], got: &[String]) -> String {
    let mut report = Vec::new();
    for i in 0..expected.len().max(got.len()) {
        let (e, g) = (expected.get(i), got.get(i));
        if e != g {
            report.push(format!(
                "  expected: {}\n  got:      {}",
                e.map_or("(nothing)", String::as_str),
                g.map_or("(nothing)", String::as_str)
            ));
        }
        if report.len() == 20 {
            report.push("  (further differences left out)".into());
            break;
        }
    }
    report.join("\n")
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

/// Pearson's chi-square goodness of fit.
pub struct ChiSquare {
    pub statistic: f64,
    pub degrees: usize,
    pub critical: f64,
}

impl ChiSquare {
    pub fn passes(&self) -> bool {
        self.statistic <= self.critical
    }
}

impl std::fmt::Display for ChiSquare {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "chi-square {:.2} with {} degrees of freedom (critical {:.2} at 0.001): {}",
            self.statistic,
            self.degrees,
            self.critical,
            if self.passes() {
                "fits"
            } else {
                "does not fit"
            }
        )
    }
}

/// Chi-square of `counts` against `shares` (which sum to 1). A category with share 0 must be
/// empty; any count there makes the statistic infinite.
pub fn chi_square(counts: &[usize], shares: &[f64]) -> ChiSquare {
    // Upper 0.001 points of the chi-square distribution, 1 to 10 degrees of freedom.
    const CRITICAL_0_001: [f64; 10] = [
        10.828, 13.816, 16.266, 18.467, 20.515, 22.458, 24.322, 26.124, 27.877, 29.588,
    ];
    let total: usize = counts.iter().sum();
    let mut statistic = 0.0;
    let mut categories = 0;
    for (&count, &share) in counts.iter().zip(shares) {
        let expected = share * total as f64;
        if share <= 0.0 {
            if count > 0 {
                statistic = f64::INFINITY;
            }
            continue;
        }
        categories += 1;
        statistic += (count as f64 - expected).powi(2) / expected;
    }
    if total == 0 {
        statistic = f64::INFINITY;
    }
    let degrees = categories.max(2) - 1;
    assert!(degrees <= 10, "the table stops at 10 degrees of freedom");
    ChiSquare {
        statistic,
        degrees,
        critical: CRITICAL_0_001[degrees - 1],
    }
}
