//! The command and option grammar: which `elb-*` and IAM commands exist, which options each
//! takes, and how a simple command's words become a [`Command`] with its load balancer name and
//! options, still unexpanded.
//!
//! Options are written as the Java API tools accepted them and as people typed them: `--opt v`,
//! `--opt=v`, single-dash long options (`-region`), the tools' short flags (`-z`, `-t`, `-I`),
//! the load balancer as the first positional argument or `--lb NAME`.

use std::ops::Range;

use super::words::Word;
use super::Source;
use crate::compile::diag::Diagnostic;

/// What a command does; the semantics match on this, never on spellings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    CreateLb,
    CreateLbListeners,
    DeleteLbListeners,
    ConfigureHealthcheck,
    RegisterInstances,
    DeregisterInstances,
    EnableZones,
    DisableZones,
    CreateLbCookieStickinessPolicy,
    CreateAppCookieStickinessPolicy,
    SetLbPoliciesOfListener,
    SetLbListenerSslCert,
    CreateLbPolicy,
    DeleteLbPolicy,
    SetLbPoliciesForBackendServer,
    ModifyLbAttributes,
    ApplySecurityGroups,
    AttachSubnets,
    DetachSubnets,
    AddTags,
    RemoveTags,
    DeleteLb,
    /// `elb-describe-*`, `elb-version`: they read, and change nothing.
    ReadOnly,
    IamServerCertUpload,
}

/// One option a command accepts.
#[derive(Debug)]
pub struct OptSpec {
    /// The canonical long name, without dashes; the semantics look options up by it.
    pub key: &'static str,
    /// Other long spellings accepted.
    pub aliases: &'static [&'static str],
    pub short: Option<char>,
    pub takes_value: bool,
    pub repeatable: bool,
}

const fn opt(key: &'static str) -> OptSpec {
    OptSpec {
        key,
        aliases: &[],
        short: None,
        takes_value: true,
        repeatable: false,
    }
}

const fn flag(key: &'static str) -> OptSpec {
    OptSpec {
        takes_value: false,
        ..opt(key)
    }
}

const fn short(key: &'static str, c: char) -> OptSpec {
    OptSpec {
        short: Some(c),
        ..opt(key)
    }
}

const fn many(key: &'static str) -> OptSpec {
    OptSpec {
        repeatable: true,
        ..opt(key)
    }
}

/// The options every tool accepts. They are about credentials and output, so the compiler
/// accepts and ignores them (except `--lb`, another way to name the load balancer).
pub const GENERAL: &[OptSpec] = &[
    opt("lb"),
    opt("region"),
    flag("headers"),
    flag("quiet"),
    short("access-key-id", 'I'),
    short("secret-key", 'S'),
    short("ec2-private-key-file-path", 'K'),
    short("ec2-cert-file-path", 'C'),
    opt("aws-credential-file"),
    flag("show-long"),
    flag("show-table"),
    flag("show-xml"),
    flag("show-empty-fields"),
    flag("show-request"),
    opt("delimiter"),
    short("url", 'U'),
    opt("connection-timeout"),
    OptSpec {
        short: Some('v'),
        ..flag("verbose")
    },
    flag("debug"),
    OptSpec {
        short: Some('h'),
        ..flag("help")
    },
];

/// A command of the ELB API tools or the IAM CLI.
#[derive(Debug)]
pub struct Spec {
    pub name: &'static str,
    pub kind: Kind,
    /// Whether it names a load balancer.
    pub names_lb: bool,
    pub options: &'static [OptSpec],
}

const LISTENER: OptSpec = many("listener");
const ZONES: OptSpec = short("availability-zones", 'z');
const POLICY_NAME: OptSpec = opt("policy-name");
const POLICY_NAMES: OptSpec = opt("policy-names");

const fn elb(name: &'static str, kind: Kind, options: &'static [OptSpec]) -> Spec {
    Spec {
        name,
        kind,
        names_lb: true,
        options,
    }
}

pub const COMMANDS: &[Spec] = &[
    elb(
        "elb-create-lb",
        Kind::CreateLb,
        &[
            LISTENER,
            ZONES,
            opt("subnets"),
            opt("security-groups"),
            opt("scheme"),
            many("tag"),
        ],
    ),
    elb(
        "elb-create-lb-listeners",
        Kind::CreateLbListeners,
        &[LISTENER],
    ),
    elb(
        "elb-delete-lb-listeners",
        Kind::DeleteLbListeners,
        &[opt("lb-ports")],
    ),
    elb(
        "elb-configure-healthcheck",
        Kind::ConfigureHealthcheck,
        &[
            short("target", 't'),
            opt("interval"),
            opt("timeout"),
            opt("healthy-threshold"),
            opt("unhealthy-threshold"),
        ],
    ),
    elb(
        "elb-register-instances-with-lb",
        Kind::RegisterInstances,
        &[many("instances")],
    ),
    elb(
        "elb-deregister-instances-from-lb",
        Kind::DeregisterInstances,
        &[many("instances")],
    ),
    elb("elb-enable-zones-for-lb", Kind::EnableZones, &[ZONES]),
    elb("elb-disable-zones-for-lb", Kind::DisableZones, &[ZONES]),
    elb(
        "elb-create-lb-cookie-stickiness-policy",
        Kind::CreateLbCookieStickinessPolicy,
        &[POLICY_NAME, opt("expiration-period")],
    ),
    elb(
        "elb-create-app-cookie-stickiness-policy",
        Kind::CreateAppCookieStickinessPolicy,
        &[POLICY_NAME, opt("cookie-name")],
    ),
    elb(
        "elb-set-lb-policies-of-listener",
        Kind::SetLbPoliciesOfListener,
        &[opt("lb-port"), POLICY_NAMES],
    ),
    elb(
        "elb-set-lb-listener-ssl-cert",
        Kind::SetLbListenerSslCert,
        &[opt("lb-port"), opt("cert-id")],
    ),
    elb(
        "elb-create-lb-policy",
        Kind::CreateLbPolicy,
        &[
            POLICY_NAME,
            opt("policy-type"),
            OptSpec {
                aliases: &["attributes"],
                ..many("attribute")
            },
        ],
    ),
    elb("elb-delete-lb-policy", Kind::DeleteLbPolicy, &[POLICY_NAME]),
    elb(
        "elb-set-lb-policies-for-backend-server",
        Kind::SetLbPoliciesForBackendServer,
        &[opt("instance-port"), POLICY_NAMES],
    ),
    elb(
        "elb-modify-lb-attributes",
        Kind::ModifyLbAttributes,
        &[
            OptSpec {
                aliases: &["cross-zone-load-balancing", "crosszoneloadbalancing"],
                ..opt("crosszone-loadbalancing")
            },
            OptSpec {
                aliases: &["connectiondraining"],
                ..opt("connection-draining")
            },
            OptSpec {
                aliases: &["connectionsettings"],
                ..opt("connection-settings")
            },
            OptSpec {
                aliases: &["accesslog"],
                ..opt("access-log")
            },
        ],
    ),
    elb(
        "elb-apply-security-groups-to-lb",
        Kind::ApplySecurityGroups,
        &[opt("security-groups")],
    ),
    elb(
        "elb-attach-lb-to-subnets",
        Kind::AttachSubnets,
        &[opt("subnets")],
    ),
    elb(
        "elb-detach-lb-from-subnets",
        Kind::DetachSubnets,
        &[opt("subnets")],
    ),
    elb("elb-add-tags", Kind::AddTags, &[many("tag")]),
    elb("elb-remove-tags", Kind::RemoveTags, &[many("tag")]),
    elb("elb-delete-lb", Kind::DeleteLb, &[flag("force")]),
    elb("elb-describe-lbs", Kind::ReadOnly, &[]),
    elb("elb-describe-instance-health", Kind::ReadOnly, &[]),
    elb("elb-describe-lb-policies", Kind::ReadOnly, &[]),
    elb("elb-describe-lb-policy-types", Kind::ReadOnly, &[]),
    elb("elb-describe-lb-attributes", Kind::ReadOnly, &[]),
    elb("elb-describe-tags", Kind::ReadOnly, &[]),
    elb("elb-version", Kind::ReadOnly, &[]),
    Spec {
        name: "iam-servercertupload",
        kind: Kind::IamServerCertUpload,
        names_lb: false,
        options: &[
            short("certificate-body-file", 'b'),
            short("private-key-file", 'k'),
            short("certificate-chain-file", 'c'),
            short("server-certificate-name", 's'),
            short("path", 'p'),
        ],
    },
];

/// A recognized command, its words sorted into the load balancer name and options.
#[derive(Clone, Debug)]
pub struct Command {
    pub spec: &'static Spec,
    /// Where the command word starts: every item it produces carries this origin.
    pub at: usize,
    /// The command name in the source, without any `$AWS_ELB_HOME/bin/` or `./` prefix.
    pub name_span: Range<usize>,
    pub lb: Option<Word>,
    pub options: Vec<Opt>,
    pub span: Range<usize>,
}

#[derive(Clone, Debug)]
pub struct Opt {
    pub key: &'static str,
    /// The option as written (`--timeout`, `-t`, `-region`).
    pub flag: Range<usize>,
    pub value: Option<Word>,
}

impl Command {
    pub fn name(&self) -> &'static str {
        self.spec.name
    }

    /// Every value given for `key`, in order.
    pub fn values<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a Opt> + 'a {
        self.options.iter().filter(move |o| o.key == key)
    }

    pub fn get(&self, key: &str) -> Option<&Opt> {
        self.options.iter().find(|o| o.key == key)
    }
}

/// The command a word names, if it is an ELB or IAM tool: the name with any directory prefix
/// (`$AWS_ELB_HOME/bin/`, `./`) and a Windows `.cmd` suffix removed, and its span.
pub fn command_name(word: &Word) -> Option<(String, Range<usize>)> {
    let Some(super::words::Part::Text { text, at, .. }) = word.parts.last() else {
        return None;
    };
    let start = text.rfind('/').map_or(0, |i| i + 1);
    if start == 0 && word.parts.len() > 1 {
        return None;
    }
    let name = &text[start..];
    let name = name
        .strip_suffix(".cmd")
        .or_else(|| name.strip_suffix(".CMD"))
        .unwrap_or(name);
    if !(name.starts_with("elb-") || name.starts_with("iam-")) || name.len() <= 4 {
        return None;
    }
    let from = at.get(start).copied()?;
    Some((name.to_string(), from..from + name.len()))
}

/// The known command closest to a misspelt one. The verb (`deregister` in
/// `elb-deregister-instances-with-lb`) says what the author meant to do, so commands with the
/// same verb come first; then the fewest edits.
pub fn closest(name: &str) -> Option<&'static str> {
    let verb = |n: &str| n.split('-').nth(1).unwrap_or("").to_string();
    COMMANDS
        .iter()
        .map(|s| {
            let d = strsim::levenshtein(name, s.name);
            (verb(name) != verb(s.name), d, s.name)
        })
        .filter(|(_, d, _)| *d <= name.len() / 3 + 2)
        .min()
        .map(|(_, _, n)| n)
}

/// Sorts the words after the command name into the load balancer name and options.
pub fn parse(
    spec: &'static Spec,
    command_word: &Word,
    name_span: Range<usize>,
    args: &[Word],
    src: &Source,
) -> Result<Command, Diagnostic> {
    let mut command = Command {
        spec,
        at: command_word.span.start,
        name_span,
        lb: None,
        options: Vec::new(),
        span: command_word.span.start..args.last().map_or(command_word.span.end, |w| w.span.end),
    };
    let mut i = 0;
    while i < args.len() {
        let word = &args[i];
        i += 1;
        let lead = word.leading_text();
        let is_option = lead.starts_with('-')
            && lead[1..]
                .trim_start_matches('-')
                .starts_with(|c: char| c.is_ascii_alphabetic());
        if !is_option {
            if spec.names_lb && command.lb.is_none() {
                command.lb = Some(word.clone());
                continue;
            }
            if spec.kind == Kind::ReadOnly {
                continue;
            }
            return Err(src.error(
                format!("{}: unexpected argument \"{}\"", spec.name, word.display()),
                word.span.clone(),
            ));
        }
        let dashes = if lead.starts_with("--") { 2 } else { 1 };
        let body_end = lead.find('=').unwrap_or(lead.len());
        let written = &lead[dashes..body_end];
        let flag_span = word.span.start..word.span.start + body_end;
        let Some(option) = find_option(spec, written, dashes) else {
            if spec.kind == Kind::ReadOnly {
                continue;
            }
            let mut d = src.error(
                format!("{}: unknown option \"{}\"", spec.name, &lead[..body_end]),
                flag_span,
            );
            if let Some(s) = closest_option(spec, written) {
                d = d.with_help(format!("did you mean \"--{s}\"?"));
            }
            return Err(d);
        };
        let value = if !option.takes_value {
            None
        } else if body_end < lead.len() {
            word.tail(body_end + 1).or_else(|| {
                Some(Word {
                    parts: vec![super::words::Part::Text {
                        text: String::new(),
                        at: Vec::new(),
                        quoted: true,
                    }],
                    span: word.span.end..word.span.end,
                })
            })
        } else if i < args.len() {
            i += 1;
            Some(args[i - 1].clone())
        } else {
            return Err(src.error(
                format!(
                    "{}: option \"{}\" needs a value",
                    spec.name,
                    &lead[..body_end]
                ),
                flag_span,
            ));
        };
        if option.key == "lb" {
            command.lb = value;
            continue;
        }
        if !option.repeatable {
            if let Some(first) = command.get(option.key) {
                let o = src.origin(first.flag.start);
                return Err(src.error(
                    format!(
                        "{}: option \"--{}\" is given twice (first in {o})",
                        spec.name, option.key
                    ),
                    flag_span,
                ));
            }
        }
        command.options.push(Opt {
            key: option.key,
            flag: flag_span,
            value,
        });
    }
    if spec.names_lb && command.lb.is_none() && spec.kind != Kind::ReadOnly {
        return Err(src.error(
            format!("{}: the load balancer name is missing", spec.name),
            command.name_span.clone(),
        ));
    }
    Ok(command)
}

fn options_of(spec: &'static Spec) -> impl Iterator<Item = &'static OptSpec> {
    spec.options.iter().chain(GENERAL.iter())
}

fn find_option(spec: &'static Spec, written: &str, dashes: usize) -> Option<&'static OptSpec> {
    let mut chars = written.chars();
    if dashes == 1 && chars.next().is_some() && chars.next().is_none() {
        let c = written.chars().next()?;
        return options_of(spec).find(|o| o.short == Some(c));
    }
    options_of(spec).find(|o| o.key == written || o.aliases.contains(&written))
}

fn closest_option(spec: &'static Spec, written: &str) -> Option<&'static str> {
    options_of(spec)
        .map(|o| (strsim::levenshtein(written, o.key), o.key))
        .filter(|(d, _)| *d <= written.len() / 3 + 2)
        .min()
        .map(|(_, k)| k)
}

pub fn spec(name: &str) -> Option<&'static Spec> {
    COMMANDS.iter().find(|s| s.name == name)
}

#[cfg(test)]
mod tests {
    use super::super::words::lex;
    use super::*;

    fn parse_line(line: &str) -> Result<Command, Diagnostic> {
        let src = Source::new("t.sh", line);
        let lexed = lex(line);
        let words = &lexed.commands[0].words;
        let (name, span) = command_name(&words[0]).unwrap();
        parse(spec(&name).unwrap(), &words[0], span, &words[1..], &src)
    }

    #[test]
    fn names_with_prefixes_and_suffixes() {
        for (text, name) in [
            ("$AWS_ELB_HOME/bin/elb-create-lb", "elb-create-lb"),
            ("./elb-create-lb-policy", "elb-create-lb-policy"),
            ("elb-create-lb.cmd", "elb-create-lb"),
            ("/opt/elb/bin/elb-delete-lb", "elb-delete-lb"),
        ] {
            let l = lex(text);
            assert_eq!(command_name(&l.commands[0].words[0]).unwrap().0, name);
        }
        let l = lex("echo $x elb-foo");
        assert!(command_name(&l.commands[0].words[0]).is_none());
    }

    #[test]
    fn option_spellings() {
        let c = parse_line(
            "elb-configure-healthcheck lb -t TCP:80 --interval=30 -timeout 5 --healthy-threshold 2 --unhealthy-threshold=3 --region us-east-1 -I AKIA -S secret --headers",
        )
        .unwrap();
        assert_eq!(c.lb.as_ref().unwrap().display(), "lb");
        let keys: Vec<&str> = c.options.iter().map(|o| o.key).collect();
        assert_eq!(
            keys,
            [
                "target",
                "interval",
                "timeout",
                "healthy-threshold",
                "unhealthy-threshold",
                "region",
                "access-key-id",
                "secret-key",
                "headers"
            ]
        );
        assert_eq!(
            c.get("interval").unwrap().value.as_ref().unwrap().display(),
            "30"
        );
        assert_eq!(
            c.get("unhealthy-threshold")
                .unwrap()
                .value
                .as_ref()
                .unwrap()
                .display(),
            "3"
        );
    }

    #[test]
    fn lb_option_and_repeats() {
        let c = parse_line(
            "elb-create-lb --lb web --listener \"protocol=HTTP, lb-port=80, instance-port=80\" --listener \"protocol=TCP, lb-port=22, instance-port=22\" -z us-east-1a",
        )
        .unwrap();
        assert_eq!(c.lb.as_ref().unwrap().display(), "web");
        assert_eq!(c.values("listener").count(), 2);
        assert!(c.get("availability-zones").is_some());
    }

    #[test]
    fn iam_upload_flags() {
        let c = parse_line("iam-servercertupload -b c.pem -c chain.pem -k k.pem -s site -p /x/")
            .unwrap();
        assert!(c.lb.is_none());
        assert_eq!(
            c.get("server-certificate-name")
                .unwrap()
                .value
                .as_ref()
                .unwrap()
                .display(),
            "site"
        );
        assert!(c.get("certificate-chain-file").is_some());
    }

    #[test]
    fn mistakes_are_named() {
        let e = parse_line("elb-configure-healthcheck lb --intervall 5").unwrap_err();
        assert_eq!(
            e.message,
            "elb-configure-healthcheck: unknown option \"--intervall\""
        );
        assert_eq!(e.help.as_deref(), Some("did you mean \"--interval\"?"));
        assert_eq!(e.origin.unwrap().column, 30);
        let e = parse_line("elb-configure-healthcheck lb --interval").unwrap_err();
        assert!(e.message.contains("needs a value"), "{}", e.message);
        let e = parse_line("elb-configure-healthcheck lb --interval 5 --interval 6").unwrap_err();
        assert!(e.message.contains("given twice"), "{}", e.message);
        let e = parse_line("elb-delete-lb a b").unwrap_err();
        assert!(
            e.message.contains("unexpected argument \"b\""),
            "{}",
            e.message
        );
        let e = parse_line("elb-delete-lb --force").unwrap_err();
        assert!(e.message.contains("name is missing"), "{}", e.message);
        assert_eq!(
            closest("elb-deregister-instances-with-lb"),
            Some("elb-deregister-instances-from-lb")
        );
        assert_eq!(closest("elb-frobnicate-everything-now-please"), None);
    }
}
