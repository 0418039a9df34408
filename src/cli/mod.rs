//! The command line. Each subcommand is a thin call into the library; this module only parses
//! arguments, prints, and picks exit statuses.

mod check;
mod ha_agent;
mod iam;
mod migrate;

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
    /// The IAM role an HA pair on EC2 runs under.
    Iam {
        #[command(subcommand)]
        command: IamCommand,
    },
    /// Run only the HA monitor, with an HTTP probe as the self-check (tests, benchmarks).
    #[command(hide = true)]
    HaAgent {
        /// The appliance.toml (or nginx.conf) with the [ha] section.
        #[arg(short = 'c', long = "config")]
        config: PathBuf,
        /// The data plane's health URL, e.g. http://127.0.0.1:80/.
        #[arg(long)]
        probe: String,
        /// Keep the status JSON in this file.
        #[arg(long)]
        status_file: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
pub enum IamCommand {
    /// Print the least-privilege policy the HA pair needs.
    Policy,
    /// Create (or find) the role, its inline policy and the instance profile.
    Setup {
        #[arg(long, default_value = "appliance-ha")]
        role_name: String,
        #[arg(long, default_value = "appliance-ha")]
        profile_name: String,
        /// Send every AWS call here (a stand-in such as moto).
        #[arg(long)]
        aws_endpoint: Option<String>,
        #[arg(long)]
        region: Option<String>,
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
        Command::Iam {
            command: IamCommand::Policy,
        } => iam::policy(),
        Command::Iam {
            command:
                IamCommand::Setup {
                    role_name,
                    profile_name,
                    aws_endpoint,
                    region,
                },
        } => iam::setup(
            &role_name,
            &profile_name,
            crate::aws::Endpoint {
                region,
                url: aws_endpoint,
            },
        ),
        Command::HaAgent {
            config,
            probe,
            status_file,
        } => ha_agent::run(&config, &probe, status_file),
    }
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
