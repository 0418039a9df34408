//! The command line. Each subcommand is a thin call into the library; this module only parses
//! arguments, prints, and picks exit statuses.

mod check;
mod demo;
mod migrate;
mod run;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::compile::{self, Failed, Options};

#[derive(Parser, Debug)]
#[command(
    name = "appliance",
    version,
    about = "A load balancer on Pingora that runs your nginx.conf and ELB scripts"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Compile an nginx.conf or ELB script to appliance.toml and report what did not map.
    Migrate {
        /// The nginx.conf, ELB script or appliance.toml to read.
        input: PathBuf,
        /// Write the TOML here instead of standard output.
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Make every unsupported directive an error.
        #[arg(long)]
        strict: bool,
    },
    /// Test a configuration the way `nginx -t` does.
    Check {
        /// The nginx.conf, ELB script or appliance.toml to test.
        #[arg(short = 'c', long = "config")]
        config: PathBuf,
        /// Make every unsupported directive an error.
        #[arg(long)]
        strict: bool,
        /// Print only errors.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Three backends behind the appliance on loopback, with a live count of who served what.
    Demo {
        /// The port the proxy listens on (another is chosen if it is taken).
        #[arg(long, default_value_t = 8080)]
        port: u16,
        /// Requests per second the demo sends itself (0: only yours).
        #[arg(long, default_value_t = 5)]
        rate: u32,
    },
    /// Serve a configuration in the foreground.
    Run {
        /// The nginx.conf, ELB script or appliance.toml to serve.
        #[arg(short = 'c', long = "config")]
        config: PathBuf,
        /// Make every unsupported directive an error.
        #[arg(long)]
        strict: bool,
        /// Take the listening sockets over from a running instance.
        #[arg(long)]
        upgrade: bool,
    },
}

/// Runs the command line and returns the process's exit status.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Migrate {
            input,
            output,
            strict,
        } => migrate::run(
            &input,
            output.as_deref(),
            &Options {
                strict,
                ..Options::default()
            },
        ),
        Command::Check {
            config,
            strict,
            quiet,
        } => check::run(
            &config,
            &Options {
                strict,
                ..Options::default()
            },
            quiet,
            "appliance",
        ),
        Command::Demo { port, rate } => demo::run(&demo::DemoOptions { port, rate }),
        Command::Run {
            config,
            strict,
            upgrade,
        } => run::run(
            &config,
            &Options {
                strict,
                ..Options::default()
            },
            &crate::proxy::RunOptions {
                upgrade,
                ..Default::default()
            },
        ),
    }
}

/// Logs to standard error; `APPLIANCE_LOG` or `RUST_LOG` set the level (default info).
pub(crate) fn init_logging() {
    init_logging_at("info");
}

pub(crate) fn init_logging_at(default: &str) {
    let filter = std::env::var("APPLIANCE_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| default.to_string());
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .try_init();
}

/// Prints a failed compilation to standard error: nginx's one-liner, and on a terminal the rich
/// snippet after it.
pub(crate) fn print_failure(failed: &Failed, program: &str) {
    eprintln!("{}", failed.diagnostic.one_line(program));
    if std::io::stderr().is_terminal() {
        eprintln!("{}", failed.diagnostic.render(&failed.sources, true));
    }
}

pub(crate) fn compile(
    path: &std::path::Path,
    options: &Options,
) -> Result<compile::Compiled, Failed> {
    compile::compile_file(path, options)
}
