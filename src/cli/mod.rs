//! The command line. Each subcommand is a thin call into the library; this module only parses
//! arguments, prints, and picks exit statuses.

mod check;
mod firstboot;
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
