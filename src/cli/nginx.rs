//! nginx's command line, for the binary installed (or symlinked) as `nginx`, or as
//! `appliance nginx ...`: `-t`, `-T`, `-q`, `-c`, `-p`, `-g`, `-e`, `-s`, `-v`, `-V`, `-h`,
//! with nginx's messages and exit statuses, so units, init scripts and logrotate's
//! `postrotate` keep working. Messages follow Debian's build (its error log is stderr, so
//! errors print as log lines: `2026/11/21 10:00:00 [emerg] 1234#1234: ...`).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use crate::compile::{self, diag::Diagnostic, Compiled, InputKind, Options, Support};
use crate::config::{ErrorLog, LogLevel};
use crate::process::pidfile;
use crate::proxy::{logging, signals::Reload, RunOptions};

/// The nginx release whose behaviour the appliance reproduces.
pub const NGINX_VERSION: &str = "1.22.1";
const DEFAULT_CONF: &str = "/etc/nginx/nginx.conf";
const DEFAULT_PID: &str = "/run/nginx.pid";
const DEFAULT_PREFIX: &str = "/usr/share/nginx/";

/// What `-s` sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    Stop,
    Quit,
    Reopen,
    Reload,
}

impl Signal {
    fn parse(word: &str) -> Option<Signal> {
        Some(match word {
            "stop" => Signal::Stop,
            "quit" => Signal::Quit,
            "reopen" => Signal::Reopen,
            "reload" => Signal::Reload,
            _ => return None,
        })
    }

    fn number(self) -> i32 {
        match self {
            Signal::Stop => libc::SIGTERM,
            Signal::Quit => libc::SIGQUIT,
            Signal::Reopen => libc::SIGUSR1,
            Signal::Reload => libc::SIGHUP,
        }
    }
}

/// The options, as ngx_get_options reads them.
#[derive(Debug, Default, PartialEq)]
pub struct Args {
    pub help: bool,
    pub version: bool,
    pub configure: bool,
    pub test: bool,
    pub dump: bool,
    pub quiet: bool,
    pub prefix: Option<String>,
    pub error_log: Option<String>,
    pub conf: Option<String>,
    pub globals: Option<String>,
    pub signal: Option<Signal>,
}

/// Reads nginx's options: flags may be grouped (`-tq`), a value follows its letter (`-cFILE`)
/// or is the next argument. Errors are nginx's messages (without the `nginx: ` prefix).
pub fn parse(args: &[String]) -> Result<Args, String> {
    let mut out = Args::default();
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        let Some(flags) = arg.strip_prefix('-') else {
            return Err(format!("invalid option: \"{arg}\""));
        };
        for (at, c) in flags.char_indices() {
            let rest = &flags[at + c.len_utf8()..];
            let mut value = |what: &str| -> Result<String, String> {
                if !rest.is_empty() {
                    return Ok(rest.to_string());
                }
                i += 1;
                args.get(i)
                    .cloned()
                    .ok_or_else(|| format!("option \"-{c}\" requires {what}"))
            };
            match c {
                '?' | 'h' => {
                    out.version = true;
                    out.help = true;
                }
                'v' => out.version = true,
                'V' => {
                    out.version = true;
                    out.configure = true;
                }
                't' => out.test = true,
                'T' => {
                    out.test = true;
                    out.dump = true;
                }
                'q' => out.quiet = true,
                'p' => {
                    out.prefix = Some(value("directory name")?);
                    break;
                }
                'e' => {
                    out.error_log = Some(value("file name")?);
                    break;
                }
                'c' => {
                    out.conf = Some(value("file name")?);
                    break;
                }
                'g' => {
                    out.globals = Some(value("parameter")?);
                    break;
                }
                's' => {
                    let word = value("parameter")?;
                    out.signal = Some(
                        Signal::parse(&word)
                            .ok_or_else(|| format!("invalid option: \"-s {word}\""))?,
                    );
                    break;
                }
                other => return Err(format!("invalid option: \"{other}\"")),
            }
        }
        i += 1;
    }
    Ok(out)
}

/// `nginx ...`: runs the command line and returns the exit status.
pub fn main(args: Vec<OsString>) -> ExitCode {
    let args: Vec<String> = args
        .into_iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let args = match parse(&args) {
        Ok(a) => a,
        Err(m) => {
            eprintln!("nginx: {m}");
            return ExitCode::FAILURE;
        }
    };
    if args.version {
        eprintln!(
            "nginx version: appliance/{} (compatible with nginx/{NGINX_VERSION})",
            env!("CARGO_PKG_VERSION")
        );
        if args.help {
            eprint!("{}", usage());
        }
        if args.configure {
            eprintln!("built on Pingora 0.9.1 with OpenSSL");
            eprintln!(
                "configure arguments: --prefix={DEFAULT_PREFIX} --conf-path={DEFAULT_CONF} \
                 --error-log-path=stderr --pid-path={DEFAULT_PID} --with-http_ssl_module \
                 --with-http_v2_module --with-stream"
            );
        }
        if !args.test {
            return ExitCode::SUCCESS;
        }
    }
    let conf = config_path(&args);
    let options = Options {
        prefix: args.prefix.as_ref().map(PathBuf::from),
        global_directives: args.globals.clone(),
        ..Options::default()
    };
    let compiled = compile_with_globals(&conf, &options, args.globals.as_deref());
    if args.test {
        return test(&conf, compiled, &args);
    }
    let compiled = match compiled {
        Ok(c) => c,
        Err(d) => {
            emit("emerg", &located(&d));
            return ExitCode::FAILURE;
        }
    };
    if let Some(signal) = args.signal {
        return send_signal(&compiled, signal);
    }
    serve(conf, options, compiled, &args)
}

fn usage() -> String {
    format!(
        "Usage: nginx [-?hvVtTq] [-s signal] [-p prefix]\n\
         \x20            [-e filename] [-c filename] [-g directives]\n\n\
         Options:\n\
         \x20 -?,-h         : this help\n\
         \x20 -v            : show version and exit\n\
         \x20 -V            : show version and configure options then exit\n\
         \x20 -t            : test configuration and exit\n\
         \x20 -T            : test configuration, dump it and exit\n\
         \x20 -q            : suppress non-error messages during configuration testing\n\
         \x20 -s signal     : send signal to a master process: stop, quit, reopen, reload\n\
         \x20 -p prefix     : set prefix path (default: {DEFAULT_PREFIX})\n\
         \x20 -e filename   : set error log file (default: stderr)\n\
         \x20 -c filename   : set configuration file (default: {DEFAULT_CONF})\n\
         \x20 -g directives : set global directives out of configuration file\n\n"
    )
}

/// `-c`, relative to the prefix as nginx resolves it.
fn config_path(args: &Args) -> PathBuf {
    let conf = args.conf.as_deref().unwrap_or(DEFAULT_CONF);
    let path = Path::new(conf);
    match &args.prefix {
        Some(prefix) if path.is_relative() => Path::new(prefix).join(path),
        _ => path.to_path_buf(),
    }
}

/// Prints a line as Debian's nginx does before its error log is open: to stderr, in the error
/// log's shape.
fn emit(level: &str, message: &str) {
    eprint!("{}", logging::error_line(level, message));
}

/// A diagnostic's message with nginx's ` in file:line`.
fn located(d: &Diagnostic) -> String {
    match &d.origin {
        Some(o) if o.line > 0 => format!("{} in {}:{}", d.message, o.file, o.line),
        Some(o) => format!("{} in {}", d.message, o.file),
        None => d.message.clone(),
    }
}

/// Compiles the config; `-g` directives reach an nginx.conf through the front end, and an
/// appliance.toml through [`apply_globals`].
fn compile_with_globals(
    conf: &Path,
    options: &Options,
    globals: Option<&str>,
) -> Result<Compiled, Diagnostic> {
    let mut compiled = compile::compile_file(conf, options).map_err(|f| *f.diagnostic)?;
    if compiled.kind != InputKind::Nginx {
        if let Some(g) = globals {
            apply_globals(&mut compiled.model.global, g, options)?;
            crate::config::validate(&compiled.model)?;
        }
    }
    Ok(compiled)
}

/// `-g` on a config that is not an nginx.conf: its directives are read by the nginx front end,
/// as they would be in front of an nginx.conf, and the settings they make replace the config's.
pub fn apply_globals(
    global: &mut crate::config::Global,
    text: &str,
    options: &Options,
) -> Result<(), Diagnostic> {
    let parsed = crate::compile::nginx::parse::parse_command_line(text, options);
    if let Some(e) = parsed.error {
        return Err(e);
    }
    let (model, _report) = crate::compile::nginx::lower::lower(&parsed.tree, options)?;
    global.overlay(model.global);
    Ok(())
}

/// `-t` and `-T`.
fn test(conf: &Path, compiled: Result<Compiled, Diagnostic>, args: &Args) -> ExitCode {
    let shown = conf.display();
    // Host names resolved and certificates read, as nginx -t does.
    let compiled = compiled.and_then(|c| {
        crate::proxy::runtime::Runtime::build(&c.model)?;
        Ok(c)
    });
    let compiled = match compiled {
        Ok(c) => c,
        Err(d) => {
            emit("emerg", &located(&d));
            eprintln!("nginx: configuration file {shown} test failed");
            return ExitCode::FAILURE;
        }
    };
    for w in &compiled.report.warnings {
        emit("warn", &located(w));
    }
    for item in compiled.report.not_mapped() {
        if item.support != Support::Skipped {
            emit(
                "warn",
                &format!(
                    "\"{}\" is not supported by the appliance ({}) in {}:{}",
                    item.name, item.note, item.origin.file, item.origin.line
                ),
            );
        }
    }
    if !args.quiet {
        eprintln!("nginx: the configuration file {shown} syntax is ok");
        eprintln!("nginx: configuration file {shown} test is successful");
    }
    if args.dump {
        let main = conf.to_string_lossy();
        let files = compiled.sources.files();
        let ordered = files
            .iter()
            .filter(|(name, _)| *name == main)
            .chain(files.iter().filter(|(name, _)| *name != main));
        let mut out = String::new();
        for (name, text) in ordered {
            out.push_str(&format!("# configuration file {name}:\n{text}\n"));
        }
        print!("{out}");
    }
    ExitCode::SUCCESS
}

/// `-s`: reads the pid file the config names and signals the process, as ngx_signal_process.
fn send_signal(compiled: &Compiled, signal: Signal) -> ExitCode {
    emit("notice", "signal process started");
    let path = compiled
        .model
        .global
        .pid
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_PID));
    let pid = match pidfile::read_pid(&path) {
        Ok(pid) => pid,
        Err(e) => {
            emit("error", &e.to_string());
            return ExitCode::FAILURE;
        }
    };
    // SAFETY: kill(2) has no memory-safety preconditions; a bad pid is an error return.
    if unsafe { libc::kill(pid, signal.number()) } == -1 {
        let e = std::io::Error::last_os_error();
        emit(
            "alert",
            &format!(
                "kill({pid}, {}) failed ({})",
                signal.number(),
                compile::describe_io_error(&e)
            ),
        );
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

/// No `-t` or `-s`: serve, in the background unless `daemon off`.
fn serve(conf: PathBuf, options: Options, compiled: Compiled, args: &Args) -> ExitCode {
    let model = compiled.model;
    let error_log = model.global.error_log.clone().or_else(|| {
        args.error_log.as_ref().map(|p| ErrorLog {
            path: PathBuf::from(p),
            level: LogLevel::Notice,
        })
    });
    if let Err(m) = logging::init_error_log(error_log.as_ref()) {
        emit("emerg", &m);
        return ExitCode::FAILURE;
    }
    for line in compiled.report.startup_warnings() {
        tracing::warn!("{line}");
    }
    let globals = args.globals.clone();
    let reload: Reload = Arc::new(move || {
        compile_with_globals(&conf, &options, globals.as_deref()).map(|c| c.model)
    });
    let run = RunOptions {
        default_pid_file: Some(PathBuf::from(DEFAULT_PID)),
        daemon: model.global.daemon.unwrap_or(true),
        program: "nginx".to_string(),
        nginx_messages: true,
        ..RunOptions::default()
    };
    match crate::process::run(model, &run, reload) {
        Ok(()) => ExitCode::SUCCESS,
        Err(d) => {
            emit("emerg", &located(&d));
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<Args, String> {
        parse(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn options_parse_like_ngx_get_options() {
        let a = p(&["-tq", "-c", "/x.conf", "-gdaemon off;"]).unwrap();
        assert!(a.test && a.quiet && !a.dump);
        assert_eq!(a.conf.as_deref(), Some("/x.conf"));
        assert_eq!(a.globals.as_deref(), Some("daemon off;"));
        assert_eq!(p(&["-s", "reload"]).unwrap().signal, Some(Signal::Reload));
        assert_eq!(p(&["-sstop"]).unwrap().signal, Some(Signal::Stop));
        assert_eq!(
            p(&["-s", "bogus"]).unwrap_err(),
            "invalid option: \"-s bogus\""
        );
        assert_eq!(p(&["-x"]).unwrap_err(), "invalid option: \"x\"");
        assert_eq!(p(&["foo"]).unwrap_err(), "invalid option: \"foo\"");
        assert_eq!(p(&["-c"]).unwrap_err(), "option \"-c\" requires file name");
        assert_eq!(
            p(&["-p"]).unwrap_err(),
            "option \"-p\" requires directory name"
        );
        assert_eq!(p(&["-g"]).unwrap_err(), "option \"-g\" requires parameter");
        assert!(p(&["-T"]).unwrap().dump);
        assert!(p(&["-V"]).unwrap().configure);
        assert!(p(&["-?"]).unwrap().help);
    }

    #[test]
    fn globals_apply_to_a_toml_config() {
        let options = Options::default();
        let mut g = crate::config::Global {
            worker_threads: Some(4),
            sticky_secret: Some("kept".into()),
            ..Default::default()
        };
        apply_globals(
            &mut g,
            "daemon off; master_process on; pid /tmp/x.pid; worker_priority -5; \
             worker_cpu_affinity auto 0110; worker_processes 2;",
            &options,
        )
        .unwrap();
        assert_eq!(g.daemon, Some(false));
        assert_eq!(g.pid, Some(PathBuf::from("/tmp/x.pid")));
        assert_eq!(g.worker_priority, Some(-5));
        assert_eq!(
            g.worker_cpu_affinity,
            Some(crate::config::CpuAffinity::AutoFrom(vec![1, 2]))
        );
        assert_eq!(g.worker_threads, Some(2));
        assert_eq!(g.sticky_secret.as_deref(), Some("kept"), "untouched by -g");
        let e = apply_globals(&mut g, "foo bar;", &options).unwrap_err();
        assert_eq!(e.message, "unknown directive \"foo\" in command line");
        let e = apply_globals(&mut g, "worker_priority x;", &options).unwrap_err();
        assert!(e.message.contains("worker_priority"), "{}", e.message);
        assert_eq!(
            e.origin.map(|o| o.file.to_string()).as_deref(),
            Some("command line")
        );
    }
}
