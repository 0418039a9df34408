//! `appliance iam policy` and `appliance iam setup`: the IAM side of an HA pair.

use std::process::ExitCode;

use crate::aws::{iam, iam_client, Endpoint};

pub fn policy() -> ExitCode {
    match serde_json::to_string_pretty(&iam::ha_policy()) {
        Ok(text) => {
            println!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("appliance: [emerg] cannot print the policy: {e}");
            ExitCode::FAILURE
        }
    }
}

pub fn setup(role: &str, profile: &str, endpoint: Endpoint) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("appliance: [emerg] cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let client = iam_client(&endpoint).await;
        match iam::setup(&client, role, profile).await {
            Ok(steps) => {
                for step in steps {
                    println!("{}: {}", step.what, step.outcome);
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("appliance: [emerg] {e}");
                ExitCode::FAILURE
            }
        }
    })
}
