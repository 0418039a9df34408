//! Strings with nginx variables (`$host`, `${scheme}://$host$request_uri`, `$http_x_real_ip`).
//!
//! The model keeps templates as the user wrote them; this parses them, once, into literal text
//! and variables, with nginx's rules for variable names, and rejects variables the appliance
//! cannot evaluate. The data plane evaluates the parsed form.

use std::fmt;

use super::map::Defined;

/// A parsed template: literal text and variables, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    pub segments: Vec<Segment>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Segment {
    Literal(String),
    Var(Variable),
}

/// Every variable the appliance evaluates. Names are nginx's.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Variable {
    /// `$host`: the Host header's name part, else the server name.
    Host,
    RemoteAddr,
    RemotePort,
    BinaryRemoteAddr,
    /// `$proxy_add_x_forwarded_for`: the client's X-Forwarded-For with `$remote_addr` appended.
    ProxyAddXForwardedFor,
    ProxyHost,
    ProxyPort,
    Scheme,
    RequestUri,
    /// `$uri` (also `$document_uri`): the normalized path, without arguments.
    Uri,
    /// `$args` (also `$query_string`).
    Args,
    IsArgs,
    RequestMethod,
    /// `$request`: the full request line.
    Request,
    ServerProtocol,
    ServerAddr,
    ServerPort,
    ServerName,
    Hostname,
    RequestId,
    RequestLength,
    RequestTime,
    Status,
    BodyBytesSent,
    BytesSent,
    TimeLocal,
    TimeIso8601,
    Msec,
    Connection,
    ConnectionRequests,
    /// `$limit_req_status` and `$limit_conn_status`: what the location's limits decided.
    LimitReqStatus,
    LimitConnStatus,
    ContentType,
    ContentLength,
    RemoteUser,
    Pid,
    NginxVersion,
    UpstreamAddr,
    UpstreamStatus,
    UpstreamResponseTime,
    UpstreamResponseLength,
    UpstreamConnectTime,
    UpstreamHeaderTime,
    /// `$upstream_bytes_sent`, `$upstream_bytes_received`: per try, to and from the backend.
    /// Stream sessions have them; HTTP requests leave them empty.
    UpstreamBytesSent,
    UpstreamBytesReceived,
    /// `$upstream_first_byte_time`, `$upstream_session_time`: per try of a stream session.
    UpstreamFirstByteTime,
    UpstreamSessionTime,
    /// `$bytes_received`, `$session_time` and `$protocol` (`TCP`): a stream session's.
    BytesReceived,
    SessionTime,
    Protocol,
    SslProtocol,
    SslCipher,
    SslServerName,
    /// The client's certificate (`ssl_verify_client`): `$ssl_client_verify`,
    /// `$ssl_client_s_dn`, `$ssl_client_i_dn`, `$ssl_client_serial`,
    /// `$ssl_client_fingerprint`, `$ssl_client_cert`, `$ssl_client_raw_cert` and
    /// `$ssl_client_escaped_cert`.
    SslClientVerify,
    SslClientSDn,
    SslClientIDn,
    SslClientSerial,
    SslClientFingerprint,
    SslClientCert,
    SslClientRawCert,
    SslClientEscapedCert,
    /// `$document_root`: the location's `root`.
    DocumentRoot,
    /// `$request_filename`: the `root` and `$uri`.
    RequestFilename,
    /// `$https`: `on` on a TLS connection, empty otherwise.
    Https,
    /// `$invalid_referer`: `1` when `valid_referers` does not allow the request's Referer.
    InvalidReferer,
    /// `$secure_link`: `1` (or `0` once expired) for a link signed as `secure_link_md5`
    /// says, the path after the hash in the old form; empty otherwise.
    SecureLink,
    /// `$secure_link_expires`: the expiry time the link gave.
    SecureLinkExpires,
    /// `$realip_remote_addr`, `$realip_remote_port`: the connecting client, which realip may
    /// have replaced in `$remote_addr`.
    RealipRemoteAddr,
    RealipRemotePort,
    /// `$proxy_protocol_addr`, `$proxy_protocol_port`: the client a PROXY protocol header named.
    ProxyProtocolAddr,
    ProxyProtocolPort,
    /// `$proxy_protocol_server_addr`, `$proxy_protocol_server_port`: the address it was sent to.
    ProxyProtocolServerAddr,
    ProxyProtocolServerPort,
    /// `$ssl_preread_server_name`, `$ssl_preread_alpn_protocols` (comma-separated) and
    /// `$ssl_preread_protocol`: what a stream server with `ssl_preread on` read in the
    /// client's TLS ClientHello. Stream only.
    SslPrereadServerName,
    SslPrereadAlpnProtocols,
    SslPrereadProtocol,
    /// `$http_<name>`: a request header; the name is lowercase with `_` for `-`.
    RequestHeader(String),
    /// `$sent_http_<name>`: a response header.
    ResponseHeader(String),
    /// `$upstream_http_<name>`: a header of the upstream's response.
    UpstreamHeader(String),
    /// `$cookie_<name>`.
    Cookie(String),
    /// `$arg_<name>`.
    Arg(String),
    /// A variable nginx 1.22 (as Debian builds it) defines but the appliance does not compute,
    /// such as `$upstream_cache_status` or `$gzip_ratio`: accepted, so a config that logs it
    /// loads, and empty, as nginx's value is when the module had nothing to say.
    NotComputed(String),
    /// `$1`..`$9`: a capture of the location's regular expression.
    Capture(u8),
    /// A variable the config defines, with `map` or `set`.
    Declared(String),
}

impl Variable {
    /// Looks a name up (without the `$`). `None`: nginx may know it, the appliance does not.
    pub fn from_name(name: &str) -> Option<Variable> {
        use Variable::*;
        type Make = fn(String) -> Variable;
        let prefixed: [(&str, Make); 5] = [
            ("http_", RequestHeader),
            ("sent_http_", ResponseHeader),
            ("upstream_http_", UpstreamHeader),
            ("cookie_", Cookie),
            ("arg_", Arg),
        ];
        for (prefix, make) in prefixed {
            if let Some(rest) = name.strip_prefix(prefix) {
                if !rest.is_empty() {
                    return Some(make(rest.to_ascii_lowercase()));
                }
            }
        }
        Some(match name {
            "host" => Host,
            "remote_addr" => RemoteAddr,
            "remote_port" => RemotePort,
            "binary_remote_addr" => BinaryRemoteAddr,
            "proxy_add_x_forwarded_for" => ProxyAddXForwardedFor,
            "proxy_host" => ProxyHost,
            "proxy_port" => ProxyPort,
            "scheme" => Scheme,
            "request_uri" => RequestUri,
            "uri" | "document_uri" => Uri,
            "args" | "query_string" => Args,
            "is_args" => IsArgs,
            "request_method" => RequestMethod,
            "request" => Request,
            "server_protocol" => ServerProtocol,
            "server_addr" => ServerAddr,
            "server_port" => ServerPort,
            "server_name" => ServerName,
            "hostname" => Hostname,
            "request_id" => RequestId,
            "request_length" => RequestLength,
            "request_time" => RequestTime,
            "status" => Status,
            "body_bytes_sent" => BodyBytesSent,
            "bytes_sent" => BytesSent,
            "time_local" => TimeLocal,
            "time_iso8601" => TimeIso8601,
            "msec" => Msec,
            "connection" => Connection,
            "connection_requests" => ConnectionRequests,
            "limit_req_status" => LimitReqStatus,
            "limit_conn_status" => LimitConnStatus,
            "content_type" => ContentType,
            "content_length" => ContentLength,
            "remote_user" => RemoteUser,
            "pid" => Pid,
            "nginx_version" => NginxVersion,
            "upstream_addr" => UpstreamAddr,
            "upstream_status" => UpstreamStatus,
            "upstream_response_time" => UpstreamResponseTime,
            "upstream_response_length" => UpstreamResponseLength,
            "upstream_connect_time" => UpstreamConnectTime,
            "upstream_header_time" => UpstreamHeaderTime,
            "upstream_bytes_sent" => UpstreamBytesSent,
            "upstream_bytes_received" => UpstreamBytesReceived,
            "upstream_first_byte_time" => UpstreamFirstByteTime,
            "upstream_session_time" => UpstreamSessionTime,
            "bytes_received" => BytesReceived,
            "session_time" => SessionTime,
            "protocol" => Protocol,
            "ssl_protocol" => SslProtocol,
            "ssl_cipher" => SslCipher,
            "ssl_server_name" => SslServerName,
            "ssl_client_verify" => SslClientVerify,
            "ssl_client_s_dn" => SslClientSDn,
            "ssl_client_i_dn" => SslClientIDn,
            "ssl_client_serial" => SslClientSerial,
            "ssl_client_fingerprint" => SslClientFingerprint,
            "ssl_client_cert" => SslClientCert,
            "ssl_client_raw_cert" => SslClientRawCert,
            "ssl_client_escaped_cert" => SslClientEscapedCert,
            "https" => Https,
            "invalid_referer" => InvalidReferer,
            "secure_link" => SecureLink,
            "secure_link_expires" => SecureLinkExpires,
            "document_root" => DocumentRoot,
            "request_filename" => RequestFilename,
            "realip_remote_addr" => RealipRemoteAddr,
            "realip_remote_port" => RealipRemotePort,
            "proxy_protocol_addr" => ProxyProtocolAddr,
            "proxy_protocol_port" => ProxyProtocolPort,
            "proxy_protocol_server_addr" => ProxyProtocolServerAddr,
            "proxy_protocol_server_port" => ProxyProtocolServerPort,
            "ssl_preread_server_name" => SslPrereadServerName,
            "ssl_preread_alpn_protocols" => SslPrereadAlpnProtocols,
            "ssl_preread_protocol" => SslPrereadProtocol,
            _ if NOT_COMPUTED.contains(&name)
                || NOT_COMPUTED_PREFIXES
                    .iter()
                    .any(|p| name.len() > p.len() && name.starts_with(p)) =>
            {
                NotComputed(name.to_string())
            }
            _ => return None,
        })
    }
}

impl Variable {
    /// Whether nginx has the variable in that context, and the appliance a value for it there.
    pub fn in_context(&self, context: Context) -> bool {
        match context {
            Context::Http => !self.stream_only(),
            Context::Stream => self.in_stream(),
        }
    }

    fn stream_only(&self) -> bool {
        matches!(
            self,
            Variable::SslPrereadServerName
                | Variable::SslPrereadAlpnProtocols
                | Variable::SslPrereadProtocol
                | Variable::UpstreamFirstByteTime
                | Variable::UpstreamSessionTime
                | Variable::BytesReceived
                | Variable::SessionTime
                | Variable::Protocol
        )
    }

    /// The stream context's: the connection's, the PROXY header's, TLS's and ssl_preread's,
    /// the clocks, and the session's outcome for its access log.
    fn in_stream(&self) -> bool {
        use Variable::*;
        matches!(
            self,
            RemoteAddr
                | RemotePort
                | BinaryRemoteAddr
                | ServerAddr
                | ServerPort
                | Hostname
                | Pid
                | NginxVersion
                | Msec
                | TimeLocal
                | TimeIso8601
                | Connection
                | SslProtocol
                | SslCipher
                | SslServerName
                | SslClientVerify
                | SslClientSDn
                | SslClientIDn
                | SslClientSerial
                | SslClientFingerprint
                | SslClientCert
                | SslClientRawCert
                | SslClientEscapedCert
                | RealipRemoteAddr
                | RealipRemotePort
                | ProxyProtocolAddr
                | ProxyProtocolPort
                | ProxyProtocolServerAddr
                | ProxyProtocolServerPort
                | SslPrereadServerName
                | SslPrereadAlpnProtocols
                | SslPrereadProtocol
                | Status
                | BytesSent
                | BytesReceived
                | SessionTime
                | Protocol
                | UpstreamAddr
                | UpstreamConnectTime
                | UpstreamFirstByteTime
                | UpstreamSessionTime
                | UpstreamBytesSent
                | UpstreamBytesReceived
        )
    }

    /// Whether the variable is one of a family named by a prefix (`$http_`, `$arg_`...).
    pub fn is_prefixed(&self) -> bool {
        matches!(
            self,
            Variable::RequestHeader(_)
                | Variable::ResponseHeader(_)
                | Variable::UpstreamHeader(_)
                | Variable::Cookie(_)
                | Variable::Arg(_)
        )
    }
}

/// nginx's two sets of variables: http's and stream's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Context {
    Http,
    Stream,
}

/// nginx 1.22's variables (core, upstream, proxy, ssl and the modules Debian's nginx-core
/// builds in) that the appliance has no value for.
const NOT_COMPUTED: &[&str] = &[
    "bytes_sent",
    "connection_time",
    "realpath_root",
    "request_body",
    "request_body_file",
    "request_completion",
    "pipe",
    "limit_rate",
    "tcpinfo_rtt",
    "tcpinfo_rttvar",
    "tcpinfo_snd_cwnd",
    "tcpinfo_rcv_space",
    "upstream_cache_status",
    "proxy_internal_body_length",
    "proxy_internal_chunked",
    "ssl_ciphers",
    "ssl_curves",
    "ssl_session_id",
    "ssl_session_reused",
    "ssl_early_data",
    "ssl_alpn_protocol",
    "ssl_client_cert",
    "ssl_client_raw_cert",
    "ssl_client_escaped_cert",
    "ssl_client_s_dn",
    "ssl_client_i_dn",
    "ssl_client_s_dn_legacy",
    "ssl_client_i_dn_legacy",
    "ssl_client_serial",
    "ssl_client_fingerprint",
    "ssl_client_verify",
    "ssl_client_v_start",
    "ssl_client_v_end",
    "ssl_client_v_remain",
    "gzip_ratio",
    "uid_got",
    "uid_set",
    "uid_reset",
    "date_local",
    "date_gmt",
    "fastcgi_script_name",
    "fastcgi_path_info",
    "memcached_key",
    "http2",
    "limit_conn_status",
    "limit_req_status",
    "geoip_country_code",
    "geoip_country_code3",
    "geoip_country_name",
    "geoip_city",
    "geoip_region",
    "geoip_region_name",
    "geoip_postal_code",
    "geoip_latitude",
    "geoip_longitude",
    "geoip_org",
    "geoip_area_code",
    "geoip_dma_code",
    "geoip_city_country_code",
    "geoip_city_country_code3",
    "geoip_city_country_name",
    "geoip_city_continent_code",
];

/// Prefixed variables nginx defines that the appliance has no value for.
const NOT_COMPUTED_PREFIXES: &[&str] = &["sent_trailer_", "upstream_trailer_", "upstream_cookie_"];

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for s in &self.segments {
            match s {
                Segment::Literal(t) => f.write_str(t)?,
                Segment::Var(v) => write!(f, "${{{v:?}}}")?,
            }
        }
        Ok(())
    }
}

/// Why a template was rejected, with nginx's wording where nginx has one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TemplateError {
    /// `unknown "name" variable`: neither nginx core nor the appliance defines it.
    Unknown(String),
    /// `${name` without `}`.
    Unclosed,
    /// `$` followed by nothing that can name a variable.
    Empty,
}

impl fmt::Display for TemplateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TemplateError::Unknown(n) => write!(f, "unknown \"{n}\" variable"),
            TemplateError::Unclosed => {
                f.write_str("the closing bracket in variable name is missing")
            }
            TemplateError::Empty => f.write_str("invalid variable name"),
        }
    }
}

impl Template {
    /// Parses with nginx's script rules: `$name` runs over letters, digits and `_`; `${name}`
    /// may be followed by any text; `$1`..`$9` are single-digit captures.
    pub fn parse(text: &str) -> Result<Template, TemplateError> {
        Template::parse_in(text, Defined::NONE)
    }

    /// As [`Template::parse`], where the config's `map`s define `defined` besides nginx's
    /// variables.
    pub fn parse_in(text: &str, defined: Defined<'_>) -> Result<Template, TemplateError> {
        Template::parse_for(Context::Http, text, defined)
    }

    /// As [`Template::parse_in`], with the variables of `context`.
    pub fn parse_for(
        context: Context,
        text: &str,
        defined: Defined<'_>,
    ) -> Result<Template, TemplateError> {
        let mut segments = Vec::new();
        let mut literal = String::new();
        let bytes = text.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] != b'$' {
                let next = text[i..].find('$').map_or(text.len(), |n| i + n);
                literal.push_str(&text[i..next]);
                i = next;
                continue;
            }
            i += 1;
            let (name, next) = if bytes.get(i) == Some(&b'{') {
                let close = text[i..].find('}').ok_or(TemplateError::Unclosed)?;
                (&text[i + 1..i + close], i + close + 1)
            } else if matches!(bytes.get(i), Some(b'1'..=b'9')) {
                (&text[i..i + 1], i + 1)
            } else {
                let len = text[i..]
                    .bytes()
                    .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_')
                    .count();
                (&text[i..i + len], i + len)
            };
            if name.is_empty() {
                return Err(TemplateError::Empty);
            }
            let var = match name.as_bytes() {
                [d @ b'1'..=b'9'] => Variable::Capture(d - b'0'),
                // A map or `set` may not redefine nginx's variables (ngx_http_add_variable
                // refuses a duplicate), so nginx's names are looked up first; but a declared
                // `$http_x` or `$arg_x` wins over the prefixed variable, as in nginx.
                _ => match Variable::from_name(name).filter(|v| v.in_context(context)) {
                    Some(var) if !var.is_prefixed() || !defined.contains(name) => var,
                    _ if defined.contains(name) => Variable::Declared(name.to_string()),
                    _ => return Err(TemplateError::Unknown(name.to_string())),
                },
            };
            if !literal.is_empty() {
                segments.push(Segment::Literal(std::mem::take(&mut literal)));
            }
            segments.push(Segment::Var(var));
            i = next;
        }
        if !literal.is_empty() {
            segments.push(Segment::Literal(literal));
        }
        Ok(Template { segments })
    }

    /// True when the template has no variables.
    pub fn is_literal(&self) -> bool {
        self.segments
            .iter()
            .all(|s| matches!(s, Segment::Literal(_)))
    }

    /// Whether the template's text ends with `suffix` written out (not from a variable).
    pub fn ends_with_literal(&self, suffix: &str) -> bool {
        matches!(self.segments.last(), Some(Segment::Literal(text)) if text.ends_with(suffix))
    }

    /// The text of a template without variables.
    pub fn literal_text(&self) -> Option<String> {
        self.segments
            .iter()
            .map(|s| match s {
                Segment::Literal(text) => Some(text.as_str()),
                Segment::Var(_) => None,
            })
            .collect()
    }

    pub fn variables(&self) -> impl Iterator<Item = &Variable> {
        self.segments.iter().filter_map(|s| match s {
            Segment::Var(v) => Some(v),
            Segment::Literal(_) => None,
        })
    }

    /// Whether the value may depend on the response's headers: `$sent_http_*`,
    /// `$upstream_http_*`, or a variable the config defines (a `map` may be on either).
    /// Where none does, the fast path need not keep the response it passes on.
    pub fn reads_response(&self) -> bool {
        self.variables().any(|v| {
            matches!(
                v,
                Variable::UpstreamHeader(_) | Variable::ResponseHeader(_) | Variable::Declared(_)
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_nginx_variable_forms() {
        let t = Template::parse("${scheme}://$host$request_uri").unwrap();
        assert_eq!(
            t.segments,
            vec![
                Segment::Var(Variable::Scheme),
                Segment::Literal("://".into()),
                Segment::Var(Variable::Host),
                Segment::Var(Variable::RequestUri),
            ]
        );
        let t = Template::parse("$http_X_Real_IP-$10").unwrap();
        assert_eq!(
            t.segments,
            vec![
                Segment::Var(Variable::RequestHeader("x_real_ip".into())),
                Segment::Literal("-".into()),
                Segment::Var(Variable::Capture(1)),
                Segment::Literal("0".into()),
            ]
        );
        assert!(Template::parse("plain").unwrap().is_literal());
    }

    #[test]
    fn rejects_what_nginx_rejects() {
        assert_eq!(
            Template::parse("$nope"),
            Err(TemplateError::Unknown("nope".into()))
        );
        assert_eq!(Template::parse("${host"), Err(TemplateError::Unclosed));
        assert_eq!(Template::parse("a$"), Err(TemplateError::Empty));
        assert_eq!(Template::parse("$-x"), Err(TemplateError::Empty));
    }
}
