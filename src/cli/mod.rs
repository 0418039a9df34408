//! The command line. Each subcommand is a thin call into the library; this module only parses
//! arguments, prints, and picks exit statuses.

mod check;
mod demo;
mod firstboot;
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
        #[command(flatten)]
        elb: ElbArgs,
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
        #[command(flatten)]
        elb: ElbArgs,
    },
    /// Configure this appliance from its EC2 user data (IMDSv2); run at boot by the image.
    Firstboot {
        /// The config directory: `config` there is linked to the applied config.
        #[arg(long, default_value = "/etc/appliance")]
        etc: PathBuf,
        /// Where the last applied user data is kept.
        #[arg(long, default_value = "/var/lib/appliance-firstboot")]
        state: PathBuf,
        /// The IMDS endpoint (else `appliance.imds_endpoint=` on the kernel command line, else
        /// ETC/imds-endpoint, else the SDK's default, http://169.254.169.254).
        #[arg(long)]
        imds_endpoint: Option<String>,
        /// Read the user data from this file instead of IMDS.
        #[arg(long)]
        user_data: Option<PathBuf>,
        /// How long to keep trying while IMDS does not answer, in seconds.
        #[arg(long, default_value_t = 30)]
        patience: u64,
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
        #[command(flatten)]
        elb: ElbArgs,
    },
}

/// What an ELB script needs from outside it.
#[derive(clap::Args, Debug, Default)]
pub struct ElbArgs {
    /// Set a shell variable the script uses (wins over the script's own assignment).
    #[arg(long = "var", value_name = "NAME=VALUE", value_parser = parse_var)]
    pub vars: Vec<(String, String)>,
    /// Read instance addresses from this file instead of EC2 ("i-123 10.0.0.5" lines, or JSON).
    #[arg(long, value_name = "FILE")]
    pub instances_file: Option<PathBuf>,
    /// Look certificates up here by name (NAME.crt, NAME.key, NAME.chain.crt); certificates
    /// fetched from IAM are saved here.
    #[arg(long, value_name = "DIR")]
    pub cert_dir: Option<PathBuf>,
    /// The AWS region for EC2 and IAM calls (default: the SDK's chain).
    #[arg(long)]
    pub region: Option<String>,
    /// An endpoint URL for every AWS call (a stand-in such as moto's server).
    #[arg(long, value_name = "URL")]
    pub aws_endpoint: Option<String>,
}

impl ElbArgs {
    fn options(self, strict: bool) -> Options {
        Options {
            strict,
            vars: self.vars,
            instances_file: self.instances_file,
            cert_dir: self.cert_dir,
            region: self.region,
            aws_endpoint: self.aws_endpoint,
            ..Options::default()
        }
    }
}

fn parse_var(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((name, value)) if !name.is_empty() => Ok((name.to_string(), value.to_string())),
        _ => Err(format!("\"{s}\" is not NAME=VALUE")),
    }
}

/// Runs the command line and returns the process's exit status.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Migrate {
            input,
            output,
            strict,
            elb,
        } => migrate::run(&input, output.as_deref(), &elb.options(strict)),
        Command::Check {
            config,
            strict,
            quiet,
            elb,
        } => check::run(&config, &elb.options(strict), quiet, "appliance"),
        Command::Demo { port, rate } => demo::run(&demo::DemoOptions { port, rate }),
        Command::Run {
            config,
            strict,
            upgrade,
            elb,
        } => run::run(
            &config,
            &elb.options(strict),
            &crate::proxy::RunOptions {
                upgrade,
                ..Default::default()
            },
        ),
        Command::Firstboot {
            etc,
            state,
            imds_endpoint,
            user_data,
            patience,
        } => firstboot::run(&firstboot::Args {
            etc,
            state,
            imds_endpoint,
            user_data,
            patience: std::time::Duration::from_secs(patience),
        }),
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
