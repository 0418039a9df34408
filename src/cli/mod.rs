//! The command line. Each subcommand is a thin call into the library; this module only parses
//! arguments, prints, and picks exit statuses.

mod check;
mod demo;
mod firstboot;
mod ha_agent;
mod iam;
mod migrate;
pub mod nginx;
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
        /// Take the listening sockets over from a running instance, on --upgrade-sock.
        #[arg(long)]
        upgrade: bool,
        /// The Unix socket the sockets arrive on with --upgrade.
        #[arg(long, value_name = "PATH", requires = "upgrade")]
        upgrade_sock: Option<PathBuf>,
        /// Write the pid here (and remove it at exit) unless the config's `pid` says where.
        #[arg(long, value_name = "FILE")]
        pid_file: Option<PathBuf>,
        /// Serve the admin API (status, metrics, healthz) here when the config has no
        /// `[admin]` section.
        #[arg(long, value_name = "ADDR")]
        admin: Option<std::net::SocketAddr>,
        #[command(flatten)]
        elb: ElbArgs,
    },
    /// nginx's own command line (-t, -T, -s reload, -c, -g, ...), as when the binary is
    /// installed as `nginx`.
    #[command(disable_help_flag = true, disable_version_flag = true)]
    Nginx {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<std::ffi::OsString>,
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
    crate::process::upgrade::remember_invocation();
    let mut argv = std::env::args_os();
    let invoked_as = argv
        .next()
        .map(PathBuf::from)
        .and_then(|p| p.file_name().map(|n| n.to_os_string()));
    if invoked_as.is_some_and(|n| n == "nginx") {
        return nginx::main(argv.collect());
    }
    let cli = Cli::parse();
    match cli.command {
        Command::Migrate {
            input,
            output,
            strict,
            elb,
        } => {
            let options = Options {
                report_only: true,
                ..elb.options(strict)
            };
            migrate::run(&input, output.as_deref(), &options)
        }
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
            upgrade_sock,
            pid_file,
            admin,
            elb,
        } => run::run(
            &config,
            &elb.options(strict),
            &crate::proxy::RunOptions {
                upgrade,
                upgrade_sock,
                default_pid_file: pid_file,
                ..Default::default()
            },
            admin,
        ),
        Command::Nginx { args } => nginx::main(args),
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
