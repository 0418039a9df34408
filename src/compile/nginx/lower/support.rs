//! What the nginx front end supports: the table docs/COMPAT.md is generated from, and the
//! judgement, for a directive left out, of whether leaving it out changes traffic.
//!
//! A test (compat_doc_is_current) fails when docs/COMPAT.md differs from [`render_markdown`],
//! and another checks the lowering against [`SUPPORTED`], so the document cannot drift from the
//! code.

use crate::compile::Impact;

/// A directive the lowering carries into the model.
pub struct Entry {
    pub name: &'static str,
    pub contexts: &'static str,
    /// Empty when supported in full; otherwise what is left out.
    pub partial: &'static str,
}

const fn full(name: &'static str, contexts: &'static str) -> Entry {
    Entry {
        name,
        contexts,
        partial: "",
    }
}

const fn part(name: &'static str, contexts: &'static str, partial: &'static str) -> Entry {
    Entry {
        name,
        contexts,
        partial,
    }
}

const HSL: &str = "http, server, location";

/// Every directive the lowering maps, fully or in part.
pub const SUPPORTED: &[Entry] = &[
    full("include", "any"),
    part(
        "worker_processes",
        "main",
        "worker processes become threads of one process",
    ),
    full("worker_priority", "main"),
    full("worker_cpu_affinity", "main"),
    full("pid", "main"),
    full("daemon", "main"),
    full("worker_shutdown_timeout", "main"),
    part(
        "error_log",
        "main",
        "the first one in the main context; syslog: is not supported",
    ),
    full("events", "main"),
    full("worker_connections", "events"),
    full("http", "main"),
    full("stream", "main"),
    full("upstream", "http, stream"),
    full("server", "http, stream, upstream"),
    full("least_conn", "upstream"),
    full("ip_hash", "upstream"),
    full("hash", "upstream"),
    full("random", "upstream"),
    full("keepalive", "upstream"),
    full("keepalive_timeout", "upstream, http, server, location"),
    full("keepalive_requests", "upstream, http, server, location"),
    full("zone", "upstream"),
    part(
        "sticky",
        "upstream",
        "nginx Plus syntax: `cookie` and `learn ... lookup=$cookie_*`",
    ),
    part(
        "listen",
        "server",
        "socket tuning (rcvbuf, sndbuf, so_keepalive, fastopen) is left to the system; \
         `udp` on a Unix socket is left out",
    ),
    full("server_name", "server"),
    full("location", "server, location"),
    part(
        "proxy_pass",
        "location, if, stream",
        "in `if`, no variables",
    ),
    full("return", "server, location, if, stream"),
    full("rewrite", "server, location, if"),
    full("break", "server, location, if"),
    full("set", "server, location, if"),
    part(
        "if",
        "server, location",
        "in a location, a block may also set proxy_pass, add_header, access_log, expires, \
         gzip, error_page, sendfile, charset, source_charset and override_charset; other \
         directives in it are reported",
    ),
    full("root", HSL),
    full("alias", "location"),
    full("index", HSL),
    full("try_files", "server, location"),
    full("ssl", "server"),
    full("http2", "server"),
    full("proxy_set_header", HSL),
    full("proxy_http_version", HSL),
    full("proxy_connect_timeout", "http, server, location, stream"),
    full("proxy_send_timeout", HSL),
    full("proxy_read_timeout", HSL),
    full("proxy_next_upstream", "http, server, location, stream"),
    full(
        "proxy_next_upstream_tries",
        "http, server, location, stream",
    ),
    full(
        "proxy_next_upstream_timeout",
        "http, server, location, stream",
    ),
    full("proxy_pass_request_headers", HSL),
    full("proxy_pass_request_body", HSL),
    full("proxy_hide_header", HSL),
    full("proxy_pass_header", HSL),
    part(
        "proxy_redirect",
        HSL,
        "a regex's named captures are not available to the replacement ($1..$9 are)",
    ),
    full("proxy_buffering", HSL),
    full("proxy_request_buffering", HSL),
    full("proxy_intercept_errors", HSL),
    full("proxy_ssl_verify", "http, server, location, stream"),
    full("proxy_ssl_verify_depth", "http, server, location, stream"),
    full("proxy_ssl_name", "http, server, location, stream"),
    full("proxy_ssl_server_name", "http, server, location, stream"),
    full(
        "proxy_ssl_trusted_certificate",
        "http, server, location, stream",
    ),
    full("proxy_timeout", "stream"),
    full("proxy_protocol", "stream"),
    full("proxy_ssl", "stream"),
    full("ssl_preread", "stream"),
    full("preread_timeout", "stream"),
    full("proxy_half_close", "stream"),
    full("proxy_responses", "stream"),
    full("proxy_requests", "stream"),
    full("proxy_protocol_timeout", "stream"),
    full("ssl_handshake_timeout", "stream"),
    full("preread_buffer_size", "stream"),
    full("client_max_body_size", HSL),
    full("client_header_timeout", "http, server"),
    full("client_body_timeout", HSL),
    full("send_timeout", HSL),
    full("sendfile", "http, server, location, if"),
    full("sendfile_max_chunk", HSL),
    full("add_header", "http, server, location, if"),
    full("map", "http, stream"),
    full("geo", "http, stream"),
    full("split_clients", "http, stream"),
    full("set_real_ip_from", "http, server, location, stream"),
    full("real_ip_header", HSL),
    full("real_ip_recursive", HSL),
    full("allow", "http, server, location, stream"),
    full("auth_basic", HSL),
    full("auth_basic_user_file", HSL),
    full("satisfy", HSL),
    part(
        "auth_request",
        HSL,
        "in the subrequest, an internal redirect (`index`, try_files' last entry, \
         `error_page`) is not followed (a 500), and limit_req and limit_conn are not applied",
    ),
    part(
        "auth_request_set",
        HSL,
        "nginx's own $args and $limit_rate are not set from the subrequest",
    ),
    full("expires", HSL),
    full("valid_referers", "server, location"),
    full("secure_link", HSL),
    full("secure_link_md5", HSL),
    full("secure_link_secret", HSL),
    full("sub_filter", HSL),
    full("sub_filter_once", HSL),
    full("sub_filter_types", HSL),
    full("sub_filter_last_modified", HSL),
    full("gzip", HSL),
    full("gzip_types", HSL),
    full("gzip_min_length", HSL),
    full("gzip_comp_level", HSL),
    full("gzip_http_version", HSL),
    full("gzip_proxied", HSL),
    full("gzip_vary", HSL),
    full("gzip_disable", HSL),
    part(
        "charset",
        "http, server, location, if",
        "a charset named by a variable is not added",
    ),
    part(
        "source_charset",
        "http, server, location, if",
        "a charset named by a variable is left out",
    ),
    part(
        "charset_map",
        "http",
        "the bodies the appliance writes itself (`return`, its error pages) are not recoded",
    ),
    full("override_charset", "http, server, location, if"),
    full("charset_types", HSL),
    // Used by proxy_pass with variables; names in `upstream` and a plain proxy_pass are looked
    // up once, at start, by the system's resolver, as nginx 1.22 does with getaddrinfo.
    full("resolver", "http, server, location, stream"),
    full("resolver_timeout", "http, server, location, stream"),
    full("gzip_static", HSL),
    full("gunzip", HSL),
    full("autoindex", HSL),
    full("autoindex_exact_size", HSL),
    full("autoindex_format", HSL),
    full("autoindex_localtime", HSL),
    full("etag", HSL),
    full("if_modified_since", HSL),
    full("error_page", HSL),
    full("recursive_error_pages", HSL),
    full("log_not_found", HSL),
    full("internal", "location"),
    full("deny", "http, server, location, stream"),
    full("limit_req_zone", "http"),
    full("limit_req", HSL),
    full("limit_req_status", HSL),
    full("limit_req_log_level", HSL),
    full("limit_req_dry_run", HSL),
    full("limit_conn_zone", "http, stream"),
    full("limit_conn", "http, server, location, stream"),
    full("limit_conn_status", HSL),
    full("limit_conn_log_level", "http, server, location, stream"),
    full("limit_conn_dry_run", "http, server, location, stream"),
    part(
        "access_log",
        "http, server, location, stream",
        "syslog: and paths with variables are not supported; gzip logs are written uncompressed",
    ),
    full("log_format", "http, stream"),
    full("default_type", HSL),
    full("types", HSL),
    full("ssl_certificate", "http, server, stream"),
    full("ssl_certificate_key", "http, server, stream"),
    full("ssl_protocols", "http, server, stream"),
    full("ssl_ciphers", "http, server, stream"),
    full("ssl_prefer_server_ciphers", "http, server, stream"),
    full("ssl_session_timeout", "http, server, stream"),
    full("ssl_verify_client", "http, server, stream"),
    full("ssl_client_certificate", "http, server, stream"),
    full("ssl_trusted_certificate", "http, server, stream"),
    full("ssl_verify_depth", "http, server, stream"),
    full("ssl_crl", "http, server, stream"),
];

/// Directives whose absence does not change what clients get: logging, buffering, caches of
/// the config, performance tuning and process management.
const NO_TRAFFIC_CHANGE: &[&str] = &[
    "user",
    // The sizes of nginx's hash of valid_referers' names; the appliance's needs none.
    "referer_hash_max_size",
    "referer_hash_bucket_size",
    "master_process",
    "worker_rlimit_nofile",
    "worker_rlimit_core",
    "working_directory",
    "lock_file",
    "pcre_jit",
    "thread_pool",
    "timer_resolution",
    "load_module",
    "env",
    "debug_points",
    "google_perftools_profiles",
    "ssl_engine",
    "use",
    "multi_accept",
    "accept_mutex",
    "accept_mutex_delay",
    "debug_connection",
    "worker_aio_requests",
    "tcp_nopush",
    "tcp_nodelay",
    "aio",
    "aio_write",
    "directio",
    "directio_alignment",
    "output_buffers",
    "postpone_output",
    "open_file_cache",
    "open_file_cache_valid",
    "open_file_cache_min_uses",
    "open_file_cache_errors",
    "open_log_file_cache",
    "types_hash_max_size",
    "types_hash_bucket_size",
    "server_names_hash_max_size",
    "server_names_hash_bucket_size",
    "variables_hash_max_size",
    "variables_hash_bucket_size",
    "map_hash_max_size",
    "map_hash_bucket_size",
    "proxy_headers_hash_max_size",
    "proxy_headers_hash_bucket_size",
    "client_body_buffer_size",
    "client_header_buffer_size",
    "client_body_temp_path",
    "client_body_in_file_only",
    "client_body_in_single_buffer",
    "proxy_buffer_size",
    "proxy_buffers",
    "proxy_busy_buffers_size",
    "proxy_max_temp_file_size",
    "proxy_temp_file_write_size",
    "proxy_temp_path",
    "proxy_socket_keepalive",
    "proxy_ignore_client_abort",
    "proxy_limit_rate",
    "reset_timedout_connection",
    "lingering_close",
    "lingering_time",
    "lingering_timeout",
    "log_subrequest",
    "error_log",
    "ssl_session_cache",
    "ssl_session_tickets",
    "ssl_session_ticket_key",
    "ssl_buffer_size",
    "ssl_dhparam",
    "ssl_ecdh_curve",
    "ssl_stapling",
    "ssl_stapling_verify",
    "ssl_stapling_responder",
    "ssl_stapling_file",
    "ssl_early_data",
    "ssl_password_file",
    "ssl_conf_command",
    "ssl_preread_buffer_size",
    "keepalive_time",
    "keepalive_disable",
    "msie_padding",
    "msie_refresh",
    "server_tokens",
    "access_log",
    "uninitialized_variable_warn",
    "rewrite_log",
    "variables_hash_bucket_size",
    "proxy_download_rate",
    "proxy_upload_rate",
    "proxy_buffer_size",
    "tcp_nodelay",
    "http2_max_concurrent_streams",
    "http2_recv_buffer_size",
    "http2_chunk_size",
    "http2_body_preread_size",
    "http2_idle_timeout",
    "http2_recv_timeout",
    "http2_max_field_size",
    "http2_max_header_size",
    "http2_max_requests",
    "large_client_header_buffers",
    "limit_rate",
    "limit_rate_after",
    "max_ranges",
    "read_ahead",
    "port_in_redirect",
    "server_name_in_redirect",
    "absolute_redirect",
    "chunked_transfer_encoding",
    "default_type",
    "types",
    "stub_status",
    "worker_processes",
    "proxy_ssl_session_reuse",
    "proxy_ssl_protocols",
    "proxy_ssl_ciphers",
    "proxy_ssl_conf_command",
    // zlib's memory and nginx's buffering of what it compresses or decompresses: the bodies
    // clients get are the same.
    "gzip_buffers",
    "gunzip_buffers",
    "gzip_window",
    "gzip_hash",
    "gzip_no_buffer",
    "postpone_gzipping",
];

/// Whether leaving a directive out changes traffic, and a few words on what it did.
pub fn unsupported_note(name: &str) -> (Impact, String) {
    let impact = if NO_TRAFFIC_CHANGE.contains(&name) {
        Impact::NoTrafficChange
    } else {
        Impact::ChangesTraffic
    };
    let note = match name {
        "gzip" => "responses are not compressed",
        "set" | "geo" | "split_clients" => {
            "the variable it defines is not available (the appliance has it in http only)"
        }
        "error_page" => "upstream and appliance errors keep their own pages",
        "real_ip_header" | "set_real_ip_from" | "real_ip_recursive" => {
            "$remote_addr stays the connecting address"
        }
        "proxy_cache"
        | "proxy_cache_path"
        | "proxy_cache_valid"
        | "proxy_cache_key"
        | "proxy_cache_use_stale"
        | "proxy_cache_bypass"
        | "proxy_no_cache"
        | "proxy_cache_lock"
        | "proxy_cache_methods"
        | "proxy_cache_min_uses" => "responses are not cached",
        "ssl_ocsp" => "client certificates are not checked with OCSP: revoked ones get through",
        "mail" => "mail proxying is not supported",
        "add_before_body" | "add_after_body" | "addition_types" => {
            "response bodies are not modified"
        }
        "expires" => "Expires and Cache-Control are not added",
        "proxy_pass" => "proxy_pass with variables inside \"if\" is not supported",
        _ if impact == Impact::NoTrafficChange => {
            "tuning or logging the appliance does its own way"
        }
        _ => "not supported",
    };
    (impact, note.to_string())
}

/// The directives docs/COMPAT.md names as examples of those left out that change traffic.
const CHANGES_TRAFFIC_EXAMPLES: [&str; 3] = ["proxy_cache", "add_before_body", "mail"];

/// docs/COMPAT.md.
pub fn render_markdown() -> String {
    let mut out = String::from(
        "# nginx directives and the appliance\n\n\
         Generated from `src/compile/nginx/lower/support.rs`; the test `compat_doc_is_current` \
         fails when this file and the code disagree (`UPDATE_COMPAT=1 cargo test \
         compat_doc_is_current` rewrites it).\n\n\
         `appliance migrate` lists every directive of a config that is not in the first two \
         tables, with its file and line and whether leaving it out changes traffic. \
         `--strict` makes any of them an error.\n\n\
         ## Supported\n\n| directive | contexts |\n|---|---|\n",
    );
    for e in SUPPORTED.iter().filter(|e| e.partial.is_empty()) {
        out.push_str(&format!("| `{}` | {} |\n", e.name, e.contexts));
    }
    out.push_str(
        "\n## Partly supported\n\n| directive | contexts | what is left out |\n|---|---|---|\n",
    );
    for e in SUPPORTED.iter().filter(|e| !e.partial.is_empty()) {
        out.push_str(&format!(
            "| `{}` | {} | {} |\n",
            e.name, e.contexts, e.partial
        ));
    }
    out.push_str(
        "\n## Reported, no change to traffic\n\nLeft out with a line in the report; what clients \
         get is the same.\n\n",
    );
    let mut quiet: Vec<&str> = NO_TRAFFIC_CHANGE
        .iter()
        .copied()
        .filter(|n| !SUPPORTED.iter().any(|e| e.name == *n))
        .collect();
    quiet.sort_unstable();
    quiet.dedup();
    out.push_str(
        &quiet
            .iter()
            .map(|n| format!("`{n}`"))
            .collect::<Vec<_>>()
            .join(", "),
    );
    out.push_str(
        "\n\n## Reported, changes traffic\n\nEvery other directive nginx 1.22 knows is left out \
         with a line in the report that says it changes traffic, for example:\n\n\
         | directive | what clients see without it |\n|---|---|\n",
    );
    for name in CHANGES_TRAFFIC_EXAMPLES {
        out.push_str(&format!("| `{name}` | {} |\n", unsupported_note(name).1));
    }
    out.push_str(
        "\nEach is also logged as a warning when the appliance starts on the config.\n\n\
         ## Refused: access controls\n\nThese only restrict who gets a response; served \
         without them, the appliance would let through clients nginx refuses. A config with one \
         (other than `off`) is not served: `run`, `check`, `-t` and a reload fail with a line \
         naming it; `migrate` compiles it and marks it in the report.\n\n",
    );
    // The guards the appliance carries over (client certificates) stay on the list in case a
    // context leaves one out, but are not refused in practice.
    let names: Vec<String> = crate::compile::report::GUARDS_ACCESS
        .iter()
        .filter(|n| !SUPPORTED.iter().any(|e| e.name == **n))
        .map(|n| format!("`{n}`"))
        .collect();
    out.push_str(&names.join(", "));
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An example of what is left out must not be something the lowering now maps.
    #[test]
    fn the_examples_of_what_is_left_out_are_left_out() {
        for name in CHANGES_TRAFFIC_EXAMPLES {
            assert!(
                SUPPORTED.iter().all(|entry| entry.name != name),
                "{name} is supported now: pick another example"
            );
            assert_eq!(unsupported_note(name).0, Impact::ChangesTraffic, "{name}");
        }
    }

    #[test]
    fn compat_doc_is_current() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/COMPAT.md");
        let expected = render_markdown();
        if std::env::var_os("UPDATE_COMPAT").is_some() {
            std::fs::write(&path, &expected).unwrap();
        }
        let actual = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            actual == expected,
            "docs/COMPAT.md is out of date: run UPDATE_COMPAT=1 cargo test compat_doc_is_current"
        );
    }

    #[test]
    fn gzip_changes_traffic_and_tcp_nopush_does_not() {
        assert_eq!(unsupported_note("gzip").0, Impact::ChangesTraffic);
        assert_eq!(unsupported_note("tcp_nopush").0, Impact::NoTrafficChange);
    }
}
