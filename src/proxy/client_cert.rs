//! Client certificates (nginx's `ssl_verify_client`), as nginx's http SSL module handles them:
//!
//! - the handshake asks for a certificate when the server chosen by SNI (or the address's
//!   default server) has `ssl_verify_client` other than `off`, naming the CAs of
//!   `ssl_client_certificate`; the certificate is verified against those and
//!   `ssl_trusted_certificate`'s, up to `ssl_verify_depth`, and with `ssl_crl` against its
//!   revocation lists, but the handshake completes whatever the result
//!   (ngx_ssl_verify_callback accepts every certificate);
//! - each request is then checked against the `ssl_verify_client` of the server its Host
//!   chose (ngx_http_process_request): a certificate that did not verify gets nginx's 400
//!   page "The SSL certificate error" (its internal 495), a missing one under `on` "No
//!   required SSL certificate was sent" (496); `optional_no_ca` lets through a certificate
//!   whose only fault is an unknown CA;
//! - `$ssl_client_verify`, `$ssl_client_s_dn`, `$ssl_client_i_dn`, `$ssl_client_serial`,
//!   `$ssl_client_fingerprint`, `$ssl_client_cert`, `$ssl_client_raw_cert` and
//!   `$ssl_client_escaped_cert` tell the backend who the client is.

use foreign_types::ForeignTypeRef;
use openssl::stack::Stack;
use openssl::x509::verify::X509VerifyFlags;
use openssl::x509::X509Crl;
use pingora::tls::ssl::{SslRef, SslVerifyMode};
use pingora::tls::x509::store::X509StoreBuilder;
use pingora::tls::x509::{X509NameRef, X509VerifyResult, X509};

use crate::compile::diag::Diagnostic;
use crate::config::{Origin, Tls, VerifyClient};

/// What a server asks of clients' certificates, applied to each handshake it is chosen for.
pub struct ClientVerification {
    pub mode: VerifyClient,
    /// `ssl_client_certificate`'s: trusted, and named in the certificate request.
    named: Vec<X509>,
    /// `ssl_trusted_certificate`'s: trusted only.
    trusted: Vec<X509>,
    /// `ssl_crl`'s lists; when there are some, every certificate of a chain is checked.
    revocations: Option<Vec<X509Crl>>,
    depth: u32,
}

impl ClientVerification {
    /// The server's settings, with nginx's checks; `None` when clients are not asked.
    pub fn load(
        tls: &Tls,
        origin: Option<&Origin>,
    ) -> Result<Option<ClientVerification>, Diagnostic> {
        let mode = tls.verify_client.unwrap_or_default();
        if mode == VerifyClient::Off {
            return Ok(None);
        }
        let named = match &tls.client_certificate {
            Some(path) => super::tls::load_cas(path, "client certificate", origin)?,
            // optional_no_ca may go without: every certificate then fails for want of a CA.
            None if mode == VerifyClient::OptionalNoCa => Vec::new(),
            None => {
                return Err(
                    Diagnostic::error("no ssl_client_certificate for ssl_verify_client")
                        .at_opt(origin),
                )
            }
        };
        let mut trusted = match &tls.trusted_certificate {
            Some(path) => super::tls::load_cas(path, "trusted certificate", origin)?,
            None => Vec::new(),
        };
        let revocations = match &tls.crl {
            Some(path) => {
                let (lists, certificates) = load_crl(path, origin)?;
                trusted.extend(certificates);
                Some(lists)
            }
            None => None,
        };
        Ok(Some(ClientVerification {
            mode,
            named,
            trusted,
            revocations,
            depth: tls.verify_depth.unwrap_or(1),
        }))
    }

    /// Asks the handshake's client for a certificate (from the certificate callback, before
    /// the server's certificate request is written).
    pub fn apply(&self, ssl: &mut SslRef) {
        // ngx_ssl_verify_callback: the result is kept for the request, the handshake goes on.
        ssl.set_verify_callback(SslVerifyMode::PEER, |_, _| true);
        set_verify_depth(ssl, self.depth);
        let store = X509StoreBuilder::new().and_then(|mut store| {
            for ca in self.named.iter().chain(&self.trusted) {
                store.add_cert(ca.clone())?;
            }
            if let Some(lists) = &self.revocations {
                for list in lists {
                    add_crl(&mut store, list)?;
                }
                // ngx_ssl_crl's flags: the whole chain, not the client's certificate alone.
                store.set_flags(X509VerifyFlags::CRL_CHECK | X509VerifyFlags::CRL_CHECK_ALL)?;
            }
            Ok(store.build())
        });
        let names = Stack::new().and_then(|mut names| {
            for ca in &self.named {
                names.push(ca.subject_name().to_owned()?)?;
            }
            Ok(names)
        });
        match (store, names) {
            (Ok(store), Ok(names)) => {
                if let Err(e) = ssl.set_verify_cert_store(store) {
                    tracing::error!("cannot set the client CAs of a handshake: {e}");
                }
                ssl.set_client_ca_list(names);
            }
            (Err(e), _) | (_, Err(e)) => {
                tracing::error!("cannot set the client CAs of a handshake: {e}")
            }
        }
    }
}

/// The revocation lists of an `ssl_crl` file, and the certificates it holds besides (which
/// nginx's `X509_LOOKUP_load_file` adds to the trusted ones); as nginx, a file with neither
/// is a config error.
fn load_crl(
    path: &std::path::Path,
    origin: Option<&Origin>,
) -> Result<(Vec<X509Crl>, Vec<X509>), Diagnostic> {
    let failed = |why: String| {
        Diagnostic::error(format!(
            "X509_LOOKUP_load_file(\"{}\") failed ({why})",
            path.display()
        ))
        .at_opt(origin)
    };
    let pem = std::fs::read(path).map_err(|e| failed(crate::compile::describe_io_error(&e)))?;
    let mut lists = Vec::new();
    for block in pem_blocks(&pem, "X509 CRL") {
        lists.push(X509Crl::from_pem(block).map_err(|e| failed(e.to_string()))?);
    }
    let certificates = X509::stack_from_pem(&pem).map_err(|e| failed(e.to_string()))?;
    if lists.is_empty() && certificates.is_empty() {
        return Err(failed("no CRL or certificate in the file".into()));
    }
    Ok((lists, certificates))
}

/// The PEM blocks labelled `label` in `pem`, each from its BEGIN line to its END line.
fn pem_blocks<'a>(pem: &'a [u8], label: &str) -> Vec<&'a [u8]> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let mut blocks = Vec::new();
    let mut rest = pem;
    while let Some(start) = find(rest, begin.as_bytes()) {
        let Some(length) = find(&rest[start..], end.as_bytes()) else {
            break;
        };
        let stop = start + length + end.len();
        blocks.push(&rest[start..stop]);
        rest = &rest[stop..];
    }
    blocks
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// `X509_STORE_add_crl`, which the rust binding lacks; libcrypto is linked.
fn add_crl(store: &mut X509StoreBuilder, list: &X509Crl) -> Result<(), openssl::error::ErrorStack> {
    extern "C" {
        fn X509_STORE_add_crl(
            store: *mut pingora::tls::ssl_sys::X509_STORE,
            crl: *mut pingora::tls::ssl_sys::X509_CRL,
        ) -> std::ffi::c_int;
    }
    use foreign_types::ForeignType;
    // SAFETY: both pointers are live for the call; the store takes its own reference to the
    // list (X509_STORE_add_crl up-refs it), so `list` stays ours to drop.
    match unsafe { X509_STORE_add_crl(store.as_ptr(), list.as_ptr()) } {
        1 => Ok(()),
        _ => Err(openssl::error::ErrorStack::get()),
    }
}

/// `SSL_set_verify_depth`: the rust binding has it for contexts only; libssl is linked.
fn set_verify_depth(ssl: &mut SslRef, depth: u32) {
    extern "C" {
        fn SSL_set_verify_depth(ssl: *mut pingora::tls::ssl_sys::SSL, depth: std::ffi::c_int);
    }
    let depth = std::ffi::c_int::try_from(depth).unwrap_or(std::ffi::c_int::MAX);
    // Safety: the pointer is the live connection the callback was given; the call only
    // stores a number.
    unsafe { SSL_set_verify_depth(ssl.as_ptr(), depth) }
}

/// What a handshake that asked for a certificate got: the certificate, if one was sent, and
/// how its verification ended (`X509_V_OK` when none was sent).
#[derive(Clone, Debug)]
pub struct ClientCertificate {
    pub cert: Option<X509>,
    pub verify_result: i32,
}

impl ClientCertificate {
    /// After the handshake: `None` when no certificate was asked for.
    pub fn of(ssl: &SslRef) -> Option<ClientCertificate> {
        if ssl.verify_mode() == SslVerifyMode::NONE {
            return None;
        }
        Some(ClientCertificate {
            cert: ssl.peer_certificate(),
            verify_result: ssl.verify_result().as_raw(),
        })
    }
}

/// Why a request is refused for its client's certificate: nginx's internal status and the
/// line it logs (at info level).
pub struct Refusal {
    pub status: u16,
    pub message: String,
}

/// nginx's 495, "The SSL certificate error".
pub const CERT_ERROR: u16 = 495;
/// nginx's 496, "No required SSL certificate was sent".
pub const NO_CERT: u16 = 496;

/// ngx_http_process_request's check for a server with `mode`, on a connection whose
/// handshake got `client` (`None`: no certificate was asked for).
pub fn refusal(mode: VerifyClient, client: Option<&ClientCertificate>) -> Option<Refusal> {
    if mode == VerifyClient::Off {
        return None;
    }
    let (cert, rc) = client.map_or((None, X509_V_OK), |c| (c.cert.as_ref(), c.verify_result));
    if rc != X509_V_OK && !(mode == VerifyClient::OptionalNoCa && error_is_optional(rc)) {
        return Some(Refusal {
            status: CERT_ERROR,
            message: format!(
                "client SSL certificate verify error: ({rc}:{})",
                error_string(rc)
            ),
        });
    }
    if mode == VerifyClient::On && cert.is_none() {
        return Some(Refusal {
            status: NO_CERT,
            message: "client sent no required SSL certificate".into(),
        });
    }
    None
}

const X509_V_OK: i32 = 0;

/// X509_verify_cert_error_string: OpenSSL's words for a verification result.
fn error_string(rc: i32) -> &'static str {
    // Safety: `rc` came from SSL_get_verify_result; OpenSSL has words for any code, known or
    // not ("unknown certificate verification error").
    unsafe { X509VerifyResult::from_raw(rc) }.error_string()
}

/// ngx_ssl_verify_error_optional: the faults `optional_no_ca` forgives, all for want of a
/// trusted CA.
fn error_is_optional(rc: i32) -> bool {
    // DEPTH_ZERO_SELF_SIGNED_CERT, SELF_SIGNED_CERT_IN_CHAIN,
    // UNABLE_TO_GET_ISSUER_CERT_LOCALLY, CERT_UNTRUSTED, UNABLE_TO_VERIFY_LEAF_SIGNATURE.
    matches!(rc, 18 | 19 | 20 | 27 | 21)
}

/// `$ssl_client_verify`: `SUCCESS`, `FAILED:reason`, or `NONE` without a certificate.
pub fn verify_text(client: Option<&ClientCertificate>) -> String {
    match client {
        Some(ClientCertificate {
            cert: Some(_),
            verify_result,
        }) => match *verify_result {
            X509_V_OK => "SUCCESS".into(),
            rc => format!("FAILED:{}", error_string(rc)),
        },
        _ => "NONE".into(),
    }
}

/// `$ssl_client_s_dn` and `$ssl_client_i_dn`: the name in RFC 2253 form, as nginx prints it
/// (X509_NAME_print_ex with XN_FLAG_RFC2253).
pub fn rfc2253(name: &X509NameRef) -> String {
    extern "C" {
        fn X509_NAME_print_ex(
            out: *mut pingora::tls::ssl_sys::BIO,
            name: *const pingora::tls::ssl_sys::X509_NAME,
            indent: std::ffi::c_int,
            flags: std::ffi::c_ulong,
        ) -> std::ffi::c_int;
    }
    // ASN1_STRFLGS_RFC2253 | XN_FLAG_SEP_COMMA_PLUS | XN_FLAG_DN_REV | XN_FLAG_DUMP_UNKNOWN_FIELDS
    const XN_FLAG_RFC2253: std::ffi::c_ulong = 0x0111_0317;
    with_memory_bio(|bio| {
        // Safety: `bio` is a live memory BIO and `name` a live name owned by its certificate.
        unsafe { X509_NAME_print_ex(bio, name.as_ptr(), 0, XN_FLAG_RFC2253) >= 0 }
    })
}

/// `$ssl_client_serial`: the serial number in hex, as i2a_ASN1_INTEGER prints it.
pub fn serial(cert: &X509) -> String {
    extern "C" {
        fn i2a_ASN1_INTEGER(
            out: *mut pingora::tls::ssl_sys::BIO,
            a: *const pingora::tls::ssl_sys::ASN1_INTEGER,
        ) -> std::ffi::c_int;
    }
    let serial = cert.serial_number();
    with_memory_bio(|bio| {
        // Safety: `bio` is a live memory BIO and `serial` is owned by the certificate.
        unsafe { i2a_ASN1_INTEGER(bio, serial.as_ptr()) >= 0 }
    })
}

/// What `print` writes to a fresh memory BIO, as text; empty when it fails.
fn with_memory_bio(print: impl FnOnce(*mut pingora::tls::ssl_sys::BIO) -> bool) -> String {
    use pingora::tls::ssl_sys as ffi;
    const BIO_CTRL_INFO: std::ffi::c_int = 3;
    // Safety: the BIO is created, read and freed here; BIO_CTRL_INFO on a memory BIO points
    // `data` at its contents, valid until the BIO is freed, which happens after the copy.
    unsafe {
        let bio = ffi::BIO_new(ffi::BIO_s_mem());
        if bio.is_null() {
            return String::new();
        }
        let mut text = String::new();
        if print(bio) {
            let mut data: *mut std::ffi::c_char = std::ptr::null_mut();
            let len = ffi::BIO_ctrl(
                bio,
                BIO_CTRL_INFO,
                0,
                (&mut data as *mut *mut std::ffi::c_char).cast(),
            );
            if let (Ok(len), false) = (usize::try_from(len), data.is_null()) {
                let bytes = std::slice::from_raw_parts(data.cast::<u8>(), len);
                text = String::from_utf8_lossy(bytes).into_owned();
            }
        }
        ffi::BIO_free_all(bio);
        text
    }
}

/// `$ssl_client_fingerprint`: the SHA-1 of the certificate, lowercase hex.
pub fn fingerprint(cert: &X509) -> String {
    let Ok(digest) = cert.digest(pingora::tls::hash::MessageDigest::sha1()) else {
        return String::new();
    };
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// `$ssl_client_raw_cert`: the certificate in PEM.
pub fn pem(cert: &X509) -> Vec<u8> {
    cert.to_pem().unwrap_or_default()
}

/// `$ssl_client_cert` (deprecated in nginx): the PEM with a tab before every line but the
/// first, so that it fits in a header.
pub fn pem_for_header(cert: &X509) -> Vec<u8> {
    let pem = pem(cert);
    let pem = pem.strip_suffix(b"\n").unwrap_or(&pem);
    let mut out = Vec::with_capacity(pem.len() + 32);
    for (i, line) in pem.split(|&b| b == b'\n').enumerate() {
        if i > 0 {
            out.extend_from_slice(b"\n\t");
        }
        out.extend_from_slice(line);
    }
    out
}

/// `$ssl_client_escaped_cert`: the PEM, URI-component escaped.
pub fn escaped_pem(cert: &X509) -> Vec<u8> {
    let mut out = Vec::new();
    super::uri::escape_uri_component(&pem(cert), &mut out);
    out
}
