//! Logs as nginx writes them: access logs in `combined` (or a `log_format`, or the built-in
//! `json`), and the error log with nginx's levels and line shape. Both are reopened on SIGUSR1,
//! so logrotate's `postrotate` (`nginx -s reopen`) works unchanged.
//!
//! An access log line is made and written on the request's thread, as nginx does, once the
//! response is sent; a log with `buffer=` has its lines written by a thread of its own
//! ([`LogFile`]).

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Condvar, LazyLock, Mutex, OnceLock};
use std::time::Duration;

use arc_swap::ArcSwap;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

use super::vars::RequestVars;
use crate::compile::describe_io_error;
use crate::compile::diag::Diagnostic;
use crate::config::template::{Context as VarContext, Segment, Template};
use crate::config::{AccessLog, Defined, ErrorLog, Http, LogFormat, LogLevel, Origin};
use crate::sync::lock;

/// nginx's predefined format.
pub const COMBINED: &str = "$remote_addr - $remote_user [$time_local] \"$request\" $status \
                            $body_bytes_sent \"$http_referer\" \"$http_user_agent\"";

/// The appliance's built-in `json` format: one object a line, values JSON-escaped.
pub const JSON: &str = "{\"time\":\"$time_iso8601\",\"remote_addr\":\"$remote_addr\",\
\"request\":\"$request\",\"status\":$status,\"body_bytes_sent\":$body_bytes_sent,\
\"request_time\":$request_time,\"host\":\"$host\",\"upstream_addr\":\"$upstream_addr\",\
\"upstream_status\":\"$upstream_status\",\"upstream_response_time\":\"$upstream_response_time\",\
\"http_referer\":\"$http_referer\",\"http_user_agent\":\"$http_user_agent\",\
\"request_id\":\"$request_id\"}";

/// How variable values are escaped (`log_format name escape=...`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Escape {
    /// `"`, `\`, control and non-ASCII bytes as `\xXX`; an empty value as `-`.
    Default,
    /// JSON string escaping; an empty value stays empty.
    Json,
    /// Values as they are; an empty value as `-`.
    None,
}

impl Escape {
    fn from_config(word: Option<&str>) -> Escape {
        match word {
            Some("json") => Escape::Json,
            Some("none") => Escape::None,
            _ => Escape::Default,
        }
    }
}

/// A `log_format`, parsed.
#[derive(Debug)]
pub struct Format {
    template: Template,
    escape: Escape,
}

impl Format {
    pub fn new(template: &str, escape: Escape, defined: Defined<'_>) -> Result<Format, String> {
        Format::new_for(VarContext::Http, template, escape, defined)
    }

    /// A format of the `http` or the `stream` block: each has its own variables.
    pub fn new_for(
        context: VarContext,
        template: &str,
        escape: Escape,
        defined: Defined<'_>,
    ) -> Result<Format, String> {
        let template =
            Template::parse_for(context, template, defined).map_err(|e| e.to_string())?;
        Ok(Format { template, escape })
    }

    /// Appends one log line, with its newline, to `out`.
    pub fn write_line(&self, vars: &RequestVars<'_>, out: &mut Vec<u8>) {
        for segment in &self.template.segments {
            match segment {
                Segment::Literal(text) => out.extend_from_slice(text.as_bytes()),
                Segment::Var(v) => {
                    let start = out.len();
                    vars.write(v, out);
                    escape_tail(self.escape, out, start);
                }
            }
        }
        out.push(b'\n');
    }

    #[cfg(test)]
    fn line(&self, vars: &RequestVars<'_>) -> Vec<u8> {
        let mut out = Vec::new();
        self.write_line(vars, &mut out);
        out
    }
}

/// Escapes the value just appended to `out` (from `start` on) in place. Most values need
/// nothing, and are left where they were written rather than copied through a scratch buffer.
fn escape_tail(escape: Escape, out: &mut Vec<u8>, start: usize) {
    let value = &out[start..];
    let clean = match escape {
        Escape::None => !value.is_empty(),
        Escape::Default => {
            !value.is_empty()
                && value
                    .iter()
                    .all(|&b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
        }
        Escape::Json => value.iter().all(|&b| b >= 0x20 && b != b'"' && b != b'\\'),
    };
    if !clean {
        let raw = out.split_off(start);
        escape_into(escape, &raw, out);
    }
}

/// Appends `value` escaped as nginx's ngx_http_log_escape (default) or ngx_escape_json does.
pub fn escape_into(escape: Escape, value: &[u8], out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    match escape {
        Escape::None if value.is_empty() => out.push(b'-'),
        Escape::None => out.extend_from_slice(value),
        Escape::Default if value.is_empty() => out.push(b'-'),
        Escape::Default => {
            for &b in value {
                if !(0x20..0x7f).contains(&b) || b == b'"' || b == b'\\' {
                    out.extend_from_slice(&[
                        b'\\',
                        b'x',
                        HEX[(b >> 4) as usize],
                        HEX[(b & 15) as usize],
                    ]);
                } else {
                    out.push(b);
                }
            }
        }
        Escape::Json => {
            for &b in value {
                match b {
                    b'"' => out.extend_from_slice(b"\\\""),
                    b'\\' => out.extend_from_slice(b"\\\\"),
                    b'\n' => out.extend_from_slice(b"\\n"),
                    b'\r' => out.extend_from_slice(b"\\r"),
                    b'\t' => out.extend_from_slice(b"\\t"),
                    0x08 => out.extend_from_slice(b"\\b"),
                    0x0c => out.extend_from_slice(b"\\f"),
                    b if b < 0x20 => {
                        out.extend_from_slice(b"\\u00");
                        out.extend_from_slice(&[HEX[(b >> 4) as usize], HEX[(b & 15) as usize]]);
                    }
                    b => out.push(b),
                }
            }
        }
    }
}

/// One `access_log`: where, in which format, and (`if=`) when.
#[derive(Clone, Debug)]
pub struct Target {
    pub file: Arc<LogFile>,
    pub format: Arc<Format>,
    pub condition: Option<Template>,
    /// Whether the line, or whether it is written, may depend on the response's headers
    /// (see [`Template::reads_response`]); found once, asked on every request.
    pub reads_response: bool,
    /// nginx's `buffer=`: lines are gathered for the file's writer thread.
    pub buffered: bool,
}

/// The access logs of a location: empty for `access_log off`.
pub type AccessLogs = Arc<[Target]>;

/// The formats of an `http` block by name (`combined`, `json` and the `log_format`s) or of a
/// `stream` block (its `log_format`s: nginx has no predefined stream format), with what their
/// `if=` conditions may name.
#[derive(Debug, Clone)]
pub struct Formats {
    by_name: HashMap<String, Arc<Format>>,
    context: VarContext,
    declared: Arc<HashSet<String>>,
}

impl Formats {
    /// The `http` block's formats; `declared` are the variables its config defines.
    pub fn build(http: &Http, declared: &HashSet<String>) -> Result<Formats, Diagnostic> {
        let mut formats = Formats::of(VarContext::Http, &http.log_format, declared)?;
        let builtin = |t: &str, e| Format::new(t, e, Defined::NONE).map_err(Diagnostic::error);
        formats.by_name.insert(
            "combined".to_string(),
            Arc::new(builtin(COMBINED, Escape::Default)?),
        );
        formats
            .by_name
            .insert("json".to_string(), Arc::new(builtin(JSON, Escape::Json)?));
        Ok(formats)
    }

    /// The `log_format`s of one context.
    pub fn of(
        context: VarContext,
        list: &[LogFormat],
        declared: &HashSet<String>,
    ) -> Result<Formats, Diagnostic> {
        let mut by_name = HashMap::new();
        for f in list {
            let escape = Escape::from_config(f.escape.as_deref());
            let format = Format::new_for(context, &f.template, escape, Defined::Names(declared))
                .map_err(Diagnostic::error)?;
            by_name.insert(f.name.clone(), Arc::new(format));
        }
        Ok(Formats {
            by_name,
            context,
            declared: Arc::new(declared.clone()),
        })
    }

    /// The targets of an `access_log` list; `None` (nothing configured at any level) is
    /// nginx's default, `logs/access.log combined`, which the appliance leaves out: it writes
    /// access logs only where the configuration asks for them.
    pub fn targets(
        &self,
        list: Option<&[AccessLog]>,
        origin: Option<&Origin>,
    ) -> Result<AccessLogs, Diagnostic> {
        let mut out = Vec::new();
        for log in list.unwrap_or_default() {
            let name = log.format.as_deref().unwrap_or("combined");
            let format = self.by_name.get(name).cloned().ok_or_else(|| {
                Diagnostic::error(format!("unknown log format \"{name}\"")).at_opt(origin)
            })?;
            let condition = match &log.condition {
                Some(text) => Some(
                    Template::parse_for(self.context, text, Defined::Names(&self.declared))
                        .map_err(|e| Diagnostic::error(e.to_string()).at_opt(origin))?,
                ),
                None => None,
            };
            let file = open(&log.path).map_err(|m| Diagnostic::error(m).at_opt(origin))?;
            let reads_response = format.template.reads_response()
                || condition.as_ref().is_some_and(Template::reads_response);
            out.push(Target {
                file,
                format,
                condition,
                reads_response,
                buffered: log.buffered,
            });
        }
        Ok(out.into())
    }
}

/// Writes a request (or a stream session) to its access logs: to each whose `if=`, if it has
/// one, is neither empty nor `0`.
pub fn write_access(logs: &[Target], vars: &RequestVars<'_>) {
    for target in logs {
        if let Some(condition) = &target.condition {
            let value = super::vars::eval_to_vec(condition, vars);
            if value.is_empty() || value == b"0" {
                continue;
            }
        }
        LINE.with_borrow_mut(|line| {
            line.clear();
            target.format.write_line(vars, line);
            if target.buffered {
                target.file.gather(line);
            } else {
                target.file.write(line);
            }
        });
    }
}

thread_local! {
    /// The line being made, kept from one line to the next: a line costs no allocation.
    static LINE: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A log file shared by every target that names it, kept across reloads.
///
/// A line is written as nginx writes it without `buffer=`: with one `write` (the file is
/// opened for appending, so lines from every thread land whole at its end) on the request's
/// thread, once the response is sent. Gathering lines for a writer thread of their own, and
/// writing tens of kilobytes at a time, took less CPU; but each of those larger writes held a
/// CPU the workers share for long enough that the p99 latency of one worker under full load
/// was 1.22 times nginx's (22 rounds), against 1.04 for a write per line (22 rounds in the same
/// hour; docs/BENCHMARKS.md).
///
/// A log with nginx's `buffer=` (or `gzip`) asked for lines to be gathered, and gets that:
/// [`Gathered`].
#[derive(Debug)]
pub struct LogFile {
    path: PathBuf,
    /// Replaced, never locked, when the file is opened again: a write under way finishes in
    /// the old file, where the lines before a logrotate belong.
    file: ArcSwap<File>,
    /// A write failed and was reported; the next failure is reported once one succeeds.
    failing: AtomicBool,
    gathered: Gathered,
}

/// Lines of buffered logs, gathered in memory for a writer thread of the file's own, which
/// takes what has gathered and writes it with one call, then waits [`GATHER`] before looking
/// again. A line then costs a copy under an uncontended lock, and the writer wakes a hundred
/// times a second at most, however many lines come. An idle writer is woken by the first line.
/// When the disk falls [`MAX_PENDING`] behind, new lines are dropped and counted rather than
/// held in memory without end.
#[derive(Debug, Default)]
struct Gathered {
    pending: Mutex<Pending>,
    arrived: Condvar,
    writer: OnceLock<()>,
    dropped: AtomicU64,
    /// The buffer a write takes the gathered lines into; its lock keeps two writes (the
    /// writer's and a flush) from swapping their lines.
    writing: Mutex<Vec<u8>>,
}

/// Lines not written yet.
#[derive(Debug, Default)]
struct Pending {
    lines: Vec<u8>,
    /// The writer sleeps until told: the next line must wake it.
    writer_idle: bool,
}

/// How long the writer lets lines gather after a write: how late a buffered line may reach
/// the disk (nginx writes a buffered log's lines when its buffer is full or at `flush=`: later).
const GATHER: Duration = Duration::from_millis(10);

/// Bytes waiting for the disk before new lines are dropped (a disk that stopped answering).
const MAX_PENDING: usize = 16 << 20;

static FILES: LazyLock<Mutex<HashMap<PathBuf, Arc<LogFile>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// Opens (or finds) the log file at `path`, with nginx's message when it cannot be opened.
/// No thread starts here: a buffered log's writer starts with its first line, so opening logs
/// before a `daemon on` fork is safe.
pub fn open(path: &Path) -> Result<Arc<LogFile>, String> {
    let mut files = lock(&FILES);
    if let Some(f) = files.get(path) {
        return Ok(f.clone());
    }
    let file = open_append(path)?;
    let log = Arc::new(LogFile {
        path: path.to_path_buf(),
        file: ArcSwap::from_pointee(file),
        failing: AtomicBool::new(false),
        gathered: Gathered::default(),
    });
    files.insert(path.to_path_buf(), log.clone());
    Ok(log)
}

fn open_append(path: &Path) -> Result<File, String> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| {
            format!(
                "open() \"{}\" failed ({})",
                path.display(),
                describe_io_error(&e)
            )
        })
}

impl LogFile {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Buffered lines dropped because the disk fell behind.
    pub fn dropped(&self) -> u64 {
        self.gathered.dropped.load(Ordering::Relaxed)
    }

    /// Writes `line` now, on the calling thread.
    fn write(&self, line: &[u8]) {
        let file = self.file.load();
        let result = (&**file).write_all(line);
        self.report(result);
    }

    /// Reports a failed write to the error log as nginx words it, once until a write succeeds
    /// again (a full disk fails every line).
    fn report(&self, result: std::io::Result<()>) {
        match result {
            Ok(()) => {
                if self.failing.load(Ordering::Relaxed) {
                    self.failing.store(false, Ordering::Relaxed);
                }
            }
            Err(e) => {
                if !self.failing.swap(true, Ordering::Relaxed) {
                    tracing::error!(
                        "write() to \"{}\" failed ({})",
                        self.path.display(),
                        describe_io_error(&e)
                    );
                }
            }
        }
    }

    /// Leaves `line` for the file's writer thread (a buffered log).
    fn gather(self: &Arc<Self>, line: &[u8]) {
        let gathered = &self.gathered;
        gathered.writer.get_or_init(|| self.start_writer());
        let mut pending = lock(&gathered.pending);
        if pending.lines.len() + line.len() > MAX_PENDING {
            gathered.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        pending.lines.extend_from_slice(line);
        if std::mem::take(&mut pending.writer_idle) {
            gathered.arrived.notify_one();
        }
    }

    fn start_writer(self: &Arc<Self>) {
        let log = self.clone();
        let spawned = std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || write_loop(log));
        if let Err(e) = spawned {
            tracing::error!("cannot start the access log writer: {e}");
        }
    }

    /// Writes what has gathered, in order.
    fn write_gathered(&self) {
        let mut lines = lock(&self.gathered.writing);
        std::mem::swap(&mut lock(&self.gathered.pending).lines, &mut *lines);
        if !lines.is_empty() {
            self.write(&lines);
            lines.clear();
        }
    }

    /// Opens the path again: after logrotate moved the file away, new lines go to a new file
    /// at the old path.
    fn reopen(&self) -> Result<(), String> {
        let fresh = open_append(&self.path)?;
        self.file.store(Arc::new(fresh));
        Ok(())
    }
}

/// The writer thread of a buffered log (one per file, for the life of the process, as the
/// file is kept across reloads): sleeps until a line arrives, writes what has gathered with
/// one call, lets more gather for [`GATHER`], and so on.
fn write_loop(log: Arc<LogFile>) {
    let gathered = &log.gathered;
    loop {
        {
            let mut pending = lock(&gathered.pending);
            while pending.lines.is_empty() {
                pending.writer_idle = true;
                pending = gathered
                    .arrived
                    .wait(pending)
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
            }
        }
        log.write_gathered();
        std::thread::sleep(GATHER);
    }
}

/// SIGUSR1: every access log and the error log are opened again.
pub fn reopen_all() {
    let files: Vec<Arc<LogFile>> = lock(&FILES).values().cloned().collect();
    for f in files {
        // Lines already gathered belong to the old file.
        f.write_gathered();
        if let Err(m) = f.reopen() {
            tracing::error!("{m}");
        }
    }
    error_log().reopen();
}

/// Writes out what is queued, before the process exits.
pub fn flush_all() {
    let files: Vec<Arc<LogFile>> = lock(&FILES).values().cloned().collect();
    for f in files {
        f.write_gathered();
    }
}

// ---------------------------------------------------------------------------------------------
// The error log

/// Where error log lines go, and from which level on. It changes on reload and on SIGUSR1.
pub struct ErrorLogSink {
    target: Mutex<Sink>,
    /// The least severe level written, as a [`LogLevel`] discriminant.
    level: AtomicU8,
    stderr_redirected: std::sync::atomic::AtomicBool,
}

enum Sink {
    Stderr,
    File { path: PathBuf, file: File },
}

static ERROR_LOG: LazyLock<ErrorLogSink> = LazyLock::new(|| ErrorLogSink {
    target: Mutex::new(Sink::Stderr),
    level: AtomicU8::new(LogLevel::Notice as u8),
    stderr_redirected: std::sync::atomic::AtomicBool::new(false),
});

/// The process's error log.
pub fn error_log() -> &'static ErrorLogSink {
    &ERROR_LOG
}

impl ErrorLogSink {
    /// Points the error log at `config` (a file or `stderr`), with its level. A file that
    /// cannot be opened leaves the log where it was and says why.
    pub fn configure(&self, config: Option<&ErrorLog>) -> Result<(), String> {
        let (path, level) = match config {
            Some(c) => (Some(c.path.clone()), c.level),
            // Without an error_log, lines go to standard error (the journal under systemd) from
            // `notice` on: starts, reloads and HA role changes are what an operator looks for.
            None => (None, LogLevel::Notice),
        };
        let sink = match path {
            Some(p) if p.as_os_str() != "stderr" => Sink::File {
                file: open_append(&p)?,
                path: p,
            },
            _ => Sink::Stderr,
        };
        *lock(&self.target) = sink;
        self.level.store(level as u8, Ordering::Relaxed);
        Ok(())
    }

    fn reopen(&self) {
        let mut target = lock(&self.target);
        if let Sink::File { path, file } = &mut *target {
            match open_append(path) {
                Ok(f) => *file = f,
                Err(m) => {
                    let _ = writeln!(std::io::stderr(), "{m}");
                }
            }
        }
        drop(target);
        if self.stderr_redirected.load(Ordering::Relaxed) {
            self.redirect_stderr();
        }
    }

    /// Points standard error at the error log file, as a daemonized nginx does: whatever a
    /// library prints lands in the log, and the terminal that started the daemon is let go.
    pub fn redirect_stderr(&self) {
        use std::os::fd::AsRawFd;
        if let Sink::File { file, .. } = &*lock(&self.target) {
            // SAFETY: dup2 onto standard error, which this process owns.
            unsafe {
                libc::dup2(file.as_raw_fd(), libc::STDERR_FILENO);
            }
            self.stderr_redirected.store(true, Ordering::Relaxed);
        }
    }

    fn enabled(&self, level: LogLevel) -> bool {
        level as u8 >= self.level.load(Ordering::Relaxed)
    }

    fn write_line(&self, line: &[u8]) {
        match &mut *lock(&self.target) {
            Sink::Stderr => {
                let _ = std::io::stderr().write_all(line);
            }
            Sink::File { file, .. } => {
                let _ = file.write_all(line);
            }
        }
    }
}

/// nginx's error log line: `2026/11/21 10:00:00 [error] 1234#1240: message` (process and
/// thread ids, as nginx built with threads writes them).
pub fn error_line(level: &str, message: &str) -> String {
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::gettid() };
    format!(
        "{} [{level}] {}#{tid}: {message}\n",
        error_time(),
        std::process::id()
    )
}

/// `2026/11/21 10:00:00`, in UTC like the access log's `$time_local`.
fn error_time() -> String {
    let iso = super::vars::time_iso8601();
    let (date, time) = iso.split_once('T').unwrap_or((&iso, ""));
    format!(
        "{} {}",
        date.replace('-', "/"),
        time.get(..8).unwrap_or(time)
    )
}

/// The tracing layer that writes the error log. A `nginx_level` field (`"emerg"`) names the
/// level word nginx would use where tracing's levels have none.
pub struct ErrorLogLayer;

/// `APPLIANCE_LOG` set: every event is wanted (its filter decides), read once.
fn verbose_by_env() -> bool {
    static VERBOSE: std::sync::LazyLock<bool> =
        std::sync::LazyLock::new(|| std::env::var_os("APPLIANCE_LOG").is_some());
    *VERBOSE
}

impl<S: Subscriber> Layer<S> for ErrorLogLayer {
    /// Asked per event, not cached per call site: the level changes on reload.
    fn register_callsite(
        &self,
        _metadata: &'static tracing::Metadata<'static>,
    ) -> tracing::subscriber::Interest {
        tracing::subscriber::Interest::sometimes()
    }

    /// Events below the error log's level are not even built: Pingora logs (through the `log`
    /// crate) at debug level on every request, and formatting those only to drop them cost
    /// the data plane a large share of its time.
    fn enabled(&self, metadata: &tracing::Metadata<'_>, _ctx: Context<'_, S>) -> bool {
        if verbose_by_env() {
            return true;
        }
        // Warnings and errors always reach on_event (an `nginx_level` field may make them more
        // severe); info is nginx's notice, debug and trace its debug.
        match *metadata.level() {
            Level::ERROR | Level::WARN => true,
            Level::INFO => error_log().enabled(LogLevel::Notice),
            _ => error_log().enabled(LogLevel::Debug),
        }
    }

    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut visitor = Fields::default();
        event.record(&mut visitor);
        let level = visitor
            .nginx_level
            .as_deref()
            .and_then(LogLevel::from_nginx)
            .unwrap_or_else(|| match from_tracing(*event.metadata().level()) {
                LogLevel::Notice if visitor.from_log_crate => LogLevel::Info,
                level => level,
            });
        let sink = error_log();
        if !sink.enabled(level) && !verbose_by_env() {
            return;
        }
        let word = visitor
            .nginx_level
            .unwrap_or_else(|| level_word(level).to_string());
        sink.write_line(error_line(&word, &visitor.message).as_bytes());
    }
}

fn from_tracing(level: Level) -> LogLevel {
    match level {
        Level::ERROR => LogLevel::Error,
        Level::WARN => LogLevel::Warn,
        Level::INFO => LogLevel::Notice,
        _ => LogLevel::Debug,
    }
}

fn level_word(level: LogLevel) -> &'static str {
    match level {
        LogLevel::Debug => "debug",
        LogLevel::Info => "info",
        LogLevel::Notice => "notice",
        LogLevel::Warn => "warn",
        LogLevel::Error => "error",
        LogLevel::Crit => "crit",
        LogLevel::Alert => "alert",
        LogLevel::Emerg => "emerg",
    }
}

#[derive(Default)]
struct Fields {
    message: String,
    nginx_level: Option<String>,
    /// Pingora's own messages: its `info` is nginx's `info` (below `notice`).
    from_log_crate: bool,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "nginx_level" => self.nginx_level = Some(value.to_string()),
            "message" => self.message.push_str(value),
            name if name.starts_with("log.") => self.from_log_crate = true,
            name => self.message.push_str(&format!(", {name}: {value}")),
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "message" => self.message.push_str(&format!("{value:?}")),
            "nginx_level" => self.nginx_level = Some(format!("{value:?}")),
            // Pingora logs through the `log` crate; its bookkeeping fields are not news.
            name if name.starts_with("log.") => self.from_log_crate = true,
            name => self.message.push_str(&format!(", {name}: {value:?}")),
        }
    }
}

/// Installs the error log as the process's tracing subscriber, writing to `config` (stderr
/// when unset). `APPLIANCE_LOG` (an env-filter directive) overrides the level, for debugging.
pub fn init_error_log(config: Option<&ErrorLog>) -> Result<(), String> {
    use tracing_subscriber::prelude::*;
    error_log().configure(config)?;
    let filter = std::env::var("APPLIANCE_LOG")
        .ok()
        .map(tracing_subscriber::EnvFilter::new);
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(ErrorLogLayer)
        .try_init();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use pingora::http::RequestHeader;

    fn vars(req: &RequestHeader) -> RequestVars<'_> {
        static REQUEST_ID: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        REQUEST_ID.get_or_init(|| "abc".to_string());
        RequestVars {
            host: Some("example.com"),
            uri: b"/a",
            status: 200,
            body_bytes_sent: 12,
            request_time: 0.004,
            ..crate::proxy::vars::sample(req.into(), &REQUEST_ID)
        }
    }

    #[test]
    fn combined_escapes_like_nginx() {
        let mut req = RequestHeader::build("GET", b"/a?x=1", None).unwrap();
        req.append_header("User-Agent", "curl \"7\"\\é").unwrap();
        let f = Format::new(COMBINED, Escape::Default, Defined::NONE).unwrap();
        let line = String::from_utf8(f.line(&vars(&req))).unwrap();
        let (_, rest) = line.split_once(" - - [").unwrap();
        assert!(line.starts_with("10.0.0.9 - - ["), "{line}");
        assert!(
            rest.ends_with(
                "] \"GET /a?x=1 HTTP/1.1\" 200 12 \"-\" \"curl \\x227\\x22\\x5C\\xC3\\xA9\"\n"
            ),
            "{line}"
        );
    }

    #[test]
    fn values_escaped_in_place_between_clean_ones() {
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        req.append_header("X-A", "clean").unwrap();
        req.append_header("X-B", "\"q\"").unwrap();
        let vars = RequestVars {
            status: 0,
            ..vars(&req)
        };
        let f = Format::new(
            "$http_x_a|$http_x_b|$http_x_c|$status",
            Escape::Default,
            Defined::NONE,
        )
        .unwrap();
        assert_eq!(f.line(&vars), b"clean|\\x22q\\x22|-|000\n");
        let f = Format::new("$http_x_b|$http_x_c|$http_x_a", Escape::Json, Defined::NONE).unwrap();
        assert_eq!(f.line(&vars), b"\\\"q\\\"||clean\n");
    }

    #[test]
    fn json_escapes_like_nginx() {
        let mut out = Vec::new();
        escape_into(Escape::Json, b"a\"b\\c\n\x01\xc3\xa9", &mut out);
        assert_eq!(out, b"a\\\"b\\\\c\\n\\u0001\xc3\xa9");
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        req.append_header("Referer", "x\"y").unwrap();
        let f = Format::new(JSON, Escape::Json, Defined::NONE).unwrap();
        let line = f.line(&vars(&req));
        let v: serde_json::Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(v["status"], 200);
        assert_eq!(v["http_referer"], "x\"y");
        assert_eq!(v["upstream_addr"], "");
        let mut out = Vec::new();
        escape_into(Escape::None, b"", &mut out);
        assert_eq!(out, b"-");
    }

    #[test]
    fn a_moved_log_is_reopened_at_its_path() {
        let dir = std::env::temp_dir().join(format!("appliance-log-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("access.log");
        let file = open(&path).unwrap();
        file.write(b"one\n");
        file.gather(b"two\n");
        std::fs::rename(&path, dir.join("access.log.1")).unwrap();
        file.write_gathered();
        file.write(b"three\n");
        file.reopen().unwrap();
        file.write(b"four\n");
        file.gather(b"five\n");
        file.write_gathered();
        assert_eq!(
            std::fs::read_to_string(dir.join("access.log.1")).unwrap(),
            "one\ntwo\nthree\n"
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "four\nfive\n");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn error_lines_look_like_nginx() {
        let line = error_line("emerg", "unknown directive \"foo\" in /x.conf:3");
        let re = regex::Regex::new(
            r"^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d \[emerg\] \d+#\d+: unknown directive \x22foo\x22 in /x.conf:3\n$",
        )
        .unwrap();
        assert!(re.is_match(&line), "{line}");
    }
}
