#!/usr/bin/env python3
"""Writes src/compile/nginx/directives/table.rs from nginx's own ngx_command_t arrays.

The parser checks contexts, argument counts and the generic slot handlers exactly as nginx does,
so its table must be nginx's table, not a transcription by hand. This script reads the
`ngx_command_t` arrays of the modules Debian 12 builds into nginx 1.22.1 (the static modules
`nginx -V` lists, in the binary's own module order) plus the stream and mail families (dynamic
modules in Debian, counted as loaded; see directives.rs), and prints one Rust entry per command.

Usage: scripts/nginx-directives.py /path/to/nginx-1.22.1 > src/compile/nginx/directives/table.rs

Debian patches nginx: the one patch that adds a directive (max_headers, backported into
ngx_http_header_count_module) is not in upstream's source and is added below from Debian's patch.
"""

import re
import sys
from pathlib import Path

# ngx_module_names of Debian's /usr/sbin/nginx (`strings` lists them in this order), then the
# modules inside Debian's ngx_stream_module.so and ngx_mail_module.so (auto/modules order).
STATIC_MODULES = """
ngx_core_module ngx_errlog_module ngx_conf_module ngx_openssl_module ngx_regex_module
ngx_events_module ngx_event_core_module ngx_epoll_module ngx_thread_pool_module ngx_http_module
ngx_http_core_module ngx_http_log_module ngx_http_header_count_module ngx_http_upstream_module
ngx_http_v2_module ngx_http_static_module ngx_http_gzip_static_module ngx_http_dav_module
ngx_http_autoindex_module ngx_http_index_module ngx_http_random_index_module
ngx_http_mirror_module ngx_http_try_files_module ngx_http_auth_request_module
ngx_http_auth_basic_module ngx_http_access_module ngx_http_limit_conn_module
ngx_http_limit_req_module ngx_http_realip_module ngx_http_geo_module ngx_http_map_module
ngx_http_split_clients_module ngx_http_referer_module ngx_http_rewrite_module ngx_http_ssl_module
ngx_http_proxy_module ngx_http_fastcgi_module ngx_http_uwsgi_module ngx_http_scgi_module
ngx_http_grpc_module ngx_http_memcached_module ngx_http_empty_gif_module ngx_http_browser_module
ngx_http_secure_link_module ngx_http_flv_module ngx_http_mp4_module ngx_http_upstream_hash_module
ngx_http_upstream_zone_module ngx_http_stub_status_module ngx_http_write_filter_module
ngx_http_header_filter_module ngx_http_v2_filter_module ngx_http_gzip_filter_module
ngx_http_ssi_filter_module ngx_http_sub_filter_module ngx_http_gunzip_filter_module
ngx_http_userid_filter_module ngx_http_copy_filter_module ngx_http_slice_filter_module
ngx_http_upstream_ip_hash_module ngx_http_upstream_least_conn_module
ngx_http_upstream_random_module ngx_http_upstream_keepalive_module ngx_http_chunked_filter_module
ngx_http_range_header_filter_module ngx_http_postpone_filter_module
ngx_http_charset_filter_module ngx_http_addition_filter_module ngx_http_headers_filter_module
ngx_http_range_body_filter_module ngx_http_not_modified_filter_module
""".split()

STREAM_MODULES = """
ngx_stream_module ngx_stream_core_module ngx_stream_log_module ngx_stream_proxy_module
ngx_stream_upstream_module ngx_stream_write_filter_module ngx_stream_ssl_module
ngx_stream_realip_module ngx_stream_limit_conn_module ngx_stream_access_module
ngx_stream_geo_module ngx_stream_map_module ngx_stream_split_clients_module
ngx_stream_return_module ngx_stream_set_module ngx_stream_upstream_hash_module
ngx_stream_upstream_least_conn_module ngx_stream_upstream_random_module
ngx_stream_upstream_zone_module ngx_stream_ssl_preread_module
""".split()

MAIL_MODULES = """
ngx_mail_module ngx_mail_core_module ngx_mail_ssl_module ngx_mail_pop3_module
ngx_mail_imap_module ngx_mail_smtp_module ngx_mail_auth_http_module ngx_mail_proxy_module
ngx_mail_realip_module
""".split()

# What `#if (NGX_...)` inside a command array means for Debian's build.
DEFINED = {"NGX_HTTP_CACHE", "NGX_HTTP_SSL", "NGX_HTTP_GZIP", "NGX_HAVE_OPENAT", "NGX_STREAM_SSL",
           "NGX_MAIL_SSL", "NGX_THREADS", "NGX_PCRE", "NGX_DEBUG", "NGX_HAVE_INET6",
           "NGX_HTTP_V2", "NGX_HTTP_REALIP", "NGX_HTTP_X_FORWARDED_FOR", "NGX_HTTP_HEADERS",
           "NGX_HTTP_DAV", "NGX_STREAM_SSL"}

FLAGS = {
    "NGX_CONF_NOARGS": 0x1, "NGX_CONF_TAKE1": 0x2, "NGX_CONF_TAKE2": 0x4, "NGX_CONF_TAKE3": 0x8,
    "NGX_CONF_TAKE4": 0x10, "NGX_CONF_TAKE5": 0x20, "NGX_CONF_TAKE6": 0x40, "NGX_CONF_TAKE7": 0x80,
    "NGX_CONF_TAKE12": 0x6, "NGX_CONF_TAKE13": 0xA, "NGX_CONF_TAKE23": 0xC, "NGX_CONF_TAKE123": 0xE,
    "NGX_CONF_TAKE1234": 0x1E, "NGX_CONF_BLOCK": 0x100, "NGX_CONF_FLAG": 0x200,
    "NGX_CONF_ANY": 0x400, "NGX_CONF_1MORE": 0x800, "NGX_CONF_2MORE": 0x1000,
    "NGX_DIRECT_CONF": 0x10000, "NGX_MAIN_CONF": 0x1000000, "NGX_ANY_CONF": 0xFF000000,
    "NGX_EVENT_CONF": 0x2000000,
    "NGX_HTTP_MAIN_CONF": 0x2000000, "NGX_HTTP_SRV_CONF": 0x4000000,
    "NGX_HTTP_LOC_CONF": 0x8000000, "NGX_HTTP_UPS_CONF": 0x10000000,
    "NGX_HTTP_SIF_CONF": 0x20000000, "NGX_HTTP_LIF_CONF": 0x40000000,
    "NGX_HTTP_LMT_CONF": 0x80000000,
    "NGX_STREAM_MAIN_CONF": 0x2000000, "NGX_STREAM_SRV_CONF": 0x4000000,
    "NGX_STREAM_UPS_CONF": 0x8000000,
    "NGX_MAIL_MAIN_CONF": 0x2000000, "NGX_MAIL_SRV_CONF": 0x4000000,
}

FAMILIES = {"NGX_CORE_MODULE": "Core", "NGX_CONF_MODULE": "Conf", "NGX_EVENT_MODULE": "Event",
            "NGX_HTTP_MODULE": "Http", "NGX_STREAM_MODULE": "Stream", "NGX_MAIL_MODULE": "Mail"}

CONF_LEVELS = {
    "0": None,  # core and event modules: the module's own conf (or the block's)
    "NGX_HTTP_MAIN_CONF_OFFSET": "HttpMain", "NGX_HTTP_SRV_CONF_OFFSET": "HttpSrv",
    "NGX_HTTP_LOC_CONF_OFFSET": "HttpLoc", "NGX_STREAM_MAIN_CONF_OFFSET": "StreamMain",
    "NGX_STREAM_SRV_CONF_OFFSET": "StreamSrv", "NGX_MAIL_MAIN_CONF_OFFSET": "MailMain",
    "NGX_MAIL_SRV_CONF_OFFSET": "MailSrv",
}

GENERIC_SLOTS = {
    "ngx_conf_set_flag_slot": "Flag", "ngx_conf_set_str_slot": "Str",
    "ngx_conf_set_str_array_slot": "StrArray", "ngx_conf_set_keyval_slot": "KeyVal",
    "ngx_conf_set_num_slot": "Num", "ngx_conf_set_size_slot": "Size",
    "ngx_conf_set_off_slot": "Off", "ngx_conf_set_msec_slot": "Msec",
    "ngx_conf_set_sec_slot": "Sec", "ngx_conf_set_bufs_slot": "Bufs",
    "ngx_conf_set_enum_slot": "Enum", "ngx_conf_set_bitmask_slot": "Bitmask",
    "ngx_conf_set_path_slot": "Path", "ngx_conf_set_access_slot": "Access",
}

# Handlers that open a block, and what the block's body is to the parser.
BLOCKS = {
    "ngx_events_block": "Events", "ngx_http_block": "Http", "ngx_stream_block": "Stream",
    "ngx_mail_block": "Mail", "ngx_http_core_server": "HttpServer",
    "ngx_http_core_location": "Location", "ngx_http_core_limit_except": "LimitExcept",
    "ngx_http_rewrite_if": "If", "ngx_http_upstream": "HttpUpstream",
    "ngx_stream_core_server": "StreamServer", "ngx_stream_upstream": "StreamUpstream",
    "ngx_mail_core_server": "MailServer", "ngx_http_core_types": "Types",
    "ngx_http_map_block": "Map", "ngx_http_geo_block": "Geo",
    "ngx_conf_split_clients_block": "SplitClients", "ngx_http_charset_map_block": "CharsetMap",
    "ngx_stream_map_block": "StreamMap", "ngx_stream_geo_block": "StreamGeo",
    "ngx_stream_split_clients_block": "StreamSplitClients",
}


def strip_comments(text):
    return re.sub(r"/\*.*?\*/", "", text, flags=re.S)


def preprocess(body):
    """Keeps the lines of a command array that Debian's build compiles."""
    out, stack = [], [True]
    for line in body.splitlines():
        m = re.match(r"\s*#\s*(if|ifdef|ifndef|elif|else|endif)\b\s*(.*)", line)
        if not m:
            if all(stack):
                out.append(line)
            continue
        kind, cond = m.groups()
        if kind in ("if", "ifdef", "ifndef"):
            names = re.findall(r"NGX_\w+", cond)
            value = all(n in DEFINED for n in names) if names else cond.strip() != "0"
            stack.append(not value if kind == "ifndef" else value)
        elif kind == "else":
            stack[-1] = not stack[-1]
        elif kind == "endif":
            stack.pop()
        else:
            raise SystemExit(f"#elif not handled: {line}")
    return "\n".join(out)


def split_top(text, sep=","):
    parts, depth, cur = [], 0, ""
    for ch in text:
        if ch in "({[":
            depth += 1
        elif ch in ")}]":
            depth -= 1
        if ch == sep and depth == 0:
            parts.append(cur.strip())
            cur = ""
        else:
            cur += ch
    if cur.strip():
        parts.append(cur.strip())
    return parts


def entries(body):
    """The `{ ... }` entries of a C initializer list."""
    out, depth, cur = [], 0, None
    for ch in body:
        if ch == "{":
            depth += 1
            if depth == 1:
                cur = ""
                continue
        elif ch == "}":
            depth -= 1
            if depth == 0:
                out.append(cur)
                cur = None
                continue
        if cur is not None:
            cur += ch
    return out


def c_string(expr):
    m = re.match(r'ngx_string\("((?:[^"\\]|\\.)*)"\)', expr.strip())
    return m.group(1) if m else None


def flags_of(expr):
    value = 0
    for name in expr.split("|"):
        name = name.strip()
        if name not in FLAGS:
            raise SystemExit(f"unknown flag {name}")
        value |= FLAGS[name]
    return value


def post_of(expr, text, slot, alltext):
    expr = expr.strip()
    if expr in ("NULL", "0"):
        return "None"
    name = expr.lstrip("&").strip()
    if slot in ("Enum", "Bitmask"):
        m = re.search(r"ngx_conf_(?:enum|bitmask)_t\s+" + name + r"\[\]\s*=\s*\{(.*?)\n\};",
                      alltext, re.S)
        if not m:
            raise SystemExit(f"no values for {name}")
        values = [c_string(split_top(e)[0]) for e in entries(m.group(1))]
        values = [v for v in values if v is not None]
        return "Values(&[" + ", ".join(f'"{v}"' for v in values) + "])"
    m = re.search(r"static ngx_conf_num_bounds_t\s+" + name + r"\s*=\s*\{(.*?)\};", text, re.S)
    if m:
        _, low, high = split_top(m.group(1))
        return f"Bounds({low}, {high})"
    m = re.search(r"static ngx_conf_deprecated_t\s+" + name + r"\s*=\s*\{(.*?)\};", text, re.S)
    if m:
        _, old, new = split_top(m.group(1))
        return f"Deprecated({old}, {new})"
    m = re.search(r"static ngx_conf_post_t\s+" + name + r"\s*=\s*\{?\s*(\w+)", text, re.S)
    if m:
        return f'Handler("{m.group(1)}")'
    m = re.search(r"static ngx_conf_post_handler_pt\s+" + name + r"\s*=\s*(\w+)", text, re.S)
    if m:
        return f'Handler("{m.group(1)}")'
    return f'Handler("{name}")'


def main():
    root = Path(sys.argv[1]) / "src"
    sources = {p: strip_comments(p.read_text(encoding="latin-1")) for p in root.rglob("*.c")}
    modules = {}
    alltext = "\n".join(sources.values())
    for path, text in sources.items():
        for m in re.finditer(r"ngx_module_t\s+(\w+)\s*=\s*\{\s*NGX_MODULE_V1,\s*([^,]+),\s*"
                             r"([^,]+),\s*(\w+),", text):
            modules[m.group(1)] = (path, m.group(3).strip(), m.group(4))

    rows = []
    for module in STATIC_MODULES + STREAM_MODULES + MAIL_MODULES:
        if module == "ngx_http_header_count_module":
            # Debian's backport (1.22.1-9+deb12u8): `max_headers number;` in http and server,
            # an ngx_conf_set_num_slot in the module's server conf.
            rows.append(("max_headers", module, "Http", 0x2000000 | 0x4000000 | 0x2,
                         "ngx_conf_set_num_slot", "HttpSrv", "max_headers", "None"))
            continue
        if module not in modules:
            raise SystemExit(f"module {module} not found")
        path, commands, mtype = modules[module]
        if commands == "NULL":
            continue
        text = sources[path]
        m = re.search(r"ngx_command_t\s+" + commands + r"\[\]\s*=\s*\{(.*?)\n\};", text, re.S)
        if not m:
            raise SystemExit(f"commands {commands} not found")
        for entry in entries(preprocess(m.group(1))):
            fields = split_top(entry)
            if len(fields) != 6:
                if fields and fields[0] == "ngx_null_string":
                    continue
                raise SystemExit(f"odd entry in {commands}: {fields}")
            name = c_string(fields[0])
            if name is None:
                continue
            handler = fields[2]
            conf = fields[3].strip()
            if conf not in CONF_LEVELS:
                raise SystemExit(f"conf {conf} in {name}")
            offset = fields[4].strip()
            fm = re.match(r"offsetof\(\s*\w+\s*,\s*([\w.\[\]]+)\s*\)", offset)
            field = fm.group(1) if fm else offset
            slot = GENERIC_SLOTS.get(handler)
            post = post_of(fields[5], text, slot, alltext) if slot else "None"
            rows.append((name, module, FAMILIES[mtype], flags_of(fields[1]), handler,
                         CONF_LEVELS[conf], field, post))

    print("// Generated by scripts/nginx-directives.py from nginx 1.22.1's ngx_command_t arrays")
    print("// (plus Debian's max_headers backport). Regenerate rather than edit by hand.")
    print()
    print("use super::{Conf, Directive, Family, Handler, Post};")
    print()
    print("#[rustfmt::skip]")
    print("pub(super) static DIRECTIVES: &[Directive] = &[")
    for name, module, family, flags, handler, conf, field, post in rows:
        if handler in GENERIC_SLOTS:
            kind = f"Handler::{GENERIC_SLOTS[handler]}"
        elif handler in BLOCKS:
            block = BLOCKS[handler]
            if family == "Stream" and not block.startswith("Stream"):
                block = "Stream" + block
            kind = f"Handler::Block(super::Block::{block})"
        elif flags & 0x100:
            raise SystemExit(f"block directive {name} with unknown handler {handler}")
        else:
            kind = f'Handler::Custom("{handler}")'
        conf = f"Conf::{conf}" if conf else "Conf::Module"
        print(f'    Directive {{ name: "{name}", module: "{module}", family: Family::{family}, '
              f"flags: 0x{flags:08x}, handler: {kind}, conf: {conf}, "
              f'field: "{field}", post: Post::{post} }},')
    print("];")


main()
