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

use super::backends::{Backends, Behaviour, Plan};
use super::chi_square::chi_square;
use super::client::{self, Outcome, Request};
use super::proxies::{Kind, NginxOptions, Proxy};
use super::transcript::{
    anonymous_items, bodies_that_count, diff, exact_items, listen_placeholder, served_counts,
    Observation,
};

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
    /// Change something outside the proxy and the backends (a DNS record).
    Call(Hook),
}

/// What a `Step::Call` runs, once in each proxy's run.
#[derive(Clone)]
pub struct Hook(pub std::sync::Arc<dyn Fn() + Send + Sync>);

impl std::fmt::Debug for Hook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Hook")
    }
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
pub fn call(hook: impl Fn() + Send + Sync + 'static) -> Step {
    Step::Call(Hook(std::sync::Arc::new(hook)))
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
    shown_headers: Vec<String>,
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
            shown_headers: Vec::new(),
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

    /// Compare these response headers too (e.g. the ones `add_header` sets), in every response:
    /// each occurrence, in order, or their absence.
    pub fn compare_headers(mut self, names: &[&str]) -> Scenario {
        self.shown_headers = names.iter().map(|n| n.to_string()).collect();
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
            body = body.replace(&listen_placeholder(i), &format!("127.0.0.1:{port}"));
        }
        for i in (0..backends.len()).rev() {
            body = body.replace(&format!("{{b{i}}}"), &backends.addr(i).to_string());
            body = body.replace(
                &format!("{{b{i}port}}"),
                &backends.addr(i).port().to_string(),
            );
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
            .filter(|&i| self.template.contains(&listen_placeholder(i)))
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
                Step::Call(hook) => (hook.0)(),
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
            shown_headers: self.shown_headers.clone(),
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
