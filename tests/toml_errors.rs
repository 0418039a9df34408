//! A mistake in an appliance.toml is reported at the line and column where it is written, as
//! `nginx -t` reports a directive's: the setting itself when the check knows which one it is,
//! else the table that holds the item. These go through `compile_file`, which `appliance
//! check`, `run` and a reload all read configs with.

use std::path::PathBuf;

use appliance::compile::{compile_file, Options};

/// A pool and a server that pass validation; each case adds its mistake after them.
const VALID: &str = r#"[[http.upstream]]
name = "b"
[[http.upstream.server]]
address = "127.0.0.1:9"

[[http.server]]
listen = [{ address = "127.0.0.1:8080" }]
[[http.server.location]]
path = "/"
proxy = { pass = "http://b" }
"#;

/// The message and the `file:line:column` the first error of `text` is reported with.
fn first_error(name: &str, text: &str) -> (String, String) {
    let dir = std::env::temp_dir().join(format!("toml-errors-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path: PathBuf = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    let failed = match compile_file(&path, &Options::default()) {
        Ok(_) => panic!("{name}: accepted:\n{text}"),
        Err(f) => f.diagnostic,
    };
    let origin = failed
        .origin
        .as_ref()
        .map(|o| o.to_string())
        .unwrap_or_else(|| panic!("{name}: \"{}\" names no place", failed.message));
    let file = path.to_string_lossy().to_string();
    let place = origin
        .strip_prefix(&format!("{file}:"))
        .unwrap_or_else(|| panic!("{name}: {origin} is not in {file}"))
        .to_string();
    (failed.message, place)
}

/// The 1-based "line:column" of a byte offset.
fn line_column(text: &str, offset: usize) -> String {
    let line = text[..offset].matches('\n').count() + 1;
    let column = offset - text[..offset].rfind('\n').map_or(0, |i| i + 1) + 1;
    format!("{line}:{column}")
}

#[test]
fn each_mistake_is_reported_where_it_is_written() {
    // (name, the text added to VALID, the text the error must point at, a word of the message)
    let cases: &[(&str, &str, &str, &str)] = &[
        (
            "worker_threads",
            "[global]\nworker_threads = 0\n",
            "0\n",
            "worker_threads",
        ),
        (
            "cpu_affinity",
            "[global]\nworker_cpu_affinity = { per_worker = [[0], [4096]] }\n",
            "{ per_worker",
            "CPU 4096",
        ),
        (
            "http_proxy_timeout",
            "[http.proxy]\nconnect_timeout = \"5s\"\nread_timeout = \"0s\"\n",
            "\"0s\"",
            "read_timeout",
        ),
        (
            "dotted_key",
            "[http]\nproxy.next_upstream = [\"error\", \"off\"]\n",
            "[\"error\"",
            "\"off\" cannot be combined",
        ),
        (
            "log_format",
            "[[http.log_format]]\nname = \"a\"\ntemplate = \"$host\"\n\
             [[http.log_format]]\nname = \"b\"\ntemplate = \"${host\"\n",
            "\"${host\"",
            "",
        ),
        (
            "access_log_format",
            "[[http.access_log]]\npath = \"/dev/null\"\nformat = \"nosuch\"\n",
            "\"nosuch\"",
            "unknown log format",
        ),
        (
            "server_weight",
            "[[http.upstream]]\nname = \"c\"\n[[http.upstream.server]]\naddress = \"127.0.0.1:10\"\n\
             [[http.upstream.server]]\naddress = \"127.0.0.1:11\"\nweight = 0\n",
            "0\n",
            "weight=0",
        ),
        (
            "second_server_set_header",
            "[[http.server]]\nlisten = [{ address = \"127.0.0.1:8081\" }]\n\
             proxy = { set_header = { \"Bad:Name\" = \"x\" } }\n",
            "{ \"Bad:Name\"",
            "not a valid header name",
        ),
        (
            "nested_location",
            "[[http.server]]\nlisten = [{ address = \"127.0.0.1:8082\" }]\n\
             [[http.server.location]]\npath = \"/a\"\n\
             [[http.server.location.location]]\npath = \"/a/b\"\n\
             [[http.server.location.location]]\nkind = \"regex\"\npath = \"^/a/c\"\n\
             proxy = { pass = \"http://b/x/\" }\n",
            "\"http://b/x/\"",
            "URI part",
        ),
        (
            "ha_priority",
            "[ha]\nmode = \"local\"\ninterface = \"lo\"\nvip = \"127.0.0.9\"\n\
             peer = \"127.0.0.1:7001\"\npriority = 0\n",
            "0\n",
            "priority",
        ),
        (
            "stream_pass",
            "[[stream.server]]\nlisten = [{ address = \"127.0.0.1:9000\" }]\npass = \"10.0.0.1\"\n",
            "\"10.0.0.1\"",
            "no port",
        ),
        (
            "access_rule",
            "[[http.server]]\nlisten = [{ address = \"127.0.0.1:8083\" }]\n\
             access = [{ allow = \"10.0.0.0/8\" }, { deny = \"10.0.0.0/33\" }]\n",
            "{ deny",
            "invalid parameter \"10.0.0.0/33\"",
        ),
        (
            "proxy_redirect",
            "[[http.server]]\nlisten = [{ address = \"127.0.0.1:8084\" }]\n\
             proxy = { redirect = [\"off\", \"default\"] }\n",
            "[\"off\"",
            "cannot be combined",
        ),
        (
            "map_name",
            "[[http.map]]\nsource = \"$uri\"\nvariable = \"host\"\n",
            "\"host\"",
            "the duplicate \"host\" variable",
        ),
        (
            "map_key_twice",
            "[[http.map]]\nsource = \"$uri\"\nvariable = \"x\"\n\
             entries = [{ key = \"a\", value = \"1\" }, { key = \"A\", value = \"2\" }]\n",
            "\"A\", value",
            "conflicting parameter \"a\"",
        ),
        (
            "map_cycle",
            "[[http.map]]\nsource = \"$y\"\nvariable = \"x\"\n\
             [[http.map]]\nsource = \"$uri\"\nvariable = \"y\"\ndefault = \"$x\"\n",
            "[[http.map]]\nsource = \"$y\"",
            "cycle while evaluating variable \"x\"",
        ),
        (
            "geo_network",
            "[[http.geo]]\nvariable = \"zone\"\n\
             entries = [{ network = \"default\", value = \"0\" }, { network = \"10.0.0.0/33\", value = \"1\" }]\n",
            "\"10.0.0.0/33\"",
            "invalid network \"10.0.0.0/33\"",
        ),
        (
            "geo_overlapping_ranges",
            "[[http.geo]]\nvariable = \"zone\"\nranges = true\n\
             entries = [{ network = \"10.0.0.0-10.0.0.9\", value = \"a\" }, { network = \"10.0.0.5-10.0.0.20\", value = \"b\" }]\n",
            "\"10.0.0.5-10.0.0.20\"",
            "overlaps \"10.0.0.0-10.0.0.9\"",
        ),
        (
            "geo_and_map_of_one_variable",
            "[[http.map]]\nsource = \"$uri\"\nvariable = 'zone'\n\
             [[http.geo]]\nvariable=\"zone\"\n",
            "\"zone\"\n",
            "the duplicate \"zone\" variable",
        ),
        (
            "split_clients_percent",
            "[[http.split_clients]]\nsource = \"$remote_addr\"\nvariable = \"v\"\n\
             parts = [{ percent = \"50\", value = \"a\" }]\n",
            "\"50\"",
            "invalid percent value \"50\"",
        ),
        (
            "split_clients_total",
            "[[http.split_clients]]\nsource = \"$remote_addr\"\nvariable = \"v\"\n\
             parts = [{ percent = \"60%\", value = \"a\" }, { percent = \"50%\", value = \"b\" }]\n",
            "[{ percent = \"60%\"",
            "percent total is greater than 100%",
        ),
        (
            "split_clients_cycle",
            "[[http.split_clients]]\nsource = \"$w\"\nvariable = \"v\"\n\
             [[http.map]]\nsource = \"$v\"\nvariable = \"w\"\n",
            "[[http.split_clients]]",
            "cycle while evaluating variable \"v\"",
        ),
        (
            "auth_realm",
            "[http.auth]\nbasic = \"$nowhere\"\nbasic_user_file = \"/etc/htpasswd\"\n",
            "\"$nowhere\"",
            "unknown \"nowhere\" variable",
        ),
        (
            "auth_request_empty",
            "[http.auth]\nrequest = \"\"\n",
            "\"\"\n",
            "request needs a URI",
        ),
        (
            "auth_request_set_builtin",
            "[http.auth]\nrequest = \"/auth\"\nrequest_set = [{ variable = \"host\", value = \"x\" }]\n",
            "{ variable",
            "\"host\" cannot be set",
        ),
        (
            "auth_request_set_value",
            "[http.auth]\nrequest = \"/auth\"\nrequest_set = [{ variable = \"u\", value = \"$nowhere\" }]\n",
            "\"$nowhere\"",
            "unknown \"nowhere\" variable",
        ),
        (
            "expires",
            "[http]\nexpires = \"@25h\"\n",
            "\"@25h\"",
            "daily time value must be less than 24 hours",
        ),
        (
            "real_ip_from",
            "[http.real_ip]\nfrom = [\"10.0.0.0/8\", \"proxy.example\"]\n",
            "\"proxy.example\"",
            "in set_real_ip_from",
        ),
        (
            "rewrite_regex",
            "[[http.server]]\nlisten = [{ address = \"127.0.0.1:8085\" }]\n\
             script = [{ rewrite = { regex = \"^/(a\", replacement = \"/b\" } }]\n",
            "\"^/(a\"",
            "cannot be compiled",
        ),
        (
            "set_builtin",
            "[[http.server]]\nlisten = [{ address = \"127.0.0.1:8086\" }]\n\
             script = [{ set = { variable = \"uri\", value = \"x\" } }]\n",
            "\"uri\"",
            "the duplicate \"uri\" variable",
        ),
        (
            "if_condition",
            "[[http.server]]\nlisten = [{ address = \"127.0.0.1:8087\" }]\n\
             script = [{ if = { condition = [\"$host\", \"==\", \"a\"] } }]\n",
            "[\"$host\"",
            "unexpected \"==\" in condition",
        ),
        (
            "return_and_script",
            "[[http.server]]\nlisten = [{ address = \"127.0.0.1:8088\" }]\n\
             return = { status = 204 }\nscript = [{ break = true }]\n",
            "{ status = 204 }",
            "writes its return as a step",
        ),
        (
            "limit_unknown_zone",
            "[[http.server]]\nlisten = [{ address = \"127.0.0.1:8089\" }]\n\
             limits = { requests = [{ zone = \"perip\", burst = 5 }] }\n",
            "\"perip\"",
            "no request_zone is named \"perip\"",
        ),
        (
            "limit_rate",
            "[[http.request_zone]]\nname = \"one\"\nkey = \"$remote_addr\"\n\
             size = \"1m\"\nrate = \"10r/h\"\n",
            "\"10r/h\"",
            "invalid rate \"10r/h\"",
        ),
        (
            "limit_zone_key",
            "[[http.connection_zone]]\nname = \"addr\"\nkey = \"$nope\"\nsize = \"1m\"\n",
            "\"$nope\"",
            "unknown \"nope\" variable",
        ),
        (
            "limit_status",
            "[http.limits]\nrequest_status = 302\n",
            "302",
            "between 400 and 599",
        ),
        (
            "pass_template",
            "[[http.server]]\nlisten = [{ address = \"127.0.0.1:8090\" }]\n\
             [[http.server.location]]\npath = \"/\"\n\
             proxy = { pass_template = \"http://$nowhere\" }\n",
            "\"http://$nowhere\"",
            "unknown \"nowhere\" variable",
        ),
        // A problem with the item as a whole: its table's header.
        (
            "server_without_listen",
            "[[http.server]]\nserver_name = [\"x\"]\n",
            "[[http.server]]\nserver_name",
            "listen address",
        ),
    ];
    for (name, added, at, says) in cases {
        let text = format!("{VALID}\n{added}");
        let (message, place) = first_error(name, &text);
        let offset = VALID.len() + 1 + added.find(at).expect("the case names its own text");
        let expected = line_column(&text, offset);
        assert_eq!(place, expected, "{name}: {message}");
        assert!(message.contains(says), "{name}: {message}");
    }
}

#[test]
fn an_item_migrated_from_nginx_conf_keeps_its_nginx_line() {
    // As `migrate` writes them: each item names the nginx.conf line it came from.
    let text = "[[http.upstream]]\nname = \"b\"\norigin = \"/etc/nginx/nginx.conf:12\"\n\
                [[http.upstream.server]]\naddress = \"127.0.0.1:9\"\nweight = 0\n\
                origin = \"/etc/nginx/nginx.conf:13\"\n";
    let (message, place) = {
        let dir = std::env::temp_dir().join(format!("toml-errors-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("migrated.toml");
        std::fs::write(&path, text).unwrap();
        let Err(failed) = compile_file(&path, &Options::default()) else {
            panic!("weight 0 is accepted");
        };
        let d = failed.diagnostic;
        (d.message.clone(), d.origin.map(|o| o.to_string()))
    };
    assert!(message.contains("weight=0"), "{message}");
    assert_eq!(
        place.as_deref(),
        Some("/etc/nginx/nginx.conf:13"),
        "{message}"
    );
}
