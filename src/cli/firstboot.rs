//! `appliance firstboot`: configure this appliance from its EC2 user data (run once per boot by
//! appliance-firstboot.service, before appliance.service). It always lets the boot go on: only
//! user data that is meant for the appliance and does not work makes it exit 1, so the unit
//! shows as failed while the previous config keeps serving.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use crate::firstboot::{self, imds, Layout, Outcome};

pub struct Args {
    pub etc: PathBuf,
    pub state: PathBuf,
    pub imds_endpoint: Option<String>,
    pub user_data: Option<PathBuf>,
    pub patience: Duration,
}

pub fn run(args: &Args) -> ExitCode {
    let layout = Layout {
        etc: args.etc.clone(),
        state: args.state.clone(),
    };
    let text = match &args.user_data {
        Some(path) => match std::fs::read(path) {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(e) => {
                say(&format!(
                    "cannot read {}: {e}; keeping the current config",
                    path.display()
                ));
                return ExitCode::FAILURE;
            }
        },
        None => match fetch(args, &layout) {
            Some(text) => text,
            None => return ExitCode::SUCCESS,
        },
    };
    let outcome = firstboot::apply(&layout, &text);
    match &outcome {
        Outcome::Applied { main, kind } => say(&format!(
            "applied the user data: {} ({kind:?}) checked and linked as {}",
            main.display(),
            layout.config_link().display()
        )),
        Outcome::Unchanged { main } => say(&format!(
            "the user data is unchanged since it was applied; running {}",
            main.display()
        )),
        Outcome::Kept(why) => say(&format!("{why}; keeping the current config")),
        Outcome::Rejected(why) => say(&format!(
            "the user data was rejected: {why}; keeping the current config"
        )),
    }
    if outcome.is_failure() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// The user data from IMDS, or `None` (said why) when there is none to apply.
fn fetch(args: &Args, layout: &Layout) -> Option<String> {
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let endpoint = imds::endpoint(
        args.imds_endpoint.as_deref(),
        &cmdline,
        &layout.etc.join("imds-endpoint"),
    );
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            say(&format!(
                "cannot start the async runtime: {e}; keeping the current config"
            ));
            return None;
        }
    };
    let shown = endpoint.as_deref().unwrap_or("the default IMDS endpoint");
    match runtime.block_on(imds::fetch_user_data(endpoint.as_deref(), args.patience)) {
        imds::Fetched::UserData(text) => {
            say(&format!(
                "read {} bytes of user data from {shown}",
                text.len()
            ));
            Some(text)
        }
        imds::Fetched::NoUserData => {
            say(&format!(
                "{shown} has no user data for this instance; keeping the current config"
            ));
            None
        }
        imds::Fetched::Unreachable(why) => {
            say(&format!(
                "no user data: {why} ({shown}); keeping the current config"
            ));
            None
        }
    }
}

/// One line on standard output, which the unit sends to the journal and the console.
fn say(message: &str) {
    println!("appliance-firstboot: {message}");
}
