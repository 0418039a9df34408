//! The user-data format: what an operator puts in an instance's EC2 user data so that the
//! appliance configures itself on first boot (specified in docs/USER-DATA.md).
//!
//! The documented form is a TOML document with an `[appliance]` table that carries the config
//! (an nginx.conf, an ELB script or an appliance.toml, as text) and the files it includes, and
//! optional `[ha]` and `[admin]` tables that are merged into the compiled model, so an nginx.conf
//! can be deployed unchanged as one node of a pair. A bare appliance.toml, nginx.conf or ELB
//! script is accepted too.

use std::collections::BTreeMap;
use std::path::{Component, Path};

use serde::Deserialize;

use crate::compile::{self, InputKind};
use crate::config::{line_col, Admin, Ha};

/// Parsed user data, ready to be written out and checked.
#[derive(Debug)]
pub struct UserData {
    pub kind: InputKind,
    /// The main config's text.
    pub config: String,
    /// Further files (nginx includes, certificates), by path relative to the config's directory.
    pub files: BTreeMap<String, String>,
    /// Merged into the compiled model: the pair's settings for an nginx.conf or ELB script.
    pub ha: Option<Ha>,
    pub admin: Option<Admin>,
}

impl UserData {
    /// The main config's file name, which also tells `compile` what it is.
    pub fn main_file(&self) -> &'static str {
        match self.kind {
            InputKind::Nginx => "nginx.conf",
            InputKind::Elb => "elb.sh",
            InputKind::Toml => "appliance.toml",
        }
    }
}

/// Why user data was not used.
#[derive(Debug, PartialEq, Eq)]
pub enum NotUsed {
    /// Empty, or only whitespace.
    Empty,
    /// Meant for another tool (cloud-init's `#cloud-config`, a MIME multipart).
    Foreign(&'static str),
    /// Meant for the appliance, but wrong; the message says where and why.
    Invalid(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Document {
    appliance: Section,
    ha: Option<Ha>,
    admin: Option<Admin>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Section {
    /// `nginx`, `elb` or `toml`; detected from the text when absent.
    format: Option<Format>,
    config: String,
    #[serde(default)]
    files: BTreeMap<String, String>,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum Format {
    Nginx,
    Elb,
    Toml,
}

/// The name user data goes by in messages.
pub const SOURCE_NAME: &str = "user-data";

pub fn parse(text: &str) -> Result<UserData, NotUsed> {
    let trimmed = text.trim_start();
    if trimmed.is_empty() {
        return Err(NotUsed::Empty);
    }
    if trimmed.starts_with("#cloud-config") || trimmed.starts_with("#include") {
        return Err(NotUsed::Foreign("cloud-init configuration"));
    }
    if trimmed
        .get(..13)
        .is_some_and(|head| head.eq_ignore_ascii_case("content-type:"))
        || trimmed.starts_with("MIME-Version:")
    {
        return Err(NotUsed::Foreign("a MIME multipart document (cloud-init)"));
    }

    // TOML first: the documented wrapper, or a bare appliance.toml.
    if let Ok(table) = text.parse::<toml::Table>() {
        if table.contains_key("appliance") {
            return wrapper(text);
        }
        return Ok(UserData {
            kind: InputKind::Toml,
            config: text.to_string(),
            files: BTreeMap::new(),
            ha: None,
            admin: None,
        });
    }
    // Not TOML: a bare nginx.conf or ELB script, told apart as `appliance check` would.
    Ok(UserData {
        kind: compile::detect(Path::new(SOURCE_NAME), text),
        config: text.to_string(),
        files: BTreeMap::new(),
        ha: None,
        admin: None,
    })
}

fn wrapper(text: &str) -> Result<UserData, NotUsed> {
    let document: Document = toml::from_str(text).map_err(|e| {
        let at = e
            .span()
            .map(|span| {
                let (line, column) = line_col(text, span.start);
                format!(" in {SOURCE_NAME}:{line}:{column}")
            })
            .unwrap_or_default();
        NotUsed::Invalid(format!("{}{at}", e.message().trim_end()))
    })?;
    let section = document.appliance;
    for path in section.files.keys() {
        check_relative(path)?;
    }
    let kind = match section.format {
        Some(Format::Nginx) => InputKind::Nginx,
        Some(Format::Elb) => InputKind::Elb,
        Some(Format::Toml) => InputKind::Toml,
        None if section.config.parse::<toml::Table>().is_ok() => InputKind::Toml,
        None => compile::detect(Path::new(SOURCE_NAME), &section.config),
    };
    let data = UserData {
        kind,
        config: section.config,
        files: section.files,
        ha: document.ha,
        admin: document.admin,
    };
    if data.files.contains_key(data.main_file()) {
        return Err(NotUsed::Invalid(format!(
            "[appliance.files] must not name \"{}\": that is where [appliance] config goes",
            data.main_file()
        )));
    }
    Ok(data)
}

/// Files land in the config's own directory: no absolute paths, no way out of it.
fn check_relative(path: &str) -> Result<(), NotUsed> {
    let p = Path::new(path);
    let inside = !path.is_empty()
        && p.components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
        && p.components().any(|c| matches!(c, Component::Normal(_)));
    if inside {
        Ok(())
    } else {
        Err(NotUsed::Invalid(format!(
            "[appliance.files] \"{path}\": file names must be relative paths inside the \
             config's directory (no leading /, no ..)"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NGINX: &str = "events {}\nhttp { server { listen 80; return 200; } }\n";

    #[test]
    fn wrapper_with_nginx_includes_and_ha() {
        let text = r#"
[appliance]
format = "nginx"
config = '''
events {}
http { include conf.d/*.conf; }
'''
files."conf.d/site.conf" = "server { listen 80; return 204; }"

[ha]
mode = "local"
peer = "192.0.2.12:5405"
vip = "192.0.2.100"
interface = "eth1"
"#;
        let data = parse(text).unwrap();
        assert_eq!(data.kind, InputKind::Nginx);
        assert_eq!(data.main_file(), "nginx.conf");
        assert!(data.config.contains("include conf.d/*.conf"));
        assert_eq!(data.files.len(), 1);
        let ha = data.ha.unwrap();
        assert_eq!(ha.vip.to_string(), "192.0.2.100");
        assert_eq!(ha.priority, 100, "defaults come from the model");
    }

    #[test]
    fn format_is_detected_when_absent() {
        let elb = "[appliance]\nconfig = '''\nelb-create-lb web --listener \"protocol=HTTP, lb-port=80, instance-port=8080\"\n'''\n";
        assert_eq!(parse(elb).unwrap().kind, InputKind::Elb);
        let toml = "[appliance]\nconfig = '''\n[admin]\nlisten = \"127.0.0.1:9901\"\n'''\n";
        assert_eq!(parse(toml).unwrap().kind, InputKind::Toml);
        let nginx = format!("[appliance]\nconfig = '''\n{NGINX}'''\n");
        assert_eq!(parse(&nginx).unwrap().kind, InputKind::Nginx);
    }

    #[test]
    fn bare_configs_are_accepted() {
        assert_eq!(parse(NGINX).unwrap().kind, InputKind::Nginx);
        let toml = parse("[admin]\nlisten = \"127.0.0.1:9901\"\n").unwrap();
        assert_eq!(toml.kind, InputKind::Toml);
        assert_eq!(toml.main_file(), "appliance.toml");
        let elb = parse("#!/bin/sh\nelb-create-lb web --listener \"protocol=HTTP, lb-port=80, instance-port=80\"\n").unwrap();
        assert_eq!(elb.kind, InputKind::Elb);
    }

    #[test]
    fn other_tools_user_data_is_left_alone() {
        assert!(matches!(parse("  \n"), Err(NotUsed::Empty)));
        assert!(matches!(
            parse("#cloud-config\npackages: [nginx]\n"),
            Err(NotUsed::Foreign(_))
        ));
        assert!(matches!(
            parse("Content-Type: multipart/mixed; boundary=\"x\"\n"),
            Err(NotUsed::Foreign(_))
        ));
    }

    #[test]
    fn mistakes_name_their_line() {
        let text = "[appliance]\nconfig = \"events {}\"\nfromat = \"nginx\"\n";
        match parse(text) {
            Err(NotUsed::Invalid(msg)) => {
                assert!(msg.contains("fromat"), "{msg}");
                assert!(msg.contains("user-data:3:1"), "{msg}");
            }
            other => panic!("expected an error, got {other:?}"),
        }
        let missing = "[appliance]\nformat = \"nginx\"\n";
        assert!(matches!(parse(missing), Err(NotUsed::Invalid(m)) if m.contains("config")));
        let bad_ha = "[appliance]\nconfig = \"x\"\n[ha]\nmode = \"carp\"\n";
        assert!(matches!(parse(bad_ha), Err(NotUsed::Invalid(_))));
    }

    #[test]
    fn files_cannot_escape_the_config_directory() {
        for bad in ["/etc/passwd", "../x.conf", "a/../../b", "", "."] {
            let text = format!("[appliance]\nconfig = \"events {{}}\"\nfiles.\"{bad}\" = \"x\"\n");
            match parse(&text) {
                Err(NotUsed::Invalid(msg)) => assert!(msg.contains("relative"), "{bad}: {msg}"),
                other => panic!("{bad}: expected rejection, got {other:?}"),
            }
        }
        let main_twice = "[appliance]\nformat = \"nginx\"\nconfig = \"events {}\"\nfiles.\"nginx.conf\" = \"x\"\n";
        assert!(matches!(parse(main_twice), Err(NotUsed::Invalid(m)) if m.contains("nginx.conf")));
    }
}
