//! The parse step's corner cases against Debian's `nginx -t`: the tokenizer's rules, the
//! 4096-byte buffer, the core checks and the generic slots, each written as a small config and
//! run through both. Plus a bounded random differential: token soups built from the characters
//! that matter to the tokenizer, which nginx and we must accept or reject alike, at the same
//! line with the same message.
//!
//! Every config here avoids directives whose own handlers check more than the parse step does
//! (those are the lowering's), so any difference is the parse step's; but for
//! `worker_placement_cases`, which try the lowering's checks of two such directives.

mod support;

use std::path::Path;

use appliance::compile::{nginx as front, Options};
use support::nginx;
use support::TempDir;

/// One config: the text, and `-g` directives (after the sandbox's own load_module lines).
struct Case {
    name: String,
    text: Vec<u8>,
    global: Option<String>,
}

fn case(name: impl Into<String>, text: impl Into<Vec<u8>>) -> Case {
    Case {
        name: name.into(),
        text: text.into(),
        global: None,
    }
}

/// Handwritten corner cases: the tokenizer, blocks, includes and slot checks.
fn handwritten() -> Vec<Case> {
    let mut cases = vec![
        case("close brace in a bare word", "events {}\nenv a};\n"),
        case(
            "an upstream without servers over lines",
            "events {}\nhttp {\nupstream u {\n\n}\n}\n",
        ),
        case("close brace alone after words", "events {}\nenv a }\n"),
        case("hash inside a word", "events {}\nenv a#b;\n"),
        case("hash comment between words", "events {}\nenv # c\n a;\n"),
        case("comment at eof after words", "events {}\nenv a # c"),
        case("quote inside a bare word", "events {}\nenv a\"b\"c;\n"),
        case("text after a closing quote", "events {}\nenv \"a\"b;\n"),
        case("brace after a closing quote", "events {}\nenv \"a\"};\n"),
        case("paren after a closing quote", "events {}\nenv \"a\")b;\n"),
        case("two quoted words touching", "events {}\nenv 'a'\"b\";\n"),
        case("quote then semicolon", "events {}\nenv \"a\";env 'b';\n"),
        case("escaped quote", "events {}\nenv \"a\\\"b\";\n"),
        case("escaped newline in a bare word", "events {}\nenv a\\\nb;\n"),
        case("backslash at eof", "events {}\nenv a\\"),
        case("unterminated quote", "events {}\nenv \"a;\n\n"),
        case("dollar brace", "events {}\nenv ${a};\nenv $${{b;\n"),
        case("dollar then brace opens a block", "events {}\nenv $a{\n}\n"),
        case("semicolon alone", "events {}\n;\n"),
        case("brace alone", "events {}\n\n{\n"),
        case("stray close brace", "events {}\n}\n"),
        case("eof in a block", "events {\n"),
        case("eof in a word", "events {}\nenv"),
        case("empty file", ""),
        case("no events", "daemon off;\n"),
        case("events twice", "events {}\nevents {}\n"),
        case("http twice", "events {}\nhttp {}\nhttp {}\n"),
        case("vertical tab is not a blank", "events {}\nenv\x0ba;\n"),
        case("carriage returns are blanks", "events {}\r\nenv\ra;\r\n"),
        case("unknown directive", "events {}\nnope 1;\n"),
        case("not allowed here", "events {}\nhttp { listen 80; }\n"),
        case("block without a brace", "events;\n"),
        case("simple directive with a brace", "events {}\ndaemon off {}\n"),
        case("too many arguments", "events {}\ndaemon on off;\n"),
        case("noargs block with arguments", "events x {}\n"),
        case("flag value", "events {}\ndaemon yes;\n"),
        case("flag in capitals", "events {}\ndaemon OFF;\n"),
        case("flag duplicate", "events {}\ndaemon off;\ndaemon off;\n"),
        case("number", "events {}\nworker_rlimit_nofile 12x;\n"),
        case("number overflow", "events {}\nworker_rlimit_nofile 99999999999999999999;\n"),
        case("msec value", "events {}\ntimer_resolution 1h30m;\n"),
        case("msec order", "events {}\ntimer_resolution 30m1h;\n"),
        case("msec in ms", "events {}\ntimer_resolution 500ms;\n"),
        case("str duplicate", "events {}\npid a;\npid b;\n"),
        case(
            "size and offset",
            "events {}\nhttp { client_body_buffer_size 1g; }\n",
        ),
        case("offset takes g", "events {}\nhttp { client_max_body_size 1g; }\n"),
        case("bounds", "events {}\nhttp { gzip_comp_level 10; }\n"),
        case("enum", "events {}\nhttp { server_tokens maybe; }\n"),
        case("enum any case", "events {}\nhttp { server_tokens BUILD; }\n"),
        case(
            "bitmask",
            "events {}\nhttp { proxy_next_upstream error sometimes; }\n",
        ),
        case("bufs", "events {}\nhttp { gzip_buffers 0 4k; }\n"),
        case("path levels", "events {}\nhttp { client_body_temp_path /tmp/x 1 2 9; }\n"),
        case(
            "access",
            "events {}\nhttp { proxy_store_access user:rw group:w; }\n",
        ),
        case(
            "duplicates are per block",
            "events {}\nhttp { gzip on; server { gzip off; location / { gzip on; } location /a { gzip on; gzip off; } } }\n",
        ),
        case(
            "duplicates inside if",
            "events {}\nhttp { server { location / { gzip_vary on; if ($a) { gzip_vary on; gzip_vary off; } } } }\n",
        ),
        case(
            "srv conf shared by locations",
            "events {}\nhttp { server { client_header_timeout 1s; client_header_timeout 2s; } }\n",
        ),
        case(
            "limit_except twice",
            "events {}\nhttp { server { location / { limit_except GET { } limit_except POST { } } } }\n",
        ),
        case(
            "if in server allows rewrite only",
            "events {}\nhttp { server { if ($a) { proxy_pass http://a; } } }\n",
        ),
        case("types line with brace", "events {}\nhttp { types { text/html html {} } }\n"),
        case(
            "types include arity",
            "events {}\nhttp { types { include a b; } }\n",
        ),
        case("map arity", "events {}\nhttp { map $a $b { x; } }\n"),
        case(
            "map hostnames",
            "events {}\nhttp { map $host $b { hostnames; default 1; } }\n",
        ),
        case("geo arity", "events {}\nhttp { geo $a { 1 2 3; } }\n"),
        case(
            "charset_map arity",
            "events {}\nhttp { charset_map koi8-r utf-8 {\n C0 D0B1;\n C1;\n } }\n",
        ),
        case(
            "charset_map lines",
            "events {}\nhttp { charset_map koi8-r utf-8 {\n C0 D0B1;\n } }\n",
        ),
        case("include missing", "events {}\ninclude nothing.conf;\n"),
        case("include glob matching nothing", "events {}\ninclude nothing/*.conf;\n"),
        case("load_module too late", "events {}\nload_module x.so;\n"),
        case("max_headers", "events {}\nhttp { max_headers 5x; }\n"),
        case(
            "stream",
            "events {}\nstream { server { listen 12345; proxy_pass 127.0.0.1:1; proxy_timeout 1x; } }\n",
        ),
        case(
            "mail",
            "events {}\nmail { server { listen 2525; smtp_auth login; smtp_auth x; } }\n",
        ),
        case(
            "nested quotes and escapes",
            "events {}\nenv 'a\\'b' \"c\\\\\" d\\\"e\\'f;\n",
        ),
        case("non-utf8 bytes", b"events {}\nenv \xff\xfe;\n# \xe9t\xe9\n".to_vec()),
        case("nul byte", b"events {}\nenv a\x00b;\n".to_vec()),
        case("nul byte in a name", b"events {}\nda\x00mon off;\n".to_vec()),
    ];
    for (name, global) in [
        ("-g directive", "daemon off;"),
        ("-g without semicolon", "daemon off"),
        ("-g block", "events {}"),
        ("-g stray brace", "}"),
        ("-g duplicate with file", "pid /tmp/x.pid;"),
    ] {
        cases.push(Case {
            name: name.into(),
            text: b"events {}\npid /tmp/y.pid;\n".to_vec(),
            global: Some(global.into()),
        });
    }
    cases
}

/// The buffer: words, quoted words and comments of 4093..4097 bytes after paddings that put
/// nginx's refills at different places.
fn buffer_edges() -> Vec<Case> {
    let mut cases = Vec::new();
    for pad in [
        0usize, 1, 2, 7, 100, 4085, 4090, 4094, 4095, 4096, 4097, 6000,
    ] {
        for len in [4093usize, 4094, 4095, 4096, 4097] {
            let lead = format!("events {{}}\n{}", " ".repeat(pad));
            let long = "x".repeat(len);
            for (kind, body) in [
                ("bare", format!("env {long};\n")),
                ("double", format!("env \"{long}\";\n")),
                ("single", format!("env '{long}'\n;\n")),
                ("comment", format!("#{long}\nenv a;\n")),
                (
                    "after quote",
                    format!("env \"{}\"  ;\n", "y".repeat(len - 3)),
                ),
            ] {
                cases.push(case(
                    format!("{kind} of {len} after {pad}"),
                    format!("{lead}{body}"),
                ));
            }
        }
    }
    cases
}

/// A small deterministic generator (xorshift), so the random cases are the same every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[(self.next() % items.len() as u64) as usize]
    }
}

/// Token soups: directive names whose handlers are nginx's generic ones (or `env`, which takes
/// any word), blocks, and pieces that exercise the tokenizer.
fn random_cases(count: usize) -> Vec<Case> {
    const NAMES: &[&str] = &[
        "env",
        "env",
        "daemon",
        "pid",
        "worker_rlimit_nofile",
        "events",
        "http",
        "gzip",
        "gzip_vary",
        "keepalive_requests",
        "server_tokens",
        "types",
        "nope",
    ];
    const PIECES: &[&str] = &[
        " ", " ", "\n", "\t", "\r\n", ";", ";", "{", "}", "#c\n", "a", "on", "off", "12", "1k",
        "\"", "'", "\"q\"", "'s'", "\\", "\\\"", "$", "${", "$a", ")", "(", "x}", "é", "\\n",
        "build",
    ];
    // Half the soups stick to statements nginx accepts (`env` takes one word of any shape),
    // so both verdicts get exercised.
    const BARE: &[&str] = &[
        "a", "on", "12", "x}", "${a}", "\\\"", "é", "a#b", "\\n", "$$",
    ];
    const QUOTED: &[&str] = &["\"q w\"", "'s;'", "\"{\"", "\"\\'\"", "''", "\"a\nb\""];
    const GAPS: &[&str] = &[" ", "\n", "\t", " #c\n", "\r\n"];
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    (0..count)
        .map(|i| {
            let tidy = i % 2 == 0;
            let mut text = String::from("events {}\n");
            let statements = 1 + rng.next() % 4;
            for _ in 0..statements {
                if tidy {
                    text.push_str("env");
                    text.push_str(rng.pick(GAPS));
                    if rng.next() % 3 == 0 {
                        text.push_str(rng.pick(QUOTED));
                    } else {
                        for _ in 0..1 + rng.next() % 3 {
                            text.push_str(rng.pick(BARE));
                        }
                    }
                    text.push_str(rng.pick(&[";", " ;", "\n;"]));
                    text.push_str(rng.pick(GAPS));
                    continue;
                }
                text.push_str(rng.pick(NAMES));
                text.push(' ');
                for _ in 0..rng.next() % 6 {
                    text.push_str(rng.pick(PIECES));
                }
                text.push_str(rng.pick(&[";\n", ";", " {\n", "}\n", "\n"]));
            }
            case(format!("random {i}"), text)
        })
        .collect()
}

/// `worker_priority` and `worker_cpu_affinity`, whose handlers are nginx's own
/// (`ngx_set_priority`, `ngx_set_cpu_affinity`) and whose checks are the lowering's; and
/// `worker_shutdown_timeout`.
fn worker_placement_cases() -> Vec<Case> {
    let wide_mask = "1".repeat(1025);
    [
        ("priority", "worker_priority 5;\n"),
        ("negative priority", "worker_priority -5;\n"),
        ("priority with a plus", "worker_priority +5;\n"),
        (
            "priority past the kernel's range",
            "worker_priority 99999999999;\n",
        ),
        ("priority not a number", "worker_priority x;\n"),
        ("priority a sign alone", "worker_priority -;\n"),
        ("priority twice", "worker_priority 5;\nworker_priority 6;\n"),
        (
            "priority twice after 0",
            "worker_priority 0;\nworker_priority 6;\n",
        ),
        ("affinity auto", "worker_cpu_affinity auto;\n"),
        (
            "affinity auto with a mask",
            "worker_cpu_affinity auto 0101;\n",
        ),
        (
            "affinity auto with two masks",
            "worker_cpu_affinity auto 01 10;\n",
        ),
        ("affinity masks", "worker_cpu_affinity 01 10;\n"),
        (
            "affinity mask with spaces",
            "worker_cpu_affinity \"0 1\";\n",
        ),
        ("affinity empty mask", "worker_cpu_affinity 0000;\n"),
        ("affinity bad character", "worker_cpu_affinity 0x1;\n"),
        (
            "affinity twice",
            "worker_cpu_affinity auto;\nworker_cpu_affinity 01;\n",
        ),
        ("shutdown timeout", "worker_shutdown_timeout 10s;\n"),
        (
            "shutdown timeout in ms",
            "worker_shutdown_timeout 1500ms;\n",
        ),
        (
            "shutdown timeout not a time",
            "worker_shutdown_timeout soon;\n",
        ),
        (
            "shutdown timeout twice",
            "worker_shutdown_timeout 1s;\nworker_shutdown_timeout 2s;\n",
        ),
    ]
    .into_iter()
    .map(|(name, text)| case(name, format!("events {{}}\n{text}")))
    .chain([case(
        "affinity mask past 1024 CPUs",
        format!("events {{}}\nworker_cpu_affinity {wide_mask};\n"),
    )])
    .collect()
}

/// `proxy_redirect`'s own checks (ngx_http_proxy_redirect), which the lowering reproduces. (An
/// unknown variable is left out: nginx finds it after reading the file and names no line, where
/// the appliance names the directive's.)
fn proxy_redirect_cases() -> Vec<Case> {
    [
        ("default after proxy_pass", "proxy_pass http://u/two/;\nproxy_redirect default;"),
        ("default before proxy_pass", "proxy_redirect default;\nproxy_pass http://u;"),
        ("default without proxy_pass", "proxy_redirect default;"),
        ("off twice", "proxy_pass http://u;\nproxy_redirect off;\nproxy_redirect off;"),
        ("a rule then off", "proxy_pass http://u;\nproxy_redirect http://u/ /;\nproxy_redirect off;"),
        ("off then a rule", "proxy_pass http://u;\nproxy_redirect off;\nproxy_redirect http://u/ /;"),
        ("an unknown word", "proxy_pass http://u;\nproxy_redirect on;"),
        ("three arguments", "proxy_pass http://u;\nproxy_redirect a b c;"),
        ("default and pairs", "proxy_pass http://u;\nproxy_redirect default;\nproxy_redirect ~^http://([^/]+)/(.*)$ /$2;\nproxy_redirect ~*^HTTP://X/ $scheme://$host:$server_port/;"),
        ("a pair with variables", "proxy_pass http://u;\nproxy_redirect http://$proxy_host/ $scheme://$host/;"),
        ("default after proxy_pass with variables", "proxy_pass http://$host;\nproxy_redirect default;"),
        ("a pair after proxy_pass with variables", "proxy_pass http://$host;\nproxy_redirect http://u/ /;"),
    ]
    .into_iter()
    .map(|(name, location)| {
        case(
            name,
            format!(
                "events {{}}\nhttp {{\nupstream u {{ server 127.0.0.1:1; }}\nserver {{\nlisten 127.0.0.1:1;\nlocation / {{\n{location}\n}}\n}}\n}}\n"
            ),
        )
    })
    .chain([case(
        "default at the server level",
        "events {}\nhttp {\nserver {\nlisten 127.0.0.1:1;\nproxy_redirect default;\n}\n}\n",
    )])
    .collect()
}

#[test]
fn proxy_redirect_checks_match_nginx() {
    compare(proxy_redirect_cases());
}

/// `allow` and `deny` as ngx_http_access_rule reads them, in a location and at http level.
fn access_cases() -> Vec<Case> {
    [
        ("an address", "allow 10.0.0.1;\ndeny all;"),
        ("a block", "deny 10.0.0.0/8;"),
        ("a block with low bits", "deny 10.1.2.3/8;"),
        ("ipv6", "allow 2001:db8::/32;\ndeny ::1;"),
        ("unix", "deny unix:;"),
        ("a prefix too long", "allow 10.0.0.0/33;"),
        ("a name", "allow example.com;"),
        ("a short address", "deny 10.0.0;"),
        ("no address", "deny;"),
        ("two addresses", "deny 10.0.0.1 10.0.0.2;"),
        ("a prefix not a number", "deny 10.0.0.0/x;"),
    ]
    .into_iter()
    .map(|(name, rules)| {
        case(
            name,
            format!(
                "events {{}}\nhttp {{\n{rules}\nserver {{\nlisten 127.0.0.1:1;\nlocation / {{\n{rules}\n}}\n}}\n}}\n"
            ),
        )
    })
    .collect()
}

#[test]
fn access_rules_match_nginx() {
    compare(access_cases());
}

/// `map` blocks as ngx_http_map_block and ngx_http_map read them.
fn map_cases() -> Vec<Case> {
    [
        ("the websocket idiom", "map $http_upgrade $c {\ndefault upgrade;\n'' close;\n}"),
        ("flags, regexes, wildcards", "map $host $h {\nhostnames;\nvolatile;\n*.a.test 1;\nwww.b.* 2;\n~^x 3;\n\\default 4;\n}"),
        ("a name without $", "map $uri x {\ndefault 1;\n}"),
        ("two defaults", "map $uri $x {\ndefault 1;\ndefault 2;\n}"),
        ("a key twice, in two cases", "map $uri $x {\na 1;\nA 2;\n}"),
        ("a wildcard twice", "map $host $x {\nhostnames;\n*.a.test 1;\n*.A.test 2;\n}"),
        ("three words on a line", "map $uri $x {\na 1 2;\n}"),
        ("a key alone", "map $uri $x {\na;\n}"),
        ("a map of a variable nginx has", "map $uri $host {\ndefault 1;\n}"),
        ("a value with a map variable", "map $uri $x {\ndefault $y;\n}\nmap $uri $y {\ndefault 1;\n}"),
    ]
    .into_iter()
    .map(|(name, maps)| {
        case(
            name,
            format!(
                "events {{}}\nhttp {{\n{maps}\nserver {{\nlisten 127.0.0.1:1;\n}}\n}}\n"
            ),
        )
    })
    .collect()
}

/// `geo` and `split_clients` blocks as ngx_http_geo_module and ngx_http_split_clients_module
/// read them: every message they have, and lines nginx takes that look wrong.
fn table_var_cases() -> Vec<Case> {
    [
        // geo
        ("geo with networks", "geo $g {\ndefault 0;\n10.0.0.0/8 1;\n10.0.0.1 2;\n::1 3;\n2001:db8::/32 4;\n255.255.255.255 5;\n}"),
        ("geo from a variable", "geo $arg_ip $g {\n10.0.0.0/8 1;\n}"),
        ("geo from text", "geo arg_ip $g {\n10.0.0.0/8 1;\n}"),
        ("geo of a name without $", "geo g {\n}"),
        ("geo of a variable nginx has", "geo $host {\n}"),
        ("geo with a bad network", "geo $g {\n10.0.0.0/33 1;\n}"),
        ("geo with a host name", "geo $g {\nlocalhost 1;\n}"),
        ("geo with low bits", "geo $g {\n10.1.2.3/8 1;\n}"),
        ("geo with a network twice", "geo $g {\n10.0.0.0/8 1;\n10.0.0.0/8 2;\n}"),
        ("geo with default twice", "geo $g {\ndefault 1;\ndefault 2;\n}"),
        ("geo deleting", "geo $g {\n10.0.0.0/8 1;\ndelete 10.0.0.0/8;\ndelete 11.0.0.0/8;\n}"),
        ("geo deleting a bad network", "geo $g {\ndelete x;\n}"),
        ("geo with three words", "geo $g {\n10.0.0.0/8 1 2;\n}"),
        ("geo with a lone word", "geo $g {\n10.0.0.0/8;\n}"),
        ("geo with proxies", "geo $g {\nproxy 10.0.0.0/8;\nproxy 192.168.1.1;\nproxy_recursive;\n}"),
        ("geo with a bad proxy", "geo $g {\nproxy all;\n}"),
        ("geo with a proxy with low bits", "geo $g {\nproxy 10.1.0.0/8;\n}"),
        ("geo ranges", "geo $g {\nranges;\ndefault x;\n10.0.0.0-10.0.255.255 a;\n10.0.1.0-10.0.1.255 b;\n10.0.0.0-10.0.0.9 c;\n10.0.255.0-10.0.255.255 d;\n}"),
        ("geo ranges after an entry", "geo $g {\n10.0.0.0/8 1;\nranges;\n}"),
        ("geo ranges after default", "geo $g {\ndefault 1;\nranges;\n}"),
        ("geo ranges after a proxy", "geo $g {\nproxy 10.0.0.1;\nranges;\n}"),
        ("geo ranges twice", "geo $g {\nranges;\nranges;\n}"),
        ("geo ranges overlapping", "geo $g {\nranges;\n10.0.0.0-10.0.0.9 a;\n10.0.0.5-10.0.0.20 b;\n}"),
        ("geo ranges over blocks", "geo $g {\nranges;\n10.0.0.0-10.2.0.0 a;\n10.1.0.0-10.1.255.255 b;\n}"),
        ("geo ranges over blocks overlapping", "geo $g {\nranges;\n10.0.0.5-10.0.0.9 a;\n9.0.0.0-10.1.0.0 b;\n}"),
        ("geo ranges backwards", "geo $g {\nranges;\n10.0.0.9-10.0.0.1 a;\n}"),
        ("geo ranges with a network", "geo $g {\nranges;\n10.0.0.0/8 a;\n}"),
        ("geo ranges to 255.255.255.255", "geo $g {\nranges;\n10.0.0.0-255.255.255.255 a;\n}"),
        ("geo ranges twice the same", "geo $g {\nranges;\n10.0.0.0-10.0.0.9 a;\n10.0.0.0-10.0.0.9 b;\n}"),
        ("geo ranges deleting", "geo $g {\nranges;\n10.0.0.0-10.0.0.9 a;\ndelete 10.0.0.0-10.0.0.9;\ndelete 10.0.0.0-10.0.0.8;\n}"),
        ("geo ranges default twice", "geo $g {\nranges;\ndefault a;\ndefault b;\n}"),
        ("geo and map of one variable", "geo $g {\ndefault 1;\n}\nmap $uri $g {\ndefault 2;\n}"),
        ("geo of a map's variable", "map $http_x $ip {\ndefault 10.0.0.1;\n}\ngeo $ip $g {\n10.0.0.0/8 1;\n}"),
        // split_clients
        ("split_clients", "split_clients $remote_addr $s {\n0.5% a;\n2.25% b;\n* c;\n}"),
        ("split_clients to 100%", "split_clients \"${remote_addr}x\" $s {\n50% a;\n50% b;\n}"),
        ("split_clients over 100%", "split_clients $remote_addr $s {\n50% a;\n50.01% b;\n}"),
        ("split_clients after *", "split_clients $remote_addr $s {\n* a;\n1% b;\n}"),
        ("split_clients * twice", "split_clients $remote_addr $s {\n* a;\n* b;\n}"),
        ("split_clients 0%", "split_clients $remote_addr $s {\n0% a;\n}"),
        ("split_clients without %", "split_clients $remote_addr $s {\n50 a;\n}"),
        ("split_clients three decimals", "split_clients $remote_addr $s {\n1.125% a;\n}"),
        ("split_clients two dots", "split_clients $remote_addr $s {\n1.1.1% a;\n}"),
        ("split_clients a lone percent", "split_clients $remote_addr $s {\n50%;\n}"),
        ("split_clients three words", "split_clients $remote_addr $s {\n50% a b;\n}"),
        ("split_clients empty", "split_clients $remote_addr $s {\n}"),
        ("split_clients of a name without $", "split_clients $remote_addr s {\n}"),
        ("split_clients of a variable nginx has", "split_clients $remote_addr $uri {\n}"),
        ("split_clients with one argument", "split_clients $remote_addr {\n}"),
    ]
    .into_iter()
    .map(|(name, blocks)| {
        case(
            name,
            format!(
                "events {{}}\nhttp {{\n{blocks}\nserver {{\nlisten 127.0.0.1:1;\n}}\n}}\n"
            ),
        )
    })
    .collect()
}

/// auth_basic's directives and `satisfy`, at every level they take.
fn auth_cases() -> Vec<Case> {
    [
        (
            "a realm and a file",
            "auth_basic \"x\";\nauth_basic_user_file /etc/htpasswd;",
        ),
        ("a realm twice", "auth_basic a;\nauth_basic b;"),
        (
            "a file twice",
            "auth_basic_user_file a;\nauth_basic_user_file b;",
        ),
        ("a realm with a variable", "auth_basic \"$host\";"),
        ("a file with a variable", "auth_basic_user_file /etc/$host;"),
        (
            "a file starting with a variable",
            "auth_basic_user_file $host;",
        ),
        ("off", "auth_basic off;"),
        ("no argument", "auth_basic;"),
        ("satisfy any", "satisfy any;"),
        ("satisfy twice", "satisfy any;\nsatisfy all;"),
        ("satisfy maybe", "satisfy maybe;"),
    ]
    .into_iter()
    .flat_map(at_http_and_location)
    .collect()
}

/// `expires` as ngx_http_headers_expires reads it.
fn expires_cases() -> Vec<Case> {
    [
        ("a time", "expires 1h;"),
        ("modified", "expires modified 1d;"),
        ("modified without a time", "expires modified;"),
        ("another first word", "expires later 1d;"),
        ("daily", "expires @15h30m;"),
        ("daily over a day", "expires @25h;"),
        ("daily and modified", "expires modified @1h;"),
        ("epoch max off", "expires epoch;"),
        ("modified epoch", "expires modified epoch;"),
        ("negative", "expires -1;"),
        ("plus", "expires +30d;"),
        ("not a time", "expires soon;"),
        ("a variable", "expires $arg_e;"),
        ("modified and a variable", "expires modified $arg_e;"),
        ("twice", "expires 1h;\nexpires 2h;"),
        ("three words", "expires modified 1h 2h;"),
    ]
    .into_iter()
    .flat_map(at_http_and_location)
    .collect()
}

/// `error_page`, `recursive_error_pages`, `internal` and named locations as
/// ngx_http_core_error_page and ngx_http_core_location check them. (An unknown variable is
/// left out: nginx names no line for it, the appliance names the directive's.)
fn error_page_cases() -> Vec<Case> {
    let mut cases: Vec<Case> = [
        ("a URI", "error_page 500 502 503 504 /50x.html;"),
        ("a URI with args", "error_page 404 /nf?x=1;"),
        ("a status to answer with", "error_page 404 =200 /empty;"),
        ("the target's status", "error_page 502 = /fallback;"),
        (
            "a redirect",
            "error_page 403 https://example.com/forbidden;",
        ),
        (
            "a redirect with 301",
            "error_page 403 =301 https://example.com/;",
        ),
        ("a variable", "error_page 404 /nf/$uri;"),
        ("only a status and =", "error_page 404 =;"),
        ("= first", "error_page =404 /x;"),
        ("a word for a status", "error_page 404 =ok /x;"),
        ("a signed status", "error_page +404 /x;"),
        ("499", "error_page 499 /x;"),
        ("below 300", "error_page 200 /x;"),
        ("above 599", "error_page 600 /x;"),
        ("a word", "error_page notfound /x;"),
        ("one argument", "error_page /x;"),
        ("twice", "error_page 404 /a;\nerror_page 404 /b;"),
        ("recursive", "recursive_error_pages on;"),
        ("recursive, a bad value", "recursive_error_pages yes;"),
        ("=0", "error_page 404 =0 /x;"),
    ]
    .into_iter()
    .flat_map(at_http_and_location)
    .collect();
    for (name, body) in [
        (
            "a named location",
            "location @up { return 502; }\nerror_page 502 @up;",
        ),
        (
            "a named location nested",
            "location / {\nlocation @up { return 502; }\n}",
        ),
        (
            "inside a named location",
            "location @up {\nlocation /x { return 502; }\n}",
        ),
        (
            "a named location twice",
            "location @up { return 502; }\nlocation @up { return 503; }",
        ),
        ("exact @", "location = @up { return 502; }"),
        ("internal", "location /x { internal; }"),
        ("internal twice", "location /x { internal; internal; }"),
        ("internal in server", "internal;"),
        ("internal with a value", "location /x { internal on; }"),
        (
            "proxy_pass with a URI in a named location",
            "location @up { proxy_pass http://127.0.0.1:2/x; }",
        ),
        (
            "proxy_pass in a named location",
            "location @up { proxy_pass http://127.0.0.1:2; }",
        ),
        (
            "a named location in if",
            "location / {\nif ($arg_a) { error_page 404 @x; }\n}",
        ),
    ] {
        cases.push(case(name, server(body)));
    }
    cases
}

/// gzip's and autoindex's directives as their slots and ngx_http_gzip_disable check them.
fn gzip_cases() -> Vec<Case> {
    let mut cases: Vec<Case> = [
        ("on", "gzip on;"),
        ("a bad flag", "gzip yes;"),
        ("twice", "gzip on;\ngzip off;"),
        ("types", "gzip_types text/css application/json;"),
        ("types with *", "gzip_types text/css *;"),
        (
            "types twice",
            "gzip_types text/css;\ngzip_types application/json text/css;",
        ),
        ("types naming text/html", "gzip_types text/html;"),
        ("a level", "gzip_comp_level 6;"),
        ("level 0", "gzip_comp_level 0;"),
        ("level 10", "gzip_comp_level 10;"),
        ("min length", "gzip_min_length 1k;"),
        ("min length a word", "gzip_min_length big;"),
        ("http version 1.0", "gzip_http_version 1.0;"),
        ("http version 2.0", "gzip_http_version 2.0;"),
        (
            "proxied",
            "gzip_proxied expired no-cache no-store private auth;",
        ),
        ("proxied, a bad value", "gzip_proxied sometimes;"),
        ("proxied, a value twice", "gzip_proxied any any;"),
        ("proxied twice", "gzip_proxied any;\ngzip_proxied off;"),
        ("vary", "gzip_vary on;"),
        ("vary twice", "gzip_vary on;\ngzip_vary on;"),
        ("disable", "gzip_disable msie6 \"^curl/\";"),
        ("disable, a bad regex", "gzip_disable \"(\";"),
        ("buffers", "gzip_buffers 16 8k;"),
        ("buffers, one argument", "gzip_buffers 16;"),
        ("window", "gzip_window 16k;"),
        ("static", "gzip_static on;"),
        ("static always", "gzip_static always;"),
        ("static, a bad value", "gzip_static yes;"),
        ("autoindex", "autoindex on;"),
        ("autoindex twice", "autoindex on;\nautoindex off;"),
        ("autoindex, a bad flag", "autoindex yes;"),
        ("autoindex sizes", "autoindex_exact_size off;"),
        ("autoindex format", "autoindex_format jsonp;"),
        ("autoindex, a bad format", "autoindex_format yaml;"),
        ("autoindex local time", "autoindex_localtime on;"),
    ]
    .into_iter()
    .flat_map(at_http_and_location)
    .collect();
    for (name, body) in [
        ("in if", "location / {\nif ($arg_a) { gzip on; }\n}"),
        (
            "types in if",
            "location / {\nif ($arg_a) { gzip_types text/css; }\n}",
        ),
        ("server level", "gzip on;\ngzip_types application/json;"),
    ] {
        cases.push(case(name, server(body)));
    }
    cases
}

/// The charset filter's directives as ngx_http_set_charset_slot, ngx_http_types_slot and the
/// merge check ("no charset_map") read them; `resolver` and `resolver_timeout` as
/// ngx_http_core_resolver reads them; `auth_request` and `auth_request_set` as
/// ngx_http_auth_request and ngx_http_auth_request_set do.
fn charset_resolver_and_auth_request_cases() -> Vec<Case> {
    let mut cases: Vec<Case> = [
        ("charset", "charset utf-8;"),
        ("charset off", "charset off;"),
        ("charset twice", "charset utf-8;\ncharset koi8-r;"),
        ("charset, two values", "charset utf-8 koi8-r;"),
        ("source equal", "charset utf-8;\nsource_charset UTF-8;"),
        ("source other", "charset utf-8;\nsource_charset koi8-r;"),
        ("source alone", "source_charset koi8-r;"),
        ("override", "override_charset on;"),
        ("override, a bad flag", "override_charset yes;"),
        ("types", "charset_types text/css application/json;"),
        ("types naming text/html", "charset_types text/html;"),
        ("types with *", "charset_types *;"),
        (
            "resolver",
            "resolver 127.0.0.1 [::1]:5353 valid=30s ipv6=off;",
        ),
        ("resolver twice", "resolver 127.0.0.1;\nresolver 127.0.0.2;"),
        ("resolver, a bad valid", "resolver 127.0.0.1 valid=soon;"),
        ("resolver, a bad ipv6", "resolver 127.0.0.1 ipv6=maybe;"),
        ("resolver, a bad port", "resolver 127.0.0.1:x;"),
        ("resolver timeout", "resolver_timeout 5s;"),
        ("resolver timeout, a word", "resolver_timeout soon;"),
        ("auth_request off", "auth_request off;"),
    ]
    .into_iter()
    .flat_map(at_http_and_location)
    .collect();
    cases.extend(
        [
            ("auth_request", "auth_request /auth;"),
            ("auth_request twice", "auth_request /a;\nauth_request /b;"),
            (
                "auth_request then off",
                "auth_request /a;\nauth_request off;",
            ),
            ("auth_request, no URI", "auth_request;"),
            ("auth_request, two URIs", "auth_request /a /b;"),
            (
                "auth_request_set",
                "auth_request_set $user $upstream_http_x_user;",
            ),
            (
                "auth_request_set twice, same name",
                "auth_request_set $u $upstream_status;\nauth_request_set $u x;",
            ),
            ("auth_request_set, no $", "auth_request_set user x;"),
            ("auth_request_set, a lone $", "auth_request_set $ x;"),
            ("auth_request_set $host", "auth_request_set $host x;"),
            ("auth_request_set $args", "auth_request_set $args x;"),
            (
                "auth_request_set $limit_rate",
                "auth_request_set $limit_rate 1k;",
            ),
            ("auth_request_set $http_x", "auth_request_set $http_x x;"),
            ("auth_request_set, one argument", "auth_request_set $u;"),
            (
                "auth_request_set read elsewhere",
                "auth_request_set $u x;\nadd_header X-U $u;",
            ),
        ]
        .into_iter()
        .flat_map(at_http_and_location),
    );
    for (name, body) in [
        (
            "auth_request in if",
            "location / {\nif ($arg_a) { auth_request /a; }\n}",
        ),
        (
            "auth_request_set in if",
            "location / {\nif ($arg_a) { auth_request_set $u x; }\n}",
        ),
        (
            "charset in if",
            "location / {\nif ($arg_a) { charset koi8-r; override_charset on; }\n}",
        ),
        (
            "charset_types in if",
            "location / {\nif ($arg_a) { charset_types text/css; }\n}",
        ),
        (
            "a source other than the server's charset in a location",
            "charset utf-8;\nlocation / { source_charset koi8-r; }",
        ),
    ] {
        cases.push(case(name, server(body)));
    }
    // charset_map blocks (http level), and the merge check they satisfy.
    let koi_utf = "charset_map koi8-r utf-8 {\n C1 D0B0;\n 80 E282AC;\n}";
    for (name, http) in [
        ("a map", koi_utf.to_string()),
        (
            "a map and a source it joins",
            format!("{koi_utf}\ncharset utf-8;\nsource_charset KOI8-R;"),
        ),
        (
            "a map used backwards",
            format!("{koi_utf}\ncharset koi8-r;\nsource_charset utf-8;"),
        ),
        (
            "a map that does not join the source",
            format!("{koi_utf}\ncharset utf-8;\nsource_charset windows-1251;"),
        ),
        (
            "an 8-bit map",
            "charset_map koi8-r windows-1251 {\n C1 E1;\n A3 b8;\n}".into(),
        ),
        (
            "a map between the same charsets",
            "charset_map utf-8 UTF-8 { }".into(),
        ),
        (
            "a map twice",
            format!("{koi_utf}\ncharset_map UTF-8 koi8-r {{ }}"),
        ),
        (
            "a byte over FF",
            "charset_map koi8-r utf-8 {\n 100 D0B0;\n}".into(),
        ),
        (
            "a byte not in hex",
            "charset_map koi8-r utf-8 {\n G1 D0B0;\n}".into(),
        ),
        (
            "odd UTF-8 digits",
            "charset_map koi8-r utf-8 {\n C1 D0B;\n}".into(),
        ),
        (
            "UTF-8 of one byte",
            "charset_map koi8-r utf-8 {\n C1 41;\n}".into(),
        ),
        (
            "UTF-8 cut short",
            "charset_map koi8-r utf-8 {\n C1 E282;\n}".into(),
        ),
        (
            "UTF-8 beyond U+FFFF",
            "charset_map koi8-r utf-8 {\n C1 F09F9880;\n}".into(),
        ),
        (
            "an 8-bit target over FF",
            "charset_map a b {\n C1 1E1;\n}".into(),
        ),
        (
            "three words on a line",
            "charset_map a b {\n C1 E1 E2;\n}".into(),
        ),
        ("a map with one charset", "charset_map a { }".into()),
    ] {
        cases.push(case(
            name,
            format!("events {{}}\nhttp {{\n{http}\nserver {{\nlisten 127.0.0.1:1;\n}}\n}}\n"),
        ));
    }
    cases
}

/// `root`, `alias`, `index` and `try_files` as ngx_http_core_root, ngx_http_index_set_index
/// and ngx_http_try_files check them.
fn file_cases() -> Vec<Case> {
    [
        (
            "root and alias",
            "location /a/ { root /srv; alias /data/; }",
        ),
        (
            "alias and root",
            "location /a/ { alias /data/; root /srv; }",
        ),
        ("alias twice", "location /a/ { alias /data/; alias /x/; }"),
        ("root twice", "location /a/ { root /srv; root /x; }"),
        ("alias in a named location", "location @a { alias /data/; }"),
        (
            "alias in a regex location",
            "location ~ ^/a/(.*)$ { alias /data/$1; }",
        ),
        ("alias in server", "alias /data/;"),
        (
            "root with $document_root",
            "location /a/ { root $document_root/x; }",
        ),
        (
            "alias with ${realpath_root}",
            "location /a/ { alias ${realpath_root}/x; }",
        ),
        ("a relative root", "root html;"),
        ("index", "index index.html index.htm;"),
        ("an empty index", "index \"\";"),
        ("an index with a variable", "index $arg_i.html;"),
        ("an absolute index", "index /index.html;"),
        ("try_files", "location / { try_files $uri $uri/ =404; }"),
        (
            "try_files with a named location",
            "location / { try_files $uri @up; }\nlocation @up { }",
        ),
        (
            "try_files with one argument",
            "location / { try_files $uri; }",
        ),
        (
            "try_files twice",
            "location / { try_files $uri /a; try_files $uri /b; }",
        ),
        (
            "try_files with a bad code",
            "location / { try_files $uri =40x; }",
        ),
        (
            "try_files with a code over 999",
            "location / { try_files $uri =1000; }",
        ),
        ("try_files with =", "location / { try_files $uri =; }"),
        ("try_files in server", "try_files $uri /index.html;"),
        ("try_files in http", "try_files $uri /index.html;"),
    ]
    .into_iter()
    .map(|(name, body)| match name {
        "try_files in http" => case(
            name,
            format!("events {{}}\nhttp {{\n{body}\nserver {{\nlisten 127.0.0.1:1;\n}}\n}}\n"),
        ),
        _ => case(name, server(body)),
    })
    .collect()
}

/// `valid_referers` as ngx_http_valid_referers and the referer module's merge check it, at
/// server level and in a location. (A server's own name given again with `server_names` is
/// left out: nginx finds it as it merges the levels and names the line that closes `http`,
/// the appliance the level's; `config::referers` tests the message.)
fn referer_cases() -> Vec<Case> {
    let mut cases: Vec<Case> = [
        ("none, blocked and a host", "valid_referers none blocked a.com;"),
        ("every kind", "valid_referers none blocked server_names a.com/pics/ *.b.com c.* .d.org ~\\.google\\.;"),
        ("two directives", "valid_referers none;\nvalid_referers a.com;"),
        ("an empty word", "valid_referers \"\";"),
        ("an empty regex", "valid_referers ~;"),
        ("a regex that does not compile", "valid_referers ~(;"),
        ("a star inside", "valid_referers a.*.com;"),
        ("two stars", "valid_referers *.a.*;"),
        ("a star alone", "valid_referers *;"),
        ("a star and a dot", "valid_referers *.;"),
        ("a star in a label", "valid_referers *a.com;"),
        ("two dots", "valid_referers a..com;"),
        ("a name twice", "valid_referers a.com A.COM/x;"),
        ("a name and its dot form", "valid_referers a.com .A.com;"),
        ("a trailing wildcard twice", "valid_referers www.a.* WWW.A.*/x;"),
        ("a name twice over two directives", "valid_referers a.com;\nvalid_referers b.com a.com;"),
        ("a wildcard and the bare name", "valid_referers *.a.com a.com;"),
        ("none alone", "valid_referers none;"),
        ("blocked and only a regex", "valid_referers blocked ~x;"),
        ("server_names of a server without a name", "valid_referers none server_names;"),
        ("no argument", "valid_referers;"),
        ("the hash sizes", "referer_hash_max_size 1024;\nreferer_hash_bucket_size 128;"),
        ("a hash size that is not a number", "referer_hash_max_size big;"),
    ]
    .into_iter()
    .flat_map(|(name, lines)| {
        [
            case(format!("{name} (server)"), server(lines)),
            case(
                format!("{name} (location)"),
                server(&format!("location / {{\n{lines}\n}}")),
            ),
        ]
    })
    .collect();
    cases.push(case(
        "valid_referers at http level",
        "events {}\nhttp {\nvalid_referers a.com;\nserver {\nlisten 127.0.0.1:1;\n}\n}\n",
    ));
    cases.push(case(
        "valid_referers inside if",
        server("location / {\nif ($arg_x) {\nvalid_referers a.com;\n}\n}"),
    ));
    cases.push(case(
        "set $invalid_referer",
        server("location / {\nset $invalid_referer 1;\nreturn 200 $invalid_referer;\n}"),
    ));
    cases
}

/// `secure_link`, `secure_link_md5` and `secure_link_secret` as their slots read them. (A
/// server or location that mixes the secret with the others is left out: nginx finds it as
/// it merges the levels and names the line that closes `http`, the appliance the level's
/// `secure_link_secret`; `config::secure_link` tests the message.)
fn secure_link_cases() -> Vec<Case> {
    let mut cases: Vec<Case> = [
        (
            "the documented set-up",
            "secure_link $arg_md5,$arg_expires;\nsecure_link_md5 \"$secure_link_expires$uri$remote_addr secret\";",
        ),
        ("the old form", "secure_link_secret secret;"),
        ("secure_link twice", "secure_link $arg_a;\nsecure_link $arg_b;"),
        ("secure_link_md5 twice", "secure_link_md5 a;\nsecure_link_md5 b;"),
        ("secure_link_secret twice", "secure_link_secret a;\nsecure_link_secret b;"),
        ("secure_link without a value", "secure_link;"),
        ("secure_link_md5 with two values", "secure_link_md5 a b;"),
        ("an unknown variable", "secure_link $nowhere;"),
        ("a variable in the secret", "secure_link_secret $uri;"),
    ]
    .into_iter()
    .flat_map(at_http_and_location)
    .collect();
    cases.push(case(
        "the two forms at http level, which nginx never merges",
        "events {}\nhttp {\nsecure_link_secret s;\nsecure_link $arg_h;\nserver {\nlisten 127.0.0.1:1;\n}\n}\n",
    ));
    cases.push(case(
        "$secure_link in a return",
        server("location / {\nsecure_link_secret s;\nreturn 200 \"$secure_link $secure_link_expires\";\n}"),
    ));
    cases.push(case(
        "set $secure_link",
        server("location / {\nset $secure_link 1;\n}"),
    ));
    cases
}

/// The sub filter's directives as ngx_http_sub_filter and the slots read them.
fn sub_filter_cases() -> Vec<Case> {
    let mut cases: Vec<Case> = [
        ("a string", "sub_filter a b;"),
        ("an empty search string", "sub_filter \"\" b;"),
        ("an empty replacement", "sub_filter a \"\";"),
        ("variables", "sub_filter $arg_a \"[$host]\";"),
        ("an unknown variable", "sub_filter $nowhere b;"),
        ("one argument", "sub_filter a;"),
        ("once off", "sub_filter_once off;"),
        ("once maybe", "sub_filter_once maybe;"),
        ("once twice", "sub_filter_once on;\nsub_filter_once off;"),
        ("types", "sub_filter_types text/css text/xml;"),
        ("types with text/html", "sub_filter_types text/html;"),
        ("any type", "sub_filter_types *;"),
        ("last_modified on", "sub_filter_last_modified on;"),
    ]
    .into_iter()
    .flat_map(at_http_and_location)
    .collect();
    let many: String = (0..256).map(|i| format!("sub_filter s{i} r;\n")).collect();
    cases.push(case(
        "256 strings",
        server(&format!("location / {{\n{many}}}")),
    ));
    cases.push(case(
        "sub_filter inside if",
        server("location / {\nif ($arg_x) {\nsub_filter a b;\n}\n}"),
    ));
    cases
}

/// A case's lines at http level and in a location.
/// A config whose one server holds `body`.
fn server(body: &str) -> String {
    format!("events {{}}\nhttp {{\nserver {{\nlisten 127.0.0.1:1;\n{body}\n}}\n}}\n")
}

fn at_http_and_location((name, lines): (&str, &str)) -> Vec<Case> {
    [
        format!("events {{}}\nhttp {{\n{lines}\nserver {{\nlisten 127.0.0.1:1;\n}}\n}}\n"),
        format!(
            "events {{}}\nhttp {{\nserver {{\nlisten 127.0.0.1:1;\nlocation / {{\n{lines}\n}}\n}}\n}}\n"
        ),
    ]
    .into_iter()
    .zip(["http", "location"])
    .map(|(text, level)| case(format!("{name} ({level})"), text))
    .collect()
}

/// realip's directives as ngx_http_realip_from and ngx_http_realip read them.
fn real_ip_cases() -> Vec<Case> {
    [
        ("an address and a block", "set_real_ip_from 10.0.0.1;\nset_real_ip_from 10.0.0.0/8;"),
        ("ipv6 and unix", "set_real_ip_from 2001:db8::/32;\nset_real_ip_from unix:;"),
        ("a block with low bits", "set_real_ip_from 10.1.2.3/8;"),
        ("a host name", "set_real_ip_from localhost;"),
        ("all", "set_real_ip_from all;"),
        ("a prefix too long", "set_real_ip_from 10.0.0.0/33;"),
        ("a header", "real_ip_header X-Client;"),
        ("two headers", "real_ip_header X-Forwarded-For;\nreal_ip_header proxy_protocol;"),
        ("recursive twice", "real_ip_recursive on;\nreal_ip_recursive off;"),
        ("recursive", "real_ip_recursive on;"),
        ("recursive maybe", "real_ip_recursive maybe;"),
        ("no header", "real_ip_header;"),
    ]
    .into_iter()
    .map(|(name, lines)| {
        case(
            name,
            format!(
                "events {{}}\nhttp {{\n{lines}\nserver {{\nlisten 127.0.0.1:1;\nlocation / {{\n{lines}\n}}\n}}\n}}\n"
            ),
        )
    })
    .collect()
}

#[test]
fn real_ip_directives_match_nginx() {
    compare(real_ip_cases());
}

/// The rewrite module's directives as ngx_http_rewrite, ngx_http_rewrite_if (and its
/// condition parser), ngx_http_rewrite_set, ngx_http_rewrite_break and
/// ngx_http_rewrite_return read them: each case is `(name, server-level lines, location
/// lines)`, with `$a` set at server level so that conditions may name it. (An unknown variable
/// is left out, as for proxy_redirect: nginx names no line for it.)
fn rewrite_cases() -> Vec<Case> {
    [
        // rewrite
        ("rewrite with every flag", "rewrite ^/s/(.*)$ /t/$1;\nrewrite ^/s2 /t2 last;", "rewrite ^/a/(.*)$ /b/$1 last;\nrewrite ^/c /d break;\nrewrite ^/e /f redirect;\nrewrite ^/g /h permanent;\nrewrite ^/i http://x.test/$1;\nrewrite ^/j $scheme://$host/k?x=1?;"),
        ("rewrite with a named capture", "", "rewrite ^/(?<rest>.*)$ /b/$rest last;"),
        ("rewrite with a bad regex", "", "rewrite ^/(a /b;"),
        ("rewrite with a lone paren", "", "rewrite ) /b;"),
        ("rewrite with no arguments", "", "rewrite;"),
        ("rewrite with one argument", "", "rewrite ^/a;"),
        ("rewrite with four arguments", "", "rewrite ^/a /b last break;"),
        ("rewrite with an unknown flag", "", "rewrite ^/a /b forever;"),
        ("rewrite with a flag in capitals", "", "rewrite ^/a /b LAST;"),
        // if
        ("if with every operator", "if ($a) { rewrite ^ /x; }\nif ($host = www.x.test) { return 301 http://x.test$request_uri; }", "if ($a) { }\nif ($a = \"\") { }\nif ($a = 'x y') { }\nif ($a != $host) { }\nif ($uri ~ ^/(a)$) { set $b $1; }\nif ($uri ~* \"^/A\") { }\nif ($uri !~ ^/a) { }\nif ($uri !~* ^/a) { }\nif (-f /tmp/x$uri) { }\nif (!-f $request_filename) { }\nif (-d /tmp) { }\nif (!-d /tmp) { }\nif (-e /tmp) { }\nif (!-e /tmp) { }\nif (-x /bin/sh) { }\nif (!-x /bin/sh) { }\nif ($request_method = OPTIONS) { add_header A b; return 204; }\nif ($a) { proxy_pass http://127.0.0.1:2; }\nif ($a) { break; }\nproxy_pass http://127.0.0.1:1;"),
        ("if with empty parens", "", "if () { }"),
        ("if with a missing close paren", "", "if ($a { }"),
        ("if with a missing open paren", "", "if $a) { }"),
        ("if without parens", "", "if $a { }"),
        ("if with an unknown operator", "", "if ($a == b) { }"),
        ("if with too many words", "", "if ($a = b c) { }"),
        ("if with a word, not a variable", "", "if (a) { }"),
        ("if with a bad regex", "", "if ($uri ~ \"(a\") { }"),
        ("if with -f and no path", "", "if (-f) { }"),
        ("if with !-x and two paths", "", "if (!-x /a /b) { }"),
        ("if with an unknown file test", "", "if (-z /tmp) { }"),
        ("if nested in if", "", "if ($a) { if ($a) { } }"),
        ("if without a block", "", "if ($a);"),
        ("if in an if at server level with a location directive", "if ($a) { proxy_pass http://127.0.0.1:1; }", ""),
        ("if with = and nothing after", "", "if ($a =) { }"),
        ("if with ~ and nothing after", "", "if ($a ~) { }"),
        // set
        ("set text, variables and captures", "set $s \"server $host\";", "set $b x;\nset $c \"$b-$uri-$s\";\nset $args \"${args}&y=1\";\nset $limit_rate 1k;\nproxy_set_header X-C $c;\nadd_header X-C $c;\nproxy_pass http://127.0.0.1:1;"),
        ("set a name without $", "", "set b 1;"),
        ("set $uri", "", "set $uri x;"),
        ("set $host", "", "set $host x;"),
        ("set $request_uri", "", "set $request_uri x;"),
        ("set $1", "", "set $1 x;"),
        ("set with one argument", "", "set $b;"),
        ("set with three arguments", "", "set $b x y;"),
        ("set a bare $", "", "set $ x;"),
        // break
        ("break", "break;", "break;"),
        ("break with an argument", "", "break now;"),
        // return
        ("return codes", "", "return 200;"),
        ("return a code above 999", "", "return 1000;"),
        ("return a word", "", "return abc;"),
        ("return a negative code", "", "return -1;"),
        ("return 301 without a URL", "", "return 301;"),
        ("return a bare URL", "", "return https://x.test$request_uri;"),
        ("return with three arguments", "", "return 200 a b;"),
        ("return with no arguments", "", "return;"),
        // the rest of the module
        ("rewrite_log and uninitialized_variable_warn", "rewrite_log on;", "uninitialized_variable_warn off;"),
    ]
    .into_iter()
    .map(|(name, server, location)| {
        case(
            name,
            format!(
                "events {{}}\nhttp {{\nserver {{\nlisten 127.0.0.1:1;\nset $a 1;\n{server}\nlocation / {{\n{location}\n}}\n}}\n}}\n"
            ),
        )
    })
    .chain(
        [
            ("rewrite in http", "rewrite ^ /x;"),
            ("if in http", "if ($host) { }"),
            ("return in http", "return 200;"),
            ("set in http", "set $a 1;"),
        ]
        .into_iter()
        .map(|(name, line)| {
            case(
                name,
                format!("events {{}}\nhttp {{\n{line}\nserver {{\nlisten 127.0.0.1:1;\n}}\n}}\n"),
            )
        }),
    )
    .collect()
}

#[test]
fn rewrite_directives_match_nginx() {
    compare(rewrite_cases());
}

/// The limit_req and limit_conn modules' directives as ngx_http_limit_req_zone,
/// ngx_http_limit_req, ngx_http_limit_conn_zone and ngx_http_limit_conn read them, with the
/// generic slots of their status, log level and dry run directives. Each case is `(name, http
/// lines, location lines)`; the location also proxies. A zone that `limit_req` or `limit_conn`
/// names but no `*_zone` declares is found when the shared memory is set up, so nginx names no
/// line for it (`zero size shared memory zone`). (An unknown variable in a key is left out,
/// as for proxy_redirect: nginx finds it after reading the file and names no line.)
fn limit_cases() -> Vec<Case> {
    const REQ: &str = "limit_req_zone $binary_remote_addr zone=one:1m rate=10r/s;";
    const CONN: &str = "limit_conn_zone $binary_remote_addr zone=addr:1m;";
    let both = format!("{REQ}\n{CONN}");
    let zone = |params: &str| format!("limit_req_zone $binary_remote_addr {params};");
    let conn_zone = |params: &str| format!("limit_conn_zone $binary_remote_addr {params};");
    let located: Vec<(&str, String, String)> = vec![
        // limit_req_zone
        ("a zone and a limit", REQ.into(), "limit_req zone=one;".into()),
        ("a rate without a unit", zone("zone=one:1m rate=10"), "limit_req zone=one;".into()),
        ("a rate of 0r/s", zone("zone=one:1m rate=0r/s"), "".into()),
        ("a rate without a number", zone("zone=one:1m rate=r/s"), "".into()),
        ("a rate per hour", zone("zone=one:1m rate=10r/h"), "".into()),
        ("a rate twice and no zone", "limit_req_zone $binary_remote_addr rate=1r/s rate=2r/s;".into(), "".into()),
        ("a zone without a size", zone("zone=one rate=1r/s"), "".into()),
        ("a zone too small", zone("zone=one:16k rate=1r/s"), "".into()),
        ("a zone of exactly eight pages", zone("zone=one:32k rate=1r/s"), "limit_req zone=one;".into()),
        ("a zone of a bad size", zone("zone=one:10x rate=1r/s"), "".into()),
        ("an unknown zone parameter", zone("zone=one:1m burst=5"), "".into()),
        ("a key of text and variables", "limit_req_zone \"$binary_remote_addr:$uri\" zone=one:1m rate=1r/s;\nlimit_req_zone all zone=two:1m rate=30r/m;".into(), "limit_req zone=one;\nlimit_req zone=two;".into()),
        ("a zone declared twice with one key", format!("{REQ}\n{REQ}"), "".into()),
        ("a zone declared twice with another key and size", format!("{REQ}\nlimit_req_zone $uri zone=one:2m rate=10r/s;"), "".into()),
        ("a zone name for both modules", format!("{REQ}\nlimit_conn_zone $binary_remote_addr zone=one:1m;"), "".into()),
        // limit_req
        ("burst and nodelay", REQ.into(), "limit_req zone=one burst=5 nodelay;".into()),
        ("burst and delay", REQ.into(), "limit_req zone=one burst=5 delay=3;".into()),
        ("burst=0", REQ.into(), "limit_req zone=one burst=0;".into()),
        ("burst=-1", REQ.into(), "limit_req zone=one burst=-1;".into()),
        ("burst=abc", REQ.into(), "limit_req zone=one burst=abc;".into()),
        ("delay=0", REQ.into(), "limit_req zone=one burst=5 delay=0;".into()),
        ("an unknown limit_req parameter", REQ.into(), "limit_req zone=one bursts=5;".into()),
        ("limit_req without a zone", REQ.into(), "limit_req burst=5 nodelay;".into()),
        ("limit_req of one zone twice", REQ.into(), "limit_req zone=one;\nlimit_req zone=one burst=2;".into()),
        ("limit_req of two zones", format!("{REQ}\nlimit_req_zone $uri zone=two:1m rate=1r/m;"), "limit_req zone=one burst=2;\nlimit_req zone=two;".into()),
        ("limit_req of a zone nobody declares", REQ.into(), "limit_req zone=two;".into()),
        ("limit_req of a limit_conn zone", CONN.into(), "limit_req zone=addr;".into()),
        ("limit_req in if", REQ.into(), "if ($uri) {\nlimit_req zone=one;\n}".into()),
        // limit_req_status, limit_req_log_level, limit_req_dry_run
        ("status 400 and 599", format!("{REQ}\nlimit_req_status 400;"), "limit_req_status 599;".into()),
        ("status 399", REQ.into(), "limit_req_status 399;".into()),
        ("status 600", REQ.into(), "limit_req_status 600;".into()),
        ("status abc", REQ.into(), "limit_req_status abc;".into()),
        ("log levels", format!("{REQ}\nlimit_req_log_level info;"), "limit_req_log_level notice;".into()),
        ("log level debug", REQ.into(), "limit_req_log_level debug;".into()),
        ("log level crit", REQ.into(), "limit_req_log_level crit;".into()),
        ("dry run on and off", format!("{REQ}\nlimit_req_dry_run on;"), "limit_req_dry_run off;".into()),
        ("dry run maybe", REQ.into(), "limit_req_dry_run maybe;".into()),
        // limit_conn_zone and limit_conn
        ("a conn zone and a limit", CONN.into(), "limit_conn addr 10;".into()),
        ("limit_conn without a number", CONN.into(), "limit_conn addr;".into()),
        ("limit_conn 0", CONN.into(), "limit_conn addr 0;".into()),
        ("limit_conn of one zone twice", CONN.into(), "limit_conn addr 1;\nlimit_conn addr 2;".into()),
        ("a conn zone without zone=", "limit_conn_zone $binary_remote_addr;".into(), "".into()),
        ("a conn zone without a size", conn_zone("zone=addr"), "".into()),
        ("conn status, log level and dry run", format!("{CONN}\nlimit_conn_status 429;\nlimit_conn_log_level warn;"), "limit_conn_dry_run on;\nlimit_conn_log_level error;".into()),
    ];
    let placed = [
        ("limits at every level", format!("{both}\nlimit_req zone=one;\nlimit_conn addr 5;\nserver {{\nlisten 127.0.0.1:1;\nlimit_req zone=one burst=2;\nlimit_conn addr 4;\nlocation / {{\nlimit_req zone=one burst=3 nodelay;\nlimit_conn addr 3;\nproxy_pass http://127.0.0.1:2;\n}}\n}}")),
        ("limit_req_zone in server", format!("server {{\nlisten 127.0.0.1:1;\n{REQ}\n}}")),
        ("limit_req before its zone", "server {\nlisten 127.0.0.1:1;\nlimit_req zone=late;\n}\nlimit_req_zone $binary_remote_addr zone=late:1m rate=1r/s;".into()),
    ];
    let stream = [
        ("limit_req in stream", "stream {\nserver {\nlisten 127.0.0.1:3;\nproxy_pass 127.0.0.1:2;\nlimit_req zone=one;\n}\n}".into()),
        ("limit_conn in stream", format!("stream {{\n{CONN}\nserver {{\nlisten 127.0.0.1:3;\nlimit_conn addr 1;\nproxy_pass 127.0.0.1:2;\n}}\n}}")),
        ("limit_conn settings at stream level", format!("stream {{\n{CONN}\nlimit_conn addr 2;\nlimit_conn_log_level warn;\nlimit_conn_dry_run on;\nserver {{\nlisten 127.0.0.1:3;\nproxy_pass 127.0.0.1:2;\n}}\n}}")),
        ("a stream zone with an http zone's name", format!("http {{\n{CONN}\n}}\nstream {{\n{CONN}\nserver {{\nlisten 127.0.0.1:3;\nproxy_pass 127.0.0.1:2;\n}}\n}}")),
        ("stream limit_conn of an http zone", format!("http {{\n{CONN}\n}}\nstream {{\nserver {{\nlisten 127.0.0.1:3;\nproxy_pass 127.0.0.1:2;\nlimit_conn addr 1;\n}}\n}}")),
        ("stream limit_conn of a zone nobody declares", "stream {\nserver {\nlisten 127.0.0.1:3;\nproxy_pass 127.0.0.1:2;\nlimit_conn nowhere 1;\n}\n}".into()),
        ("limit_conn_status in stream", format!("stream {{\n{CONN}\nserver {{\nlisten 127.0.0.1:3;\nproxy_pass 127.0.0.1:2;\nlimit_conn_status 429;\n}}\n}}")),
    ];
    located
        .into_iter()
        .map(|(name, http, location)| {
            case(
                name,
                format!(
                    "events {{}}\nhttp {{\n{http}\nserver {{\nlisten 127.0.0.1:1;\nlocation / {{\n{location}\nproxy_pass http://127.0.0.1:2;\n}}\n}}\n}}\n"
                ),
            )
        })
        .chain(placed.into_iter().map(|(name, http)| {
            case(name, format!("events {{}}\nhttp {{\n{http}\n}}\n"))
        }))
        .chain(stream.into_iter().map(|(name, text)| {
            case(name, format!("events {{}}\n{text}\n"))
        }))
        .collect()
}

/// `access_log` and `log_format` as ngx_http_log_module and ngx_stream_log_module read them:
/// parameters, formats named before (stream) or anywhere (http), each block's own variables.
fn log_cases() -> Vec<Case> {
    let http = [
        ("if=", "access_log /dev/null combined if=$arg_log;"),
        (
            "buffer and flush",
            "access_log /dev/null combined buffer=32k flush=5s;",
        ),
        ("gzip", "access_log /dev/null combined gzip=5 flush=1m;"),
        (
            "flush without a buffer",
            "access_log /dev/null combined flush=5s;",
        ),
        ("a zero buffer", "access_log /dev/null combined buffer=0;"),
        (
            "a buffer not a size",
            "access_log /dev/null combined buffer=big;",
        ),
        (
            "a flush not a time",
            "access_log /dev/null combined buffer=4k flush=soon;",
        ),
        (
            "a gzip level past 9",
            "access_log /dev/null combined gzip=10;",
        ),
        (
            "an unknown parameter",
            "access_log /dev/null combined sometimes;",
        ),
        ("off with a parameter", "access_log off combined;"),
        (
            "if= of a variable nobody defines",
            "access_log /dev/null combined if=$nope;",
        ),
        (
            "a format with a stream variable",
            "log_format s '$bytes_received';",
        ),
    ];
    let stream = [
        ("a stream log", "log_format s '$status $bytes_sent $bytes_received $session_time $upstream_addr';\naccess_log /dev/null s;"),
        ("a stream log without a format", "access_log /dev/null;"),
        ("a stream log of combined", "access_log /dev/null combined;"),
        ("a stream log before its format", "access_log /dev/null s;\nlog_format s '$status';"),
        ("a stream format with an http variable", "log_format s '$request';"),
        ("a stream format named combined", "log_format combined '$status';\naccess_log /dev/null combined;"),
        ("a stream format twice", "log_format s '$status';\nlog_format s '$protocol';"),
        ("stream format names in another case", "log_format Basic '$status';\naccess_log /dev/null basic;"),
        ("stream format names differing in case", "log_format s '$status';\nlog_format S '$protocol';"),
        ("a stream log with if=", "log_format s '$status';\naccess_log /dev/null s if=$status buffer=1k;"),
        ("a stream format escaping json", "log_format s escape=json '$status';\naccess_log /dev/null s;"),
    ];
    let server = [
        ("a stream log in a server", "access_log /dev/null s;"),
        ("a stream log off in a server", "access_log off;"),
        ("a stream log_format in a server", "log_format t '$status';"),
    ];
    http.into_iter()
        .map(|(name, line)| {
            case(
                name,
                format!("events {{}}\nhttp {{\n{line}\nserver {{\nlisten 127.0.0.1:1;\n}}\n}}\n"),
            )
        })
        .chain(stream.into_iter().map(|(name, lines)| {
            case(
                name,
                format!("events {{}}\nstream {{\n{lines}\nserver {{\nlisten 127.0.0.1:3;\nproxy_pass 127.0.0.1:2;\n}}\n}}\n"),
            )
        }))
        .chain(server.into_iter().map(|(name, line)| {
            case(
                name,
                format!("events {{}}\nstream {{\nlog_format s '$status';\nserver {{\nlisten 127.0.0.1:3;\n{line}\nproxy_pass 127.0.0.1:2;\n}}\n}}\n"),
            )
        }))
        .collect()
}

/// The stream's realip, half-close, time-limit and backend TLS directives, as their handlers
/// read them.
fn stream_setting_cases() -> Vec<Case> {
    [
        ("set_real_ip_from in stream", "set_real_ip_from 10.0.0.0/8;\nset_real_ip_from unix:;", ""),
        ("set_real_ip_from in a stream server", "", "set_real_ip_from 192.0.2.1;"),
        ("set_real_ip_from all", "set_real_ip_from all;", ""),
        ("set_real_ip_from a bad block", "set_real_ip_from 10.0.0.0/40;", ""),
        ("set_real_ip_from low bits", "", "set_real_ip_from 10.1.2.3/8;"),
        ("proxy_half_close", "proxy_half_close on;", "proxy_half_close off;"),
        ("proxy_half_close maybe", "", "proxy_half_close maybe;"),
        ("proxy_protocol_timeout", "proxy_protocol_timeout 5s;", "proxy_protocol_timeout 500ms;"),
        ("proxy_protocol_timeout not a time", "", "proxy_protocol_timeout soon;"),
        ("ssl_handshake_timeout", "ssl_handshake_timeout 10s;", "ssl_handshake_timeout 1m;"),
        ("ssl_handshake_timeout twice", "", "ssl_handshake_timeout 1s;\nssl_handshake_timeout 2s;"),
        ("proxy_ssl checks", "proxy_ssl on;\nproxy_ssl_trusted_certificate /etc/ssl/certs/ca-certificates.crt;\nproxy_ssl_verify on;\nproxy_ssl_verify_depth 2;", "proxy_ssl_name $server_addr;\nproxy_ssl_server_name on;"),
        ("proxy_ssl_verify_depth not a number", "", "proxy_ssl_verify_depth x;"),
        ("proxy_ssl_name with an http variable", "", "proxy_ssl_name $host;"),
        ("proxy_ssl_verify off without a certificate", "proxy_ssl on;", "proxy_ssl_verify off;"),
    ]
    .into_iter()
    .map(|(name, stream, server)| {
        case(
            name,
            format!("events {{}}\nstream {{\n{stream}\nserver {{\nlisten 127.0.0.1:3;\n{server}\nproxy_pass 127.0.0.1:2;\n}}\n}}\n"),
        )
    })
    .collect()
}

#[test]
fn stream_settings_match_nginx() {
    compare(stream_setting_cases());
}

/// UDP listens and the directives of UDP sessions: what goes with `udp` and what does not
/// (ngx_stream_core_listen's checks), a TCP and a UDP socket on one port, and
/// `proxy_responses` and `proxy_requests` as ngx_conf_set_num_slot reads them.
fn stream_udp_cases() -> Vec<Case> {
    [
        ("udp", "listen 127.0.0.1:3 udp;", ""),
        ("udp and tcp on one port", "listen 127.0.0.1:3 udp;
listen 127.0.0.1:3;", ""),
        ("udp twice", "listen 127.0.0.1:3 udp;
listen 127.0.0.1:3 udp;", ""),
        ("udp reuseport", "listen 127.0.0.1:3 udp reuseport;", ""),
        ("udp backlog", "listen 127.0.0.1:3 udp backlog=10;", ""),
        ("udp ssl", "listen 127.0.0.1:3 udp ssl;", ""),
        ("udp so_keepalive", "listen 127.0.0.1:3 udp so_keepalive=on;", ""),
        ("udp proxy_protocol", "listen 127.0.0.1:3 udp proxy_protocol;", ""),
        ("udp fastopen", "listen 127.0.0.1:3 udp fastopen=5;", ""),
        ("proxy_responses", "listen 127.0.0.1:3 udp;", "proxy_responses 1;"),
        ("proxy_responses 0", "listen 127.0.0.1:3 udp;", "proxy_responses 0;"),
        ("proxy_responses a word", "listen 127.0.0.1:3 udp;", "proxy_responses many;"),
        ("proxy_responses twice", "listen 127.0.0.1:3 udp;", "proxy_responses 1;\nproxy_responses 2;"),
        ("proxy_requests", "listen 127.0.0.1:3 udp;", "proxy_requests 3;"),
        ("proxy_requests -1", "listen 127.0.0.1:3 udp;", "proxy_requests -1;"),
        ("proxy_requests, two values", "listen 127.0.0.1:3 udp;", "proxy_requests 1 2;"),
    ]
    .into_iter()
    .map(|(name, listen, server)| {
        case(
            name,
            format!("events {{}}\nstream {{\nserver {{\n{listen}\n{server}\nproxy_pass 127.0.0.1:2;\n}}\n}}\n"),
        )
    })
    .collect()
}

#[test]
fn stream_udp_matches_nginx() {
    compare(stream_udp_cases());
}

/// Client certificates in http: the lowering's checks of the values (the files are read when
/// a server with certificates is built, as nginx reads them only for those).
fn client_certificate_cases() -> Vec<Case> {
    let ca = "/etc/ssl/certs/ca-certificates.crt";
    [
        (
            "ssl_verify_client on",
            format!("ssl_verify_client on;\nssl_client_certificate {ca};"),
            String::new(),
        ),
        (
            "ssl_verify_client in a server",
            String::new(),
            format!(
                "ssl_verify_client optional;\nssl_client_certificate {ca};\nssl_verify_depth 3;"
            ),
        ),
        (
            "ssl_verify_client optional_no_ca",
            String::new(),
            "ssl_verify_client optional_no_ca;".into(),
        ),
        (
            "ssl_verify_client maybe",
            String::new(),
            "ssl_verify_client maybe;".into(),
        ),
        (
            "ssl_verify_client twice",
            "ssl_verify_client on;\nssl_verify_client off;".into(),
            String::new(),
        ),
        (
            "ssl_verify_depth not a number",
            String::new(),
            "ssl_verify_depth deep;".into(),
        ),
        (
            "ssl_trusted_certificate",
            format!("ssl_trusted_certificate {ca};"),
            String::new(),
        ),
        (
            "ssl_client_certificate in a location",
            String::new(),
            format!("location / {{ ssl_client_certificate {ca}; }}"),
        ),
        (
            "ssl_crl, read only for TLS servers",
            "ssl_crl /nonexistent/crl.pem;".into(),
            format!("ssl_verify_client on;\nssl_client_certificate {ca};"),
        ),
        (
            "ssl_crl in a location",
            String::new(),
            "location / { ssl_crl /etc/ssl/crl.pem; }".into(),
        ),
        (
            "ssl_crl with two files",
            "ssl_crl /etc/ssl/a.pem /etc/ssl/b.pem;".into(),
            String::new(),
        ),
        ("ssl_ocsp off", String::new(), "ssl_ocsp off;".into()),
    ]
    .into_iter()
    .map(|(name, http, server)| {
        case(
            name,
            format!(
                "events {{}}\nhttp {{\n{http}\nserver {{\nlisten 127.0.0.1:3;\n{server}\n}}\n}}\n"
            ),
        )
    })
    .collect()
}

#[test]
fn client_certificate_directives_match_nginx() {
    compare(client_certificate_cases());
}

#[test]
fn log_directives_match_nginx() {
    compare(log_cases());
}

#[test]
fn limit_directives_match_nginx() {
    compare(limit_cases());
}

#[test]
fn map_blocks_match_nginx() {
    compare(map_cases());
}

#[test]
fn auth_directives_match_nginx() {
    compare(auth_cases());
}

#[test]
fn files_match_nginx() {
    compare(file_cases());
}

#[test]
fn error_page_matches_nginx() {
    compare(error_page_cases());
}

#[test]
fn gzip_matches_nginx() {
    compare(gzip_cases());
}

#[test]
fn charset_resolver_and_auth_request_match_nginx() {
    compare(charset_resolver_and_auth_request_cases());
}

#[test]
fn secure_link_matches_nginx() {
    compare(secure_link_cases());
}

#[test]
fn sub_filter_matches_nginx() {
    compare(sub_filter_cases());
}

#[test]
fn valid_referers_match_nginx() {
    compare(referer_cases());
}

#[test]
fn expires_matches_nginx() {
    compare(expires_cases());
}

#[test]
fn geo_and_split_clients_blocks_match_nginx() {
    compare(table_var_cases());
}

#[test]
fn worker_placement_directives_match_nginx() {
    compare(worker_placement_cases());
}

#[test]
fn handwritten_corners_match_nginx() {
    compare(handwritten());
}

#[test]
fn buffer_edges_match_nginx() {
    compare(buffer_edges());
}

#[test]
fn random_token_soups_match_nginx() {
    compare(random_cases(
        std::env::var("RANDOM_CASES")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(300),
    ));
}

fn compare(cases: Vec<Case>) {
    nginx::require_nginx();
    let tmp = TempDir::new("nginx-edges");
    let (users, groups) = (Vec::new(), Vec::new());
    let mut failures = Vec::new();
    let mut rejected = 0;
    for (i, c) in cases.iter().enumerate() {
        let dir = tmp.path.join(format!("case-{i}"));
        std::fs::create_dir_all(&dir).expect("case dir");
        let conf = dir.join("nginx.conf");
        std::fs::write(&conf, &c.text).expect("write the case");
        let prefix = nginx::prefix_dir(&dir, "prefix");
        let theirs = nginx_with_global(&conf, &prefix, c.global.as_deref(), &users, &groups);
        let ours = ours(&conf, &prefix, c.global.as_deref());
        let theirs_shown = if theirs.ok {
            "accepted".to_string()
        } else {
            rejected += 1;
            format!(
                "{} @{}",
                theirs
                    .message
                    .clone()
                    .unwrap_or_else(|| theirs.stderr.clone()),
                theirs
                    .line
                    .map(|l| l.to_string())
                    .unwrap_or_else(|| "-".into())
            )
        };
        // nginx finds an unknown variable once the whole file is read, and names no line; the
        // appliance names the line that uses it.
        let same_unlocated = !theirs.ok
            && theirs.line.is_none()
            && ours.rsplit_once(" @").map(|(m, _)| m) == theirs.message.as_deref();
        if theirs_shown != ours && !same_unlocated {
            failures.push(format!(
                "{}:\n    nginx: {theirs_shown}\n    ours:  {ours}\n    text:  {:?}",
                c.name,
                String::from_utf8_lossy(&c.text)
                    .chars()
                    .take(300)
                    .collect::<String>()
            ));
        }
    }
    println!(
        "{} cases, {} rejected by nginx, {} differences",
        cases.len(),
        rejected,
        failures.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn nginx_with_global(
    conf: &Path,
    prefix: &Path,
    global: Option<&str>,
    users: &[String],
    groups: &[String],
) -> nginx::Verdict {
    match global {
        None => nginx::nginx_t(conf, prefix, users, groups),
        Some(g) => nginx::nginx_t_with(conf, prefix, users, groups, g),
    }
}

/// Our verdict in the same form: "accepted" or "message @line".
fn ours(conf: &Path, prefix: &Path, global: Option<&str>) -> String {
    let options = Options {
        prefix: Some(prefix.to_path_buf()),
        global_directives: global.map(str::to_string),
        ..Options::default()
    };
    match front::compile(conf, &options) {
        Ok(_) => "accepted".into(),
        Err(failed) => {
            let d = failed.diagnostic;
            format!(
                "{} @{}",
                d.message,
                d.origin
                    .map(|o| o.line.to_string())
                    .unwrap_or_else(|| "-".into())
            )
        }
    }
}

/// `ssl_preread`, and the stream's own `map`, `geo` and `split_clients` with the variables
/// nginx's stream context has (not http's), and `proxy_pass` with them.
fn stream_variable_cases() -> Vec<Case> {
    const POOLS: &str = "upstream a { server 127.0.0.1:2; }\nupstream b { server 127.0.0.1:4; }";
    const BY_NAME: &str =
        "map $ssl_preread_server_name $by_name {\nhostnames;\na.test a;\n*.b.test b;\n~^c\\d+\\. 127.0.0.1:5;\ndefault a;\n}";
    let server = |body: &str| format!("server {{\nlisten 127.0.0.1:3;\n{body}\n}}");
    let stream = [
        ("routing by name", format!("{POOLS}\n{BY_NAME}\n{}", server("ssl_preread on;\nproxy_pass $by_name;"))),
        ("a map written after its server", format!("{POOLS}\n{}\n{BY_NAME}", server("ssl_preread on;\nproxy_pass $by_name;"))),
        ("ssl_preread and preread settings at stream level", format!("ssl_preread on;\npreread_timeout 5s;\npreread_buffer_size 4k;\n{POOLS}\n{BY_NAME}\n{}", server("proxy_pass $by_name;"))),
        ("routing by protocol and ALPN", format!("{POOLS}\nmap $ssl_preread_protocol $p {{\n\"\" a;\ndefault b;\n}}\nmap $ssl_preread_alpn_protocols $alpn {{\n~\\bh2\\b a;\ndefault $p;\n}}\n{}", server("ssl_preread on;\nproxy_pass $alpn;"))),
        ("proxy_pass straight from the variable", server("ssl_preread on;\nproxy_pass $ssl_preread_server_name:443;")),
        ("proxy_pass of an unknown variable", server("proxy_pass $nowhere;")),
        ("a stream map of http's $host", format!("map $host $h {{\ndefault a;\n}}\n{}", server("proxy_pass $h;"))),
        ("a stream map defining $host, which stream lacks", format!("{POOLS}\nmap $remote_addr $host {{\ndefault a;\n}}\n{}", server("proxy_pass $host;"))),
        ("a stream map redefining $remote_addr", format!("map $server_port $remote_addr {{\ndefault a;\n}}\n{}", server("proxy_pass 127.0.0.1:2;"))),
        ("ssl_preread maybe", server("ssl_preread maybe;\nproxy_pass 127.0.0.1:2;")),
        ("preread_timeout 1x", server("preread_timeout 1x;\nproxy_pass 127.0.0.1:2;")),
        ("preread_buffer_size 1q", server("preread_buffer_size 1q;\nproxy_pass 127.0.0.1:2;")),
        ("a stream geo", format!("{POOLS}\ngeo $remote_addr $g {{\ndefault a;\n10.0.0.0/8 b;\n}}\n{}", server("proxy_pass $g;"))),
        ("a stream geo with proxy", format!("geo $g {{\nproxy 10.0.0.1;\ndefault a;\n}}\n{}", server("proxy_pass $g;"))),
        ("a stream split_clients", format!("{POOLS}\nsplit_clients $remote_addr $s {{\n50% a;\n* b;\n}}\n{}", server("proxy_pass $s;"))),
        ("a stream resolver", format!("resolver 127.0.0.1 valid=5s ipv6=off;\nresolver_timeout 2s;\n{}", server("ssl_preread on;\nproxy_pass $ssl_preread_server_name:443;"))),
        ("resolver twice in a stream server", server("resolver 127.0.0.1;\nresolver 127.0.0.2;\nproxy_pass 127.0.0.1:2;")),
        ("a stream resolver with ipv6=maybe", server("resolver 127.0.0.1 ipv6=maybe;\nproxy_pass 127.0.0.1:2;")),
        ("a stream return", server("return \"$remote_addr $ssl_preread_protocol\\n\";")),
        ("return twice", server("return a;\nreturn b;")),
        ("return, then proxy_pass", server("return a;\nproxy_pass 127.0.0.1:2;")),
        ("proxy_pass, then return", server("proxy_pass 127.0.0.1:2;\nreturn a;")),
        ("proxy_pass twice", server("proxy_pass 127.0.0.1:2;\nproxy_pass 127.0.0.1:4;")),
        ("proxy_pass twice, return between", server("proxy_pass 127.0.0.1:2;\nreturn a;\nproxy_pass 127.0.0.1:4;")),
        ("return of an unknown variable", server("return $nowhere;")),
        ("a stream limit_conn_zone keyed by the name", format!("limit_conn_zone $ssl_preread_server_name zone=names:1m;\n{}", server("ssl_preread on;\nlimit_conn names 10;\nproxy_pass 127.0.0.1:2;"))),
        ("a hash of the name", format!("upstream h {{\nhash $ssl_preread_server_name consistent;\nserver 127.0.0.1:2;\n}}\n{}", server("ssl_preread on;\nproxy_pass h;"))),
    ];
    let http = [
        (
            "$ssl_preread_server_name in an http map",
            "map $ssl_preread_server_name $n {\ndefault a;\n}",
        ),
        (
            "an http map of a stream map's variable",
            "map $by_name $n {\ndefault a;\n}",
        ),
    ];
    stream
        .into_iter()
        .map(|(name, text)| case(name, format!("events {{}}\nstream {{\n{text}\n}}\n")))
        .chain(http.into_iter().map(|(name, text)| {
            case(
                name,
                format!("events {{}}\nhttp {{\n{text}\n}}\nstream {{\n{POOLS}\n{BY_NAME}\n}}\n"),
            )
        }))
        .collect()
}

#[test]
fn stream_preread_and_variables_match_nginx() {
    compare(stream_variable_cases());
}
