//! A directory listing as ngx_http_autoindex_module writes it (nginx 1.22): the entries not
//! starting with `.`, directories first, then by name byte by byte, as HTML (names cut at 50
//! bytes, dates as `06-Dec-2026 21:00`, sizes exact or rounded), XML, JSON or JSONP.
//!
//! Names are treated as bytes, as nginx does without a `charset` of utf-8 (which the appliance
//! does not set).

use std::path::Path;

use super::expires::http_time;
use super::vars::civil;

/// NGX_HTTP_AUTOINDEX_NAME_LEN: the width of the HTML name column.
const NAME_LEN: usize = 50;

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// `autoindex_format`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Html,
    Xml,
    Json,
    Jsonp,
}

#[derive(Clone, Debug)]
pub struct AutoindexConf {
    pub format: Format,
    pub exact_size: bool,
    pub localtime: bool,
}

impl AutoindexConf {
    /// `None` unless `autoindex on`.
    pub fn build(settings: &crate::config::autoindex::Autoindex) -> Option<AutoindexConf> {
        if settings.enable != Some(true) {
            return None;
        }
        let format = match settings.format.as_deref() {
            Some("xml") => Format::Xml,
            Some("json") => Format::Json,
            Some("jsonp") => Format::Jsonp,
            _ => Format::Html,
        };
        Some(AutoindexConf {
            format,
            exact_size: settings.exact_size.unwrap_or(true),
            localtime: settings.localtime.unwrap_or(false),
        })
    }
}

/// One entry of a listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub name: Vec<u8>,
    pub dir: bool,
    pub file: bool,
    pub mtime: i64,
    pub size: u64,
}

/// The entries of `dir` as nginx lists them, sorted; an I/O error for a directory that
/// cannot be read. An entry whose target is gone (a dangling link) is described by the link.
pub fn read_entries(dir: &Path) -> std::io::Result<Vec<Entry>> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::MetadataExt;
    let mut entries = Vec::new();
    for item in std::fs::read_dir(dir)? {
        let item = item?;
        let name = item.file_name().as_bytes().to_vec();
        if name.first() == Some(&b'.') {
            continue;
        }
        let path = item.path();
        let meta = match std::fs::metadata(&path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => continue,
            Err(_) => std::fs::symlink_metadata(&path)?,
        };
        entries.push(Entry {
            name,
            dir: meta.is_dir(),
            file: meta.is_file(),
            mtime: meta.mtime(),
            size: meta.size(),
        });
    }
    // ngx_http_autoindex_cmp_entries: directories first, then strcmp.
    entries.sort_by(|a, b| b.dir.cmp(&a.dir).then_with(|| a.name.cmp(&b.name)));
    Ok(entries)
}

/// The JSONP callback a request names (`?callback=`).
#[derive(Debug, PartialEq, Eq)]
pub enum Callback {
    /// None named: the listing is plain JSON.
    None,
    Named(Vec<u8>),
    /// One nginx refuses (over 128 bytes, or other than letters, digits, `_` and `.`): 400.
    Refused,
}

pub fn jsonp_callback(args: Option<&[u8]>) -> Callback {
    let Some(value) = args.and_then(|a| super::vars::arg(a, b"callback")) else {
        return Callback::None;
    };
    if value.is_empty() {
        return Callback::None;
    }
    let valid = |c: &u8| c.is_ascii_alphanumeric() || *c == b'_' || *c == b'.';
    if value.len() > 128 || !value.iter().all(valid) {
        return Callback::Refused;
    }
    Callback::Named(value.to_vec())
}

/// The response's Content-Type for a format.
pub fn content_type(format: Format) -> &'static str {
    match format {
        Format::Html => "text/html",
        Format::Xml => "text/xml; charset=utf-8",
        Format::Json => "application/json",
        Format::Jsonp => "application/javascript",
    }
}

/// The listing of `entries` for the directory at `uri` (the request's decoded URI);
/// `gmtoff`: the server's offset from GMT in seconds, used with `autoindex_localtime`.
pub fn render(
    conf: &AutoindexConf,
    uri: &[u8],
    entries: &[Entry],
    callback: Option<&[u8]>,
    gmtoff: i64,
) -> Vec<u8> {
    match (conf.format, callback) {
        (Format::Html, _) => html(conf, uri, entries, gmtoff),
        (Format::Xml, _) => xml(entries),
        (Format::Jsonp, Some(callback)) => json(entries, Some(callback)),
        (Format::Json | Format::Jsonp, _) => json(entries, None),
    }
}

fn html(conf: &AutoindexConf, uri: &[u8], entries: &[Entry], gmtoff: i64) -> Vec<u8> {
    let mut out = Vec::with_capacity(256 + entries.len() * 120);
    out.extend_from_slice(b"<html>\r\n<head><title>Index of ");
    escape_html(uri, &mut out);
    out.extend_from_slice(b"</title></head>\r\n<body>\r\n<h1>Index of ");
    escape_html(uri, &mut out);
    out.extend_from_slice(b"</h1><hr><pre><a href=\"../\">../</a>\r\n");
    for entry in entries {
        out.extend_from_slice(b"<a href=\"");
        super::uri::escape_uri_component(&entry.name, &mut out);
        if entry.dir {
            out.push(b'/');
        }
        out.extend_from_slice(b"\">");
        let mut len = entry.name.len();
        let needs_escape = entry.name.iter().any(|b| b"<>&\"".contains(b));
        let shown = if len > NAME_LEN { NAME_LEN - 3 } else { len };
        if needs_escape {
            escape_html(&entry.name[..shown], &mut out);
        } else {
            out.extend_from_slice(&entry.name[..shown]);
        }
        if len > NAME_LEN {
            out.extend_from_slice(b"..&gt;</a>");
        } else {
            if entry.dir && NAME_LEN > len {
                out.push(b'/');
                len += 1;
            }
            out.extend_from_slice(b"</a>");
            out.resize(out.len() + (NAME_LEN - len), b' ');
        }
        out.push(b' ');
        let offset = if conf.localtime { gmtoff } else { 0 };
        let (year, month, day, hour, minute, _) = civil(entry.mtime + offset);
        out.extend_from_slice(
            format!(
                "{day:02}-{}-{year} {hour:02}:{minute:02} ",
                MONTHS[month as usize - 1]
            )
            .as_bytes(),
        );
        let size = match (conf.exact_size, entry.dir) {
            (true, true) => "                  -".to_string(),
            (true, false) => format!("{:>19}", entry.size),
            (false, true) => "      -".to_string(),
            (false, false) => rounded_size(entry.size),
        };
        out.extend_from_slice(size.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"</pre><hr></body>\r\n</html>\r\n");
    out
}

/// `autoindex_exact_size off`: K above 9999 bytes, M and G above their units less one,
/// rounded half up, right-aligned in 6 columns with the unit after (a space before plain
/// bytes).
fn rounded_size(length: u64) -> String {
    const K: u64 = 1024;
    let (size, scale) = if length > K * K * K - 1 {
        (
            length / (K * K * K) + u64::from(length % (K * K * K) > K * K * K / 2 - 1),
            'G',
        )
    } else if length > K * K - 1 {
        (
            length / (K * K) + u64::from(length % (K * K) > K * K / 2 - 1),
            'M',
        )
    } else if length > 9999 {
        (length / K + u64::from(length % K > 511), 'K')
    } else {
        return format!(" {length:>6}");
    };
    format!("{size:>6}{scale}")
}

fn json(entries: &[Entry], callback: Option<&[u8]>) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + entries.len() * 100);
    if let Some(callback) = callback {
        out.extend_from_slice(b"/* callback */\r\n");
        out.extend_from_slice(callback);
        out.push(b'(');
    }
    out.push(b'[');
    for (i, entry) in entries.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"\r\n{ \"name\":\"");
        escape_json(&entry.name, &mut out);
        out.extend_from_slice(b"\", \"type\":\"");
        out.extend_from_slice(kind(entry).as_bytes());
        out.extend_from_slice(b"\", \"mtime\":\"");
        out.extend_from_slice(http_time(entry.mtime).as_bytes());
        if entry.file {
            out.extend_from_slice(format!("\", \"size\":{}", entry.size).as_bytes());
        } else {
            out.push(b'"');
        }
        out.extend_from_slice(b" }");
    }
    out.extend_from_slice(b"\r\n]");
    if callback.is_some() {
        out.extend_from_slice(b");");
    }
    out
}

fn xml(entries: &[Entry]) -> Vec<u8> {
    let mut out = b"<?xml version=\"1.0\"?>\r\n<list>\r\n".to_vec();
    for entry in entries {
        let kind = kind(entry);
        let (year, month, day, hour, minute, second) = civil(entry.mtime);
        out.extend_from_slice(
            format!(
                "<{kind} mtime=\"{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}Z"
            )
            .as_bytes(),
        );
        if entry.file {
            out.extend_from_slice(format!("\" size=\"{}", entry.size).as_bytes());
        }
        out.extend_from_slice(b"\">");
        escape_html(&entry.name, &mut out);
        out.extend_from_slice(format!("</{kind}>\r\n").as_bytes());
    }
    out.extend_from_slice(b"</list>\r\n");
    out
}

fn kind(entry: &Entry) -> &'static str {
    match (entry.dir, entry.file) {
        (true, _) => "directory",
        (false, true) => "file",
        (false, false) => "other",
    }
}

/// ngx_escape_html: `<`, `>`, `&` and `"`.
fn escape_html(bytes: &[u8], out: &mut Vec<u8>) {
    for &b in bytes {
        match b {
            b'<' => out.extend_from_slice(b"&lt;"),
            b'>' => out.extend_from_slice(b"&gt;"),
            b'&' => out.extend_from_slice(b"&amp;"),
            b'"' => out.extend_from_slice(b"&quot;"),
            _ => out.push(b),
        }
    }
}

/// ngx_escape_json: `"` and `\` with a backslash, bytes below 0x20 as `\u00XX`.
fn escape_json(bytes: &[u8], out: &mut Vec<u8>) {
    for &b in bytes {
        match b {
            b'"' | b'\\' => out.extend_from_slice(&[b'\\', b]),
            0..=0x1f => out.extend_from_slice(format!("\\u{b:04x}").as_bytes()),
            _ => out.push(b),
        }
    }
}

/// The server's offset from GMT now, in seconds (for `autoindex_localtime`).
pub fn local_offset() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as libc::time_t);
    // SAFETY: localtime_r writes only into `tm`, which lives on this stack frame.
    unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&now, &mut tm).is_null() {
            return 0;
        }
        tm.tm_gmtoff
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, dir: bool, size: u64) -> Entry {
        Entry {
            name: name.as_bytes().to_vec(),
            dir,
            file: !dir,
            mtime: 1_700_000_000,
            size,
        }
    }

    #[test]
    fn html_as_nginx_writes_it() {
        let conf = AutoindexConf {
            format: Format::Html,
            exact_size: true,
            localtime: false,
        };
        let long = "a".repeat(60);
        let entries = [
            entry("sub", true, 4096),
            entry("a b&c.txt", false, 12),
            entry(&long, false, 1),
        ];
        let text = String::from_utf8(render(&conf, b"/pub/", &entries, None, 0)).unwrap();
        let lines: Vec<&str> = text.split("\r\n").collect();
        assert_eq!(lines[0], "<html>");
        assert_eq!(lines[1], "<head><title>Index of /pub/</title></head>");
        assert_eq!(
            lines[3],
            "<h1>Index of /pub/</h1><hr><pre><a href=\"../\">../</a>"
        );
        assert_eq!(
            lines[4],
            format!(
                "<a href=\"sub/\">sub/</a>{} 14-Nov-2023 22:13                   -",
                " ".repeat(46)
            )
        );
        assert_eq!(
            lines[5],
            format!(
                "<a href=\"a%20b%26c.txt\">a b&amp;c.txt</a>{} 14-Nov-2023 22:13 {:>19}",
                " ".repeat(41),
                12
            )
        );
        assert!(lines[6].starts_with(&format!(
            "<a href=\"{long}\">{}..&gt;</a> 14-Nov-2023",
            &long[..47]
        )));
    }

    #[test]
    fn rounded_sizes() {
        assert_eq!(rounded_size(9999), "   9999");
        assert_eq!(rounded_size(10_000), "    10K");
        assert_eq!(rounded_size(10_752), "    11K");
        assert_eq!(rounded_size(1024 * 1024), "     1M");
        assert_eq!(rounded_size(3 * 1024 * 1024 * 1024 / 2), "     2G");
    }

    #[test]
    fn json_and_xml() {
        let entries = [entry("d", true, 0), entry("f\"", false, 5)];
        let json = String::from_utf8(json(&entries, None)).unwrap();
        assert_eq!(
            json,
            "[\r\n{ \"name\":\"d\", \"type\":\"directory\", \"mtime\":\"Tue, 14 Nov 2023 22:13:20 GMT\" },\r\n{ \"name\":\"f\\\"\", \"type\":\"file\", \"mtime\":\"Tue, 14 Nov 2023 22:13:20 GMT\", \"size\":5 }\r\n]"
        );
        let xml = String::from_utf8(xml(&entries)).unwrap();
        assert!(xml.contains("<file mtime=\"2023-11-14T22:13:20Z\" size=\"5\">f&quot;</file>\r\n"));
        assert_eq!(
            jsonp_callback(Some(b"callback=cb.x_1")),
            Callback::Named(b"cb.x_1".to_vec())
        );
        assert_eq!(jsonp_callback(Some(b"callback=a-b")), Callback::Refused);
        assert_eq!(jsonp_callback(None), Callback::None);
    }

    #[test]
    fn civil_dates() {
        assert_eq!(civil(0), (1970, 1, 1, 0, 0, 0));
        assert_eq!(civil(1_700_000_000), (2023, 11, 14, 22, 13, 20));
        assert_eq!(civil(951_782_400), (2000, 2, 29, 0, 0, 0));
    }
}
