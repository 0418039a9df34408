//! Front ends: turn what operators already have (an nginx.conf, an ELB script, an
//! appliance.toml) into the one model, [`crate::config::Appliance`], with a report of what mapped
//! and what did not.

pub mod diag;
pub mod elb;
pub mod nginx;
pub mod render;
pub mod report;

use std::path::Path;
use std::sync::Arc;

use crate::config::{self, Appliance};
use diag::{Diagnostic, Sources};
pub use report::{Impact, Report, ReportItem, Support};

/// The kinds of input `run`, `check` and `migrate` accept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InputKind {
    Nginx,
    Elb,
    Toml,
}

/// How to compile: options shared by the front ends.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Make every unsupported directive an error (`--strict`).
    pub strict: bool,
    /// nginx's `-p`: the prefix relative paths in the config are resolved against.
    pub prefix: Option<std::path::PathBuf>,
    /// nginx's `-g`: directives added to the main context.
    pub global_directives: Option<String>,
    /// ELB scripts: shell variables (`--var NAME=VALUE`), which win over the script's own
    /// assignments.
    pub vars: Vec<(String, String)>,
    /// ELB scripts: instance addresses read from a file instead of EC2 (`--instances-file`).
    pub instances_file: Option<std::path::PathBuf>,
    /// ELB scripts: where certificates are looked up by name, and fetched ones saved
    /// (`--cert-dir`).
    pub cert_dir: Option<std::path::PathBuf>,
    /// The AWS region (`--region`); unset, the SDK's chain decides.
    pub region: Option<String>,
    /// An endpoint URL that replaces every AWS service's (`--aws-endpoint`).
    pub aws_endpoint: Option<String>,
    /// Only the report is wanted (`migrate`): a config is compiled even when it uses an access
    /// control the appliance does not enforce, which anything that serves it refuses.
    pub report_only: bool,
}

/// A compiled input: the model, what the compiler has to say about it, and the texts it read
/// (for rich diagnostics).
#[derive(Debug)]
pub struct Compiled {
    pub model: Appliance,
    pub report: Report,
    pub sources: Sources,
    pub kind: InputKind,
}

/// A failed compilation: the diagnostic, and the sources to render it against.
#[derive(Debug)]
pub struct Failed {
    pub diagnostic: Box<Diagnostic>,
    pub sources: Sources,
}

impl From<Diagnostic> for Failed {
    fn from(diagnostic: Diagnostic) -> Self {
        Failed {
            diagnostic: Box::new(diagnostic),
            sources: Sources::default(),
        }
    }
}

/// Decides what a file is: `.toml` is an appliance config; a script whose commands are `elb-*`
/// or `iam-servercertupload` is an ELB script; anything else is read as nginx.conf.
pub fn detect(path: &Path, text: &str) -> InputKind {
    if path.extension().is_some_and(|e| e == "toml") {
        return InputKind::Toml;
    }
    // A shell or batch script is never an nginx.conf.
    if path
        .extension()
        .is_some_and(|e| ["sh", "bash", "cmd", "bat"].iter().any(|x| e == *x))
    {
        return InputKind::Elb;
    }
    let elb_command = text.lines().any(|line| {
        // Prompts from pasted sessions: `$ elb-...`, and `# elb-...` as root.
        let line = line.trim_start().trim_start_matches(['$', '#', ' ', '\t']);
        line.split_whitespace().next().is_some_and(|w| {
            let w = w.rsplit('/').next().unwrap_or(w);
            w.starts_with("elb-") || w.starts_with("iam-servercertupload")
        })
    });
    if elb_command {
        InputKind::Elb
    } else {
        InputKind::Nginx
    }
}

/// Reads and compiles any supported input, then validates the model.
pub fn compile_file(path: &Path, options: &Options) -> Result<Compiled, Failed> {
    // A symlink (the image's /etc/appliance/config) is read as the file it points at: its name
    // says what it is, and its includes are relative to its own directory. Any other path keeps
    // the name the user gave it, which diagnostics repeat, as nginx does.
    let is_link = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink());
    let resolved = if is_link {
        std::fs::canonicalize(path).ok()
    } else {
        None
    };
    let path = resolved.as_deref().unwrap_or(path);
    let text = std::fs::read(path).map_err(|e| {
        Diagnostic::error(format!(
            "open() \"{}\" failed ({})",
            path.display(),
            describe_io_error(&e)
        ))
    })?;
    let name: Arc<str> = path.to_string_lossy().into();
    let compiled = match detect(path, &String::from_utf8_lossy(&text)) {
        InputKind::Toml => {
            let text = String::from_utf8(text)
                .map_err(|_| Diagnostic::error(format!("{} is not UTF-8 text", path.display())))?;
            let mut sources = Sources::default();
            sources.insert(name.clone(), text.as_str().into());
            let model = Appliance::from_toml(&text, &name).map_err(|d| Failed {
                diagnostic: Box::new(d),
                sources: sources.clone(),
            })?;
            Compiled {
                model,
                report: Report::default(),
                sources,
                kind: InputKind::Toml,
            }
        }
        InputKind::Nginx => nginx::compile(path, options)?,
        InputKind::Elb => elb::compile(path, &String::from_utf8_lossy(&text), options)?,
    };
    if let Err(mut d) = config::validate(&compiled.model) {
        if compiled.kind == InputKind::Toml {
            if let Some(text) = compiled.sources.get(&name) {
                d = config::place_in_toml(d, text, &name);
            }
        }
        return Err(Failed {
            diagnostic: Box::new(d),
            sources: compiled.sources,
        });
    }
    if let (false, Some(d)) = (options.report_only, compiled.report.access_error()) {
        return Err(Failed {
            diagnostic: Box::new(d),
            sources: compiled.sources,
        });
    }
    Ok(compiled)
}

/// The words nginx uses after `failed (`, e.g. `2: No such file or directory`.
pub fn describe_io_error(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(code) => {
            let text = e.to_string();
            let text = text.split(" (os error").next().unwrap_or(&text).to_string();
            format!("{code}: {text}")
        }
        None => e.to_string(),
    }
}
