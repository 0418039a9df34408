//! TLS termination and the TLS side of proxying, on the system's OpenSSL as nginx uses it.
//!
//! - [`ServerKeys`]: a server's certificate and key pairs, read and checked (readable, valid PEM,
//!   key matching certificate) when a config is built, so a bad file is a config error that names
//!   it and the line of its directive, never a failed handshake later;
//! - [`acceptor`]: an OpenSSL acceptor per listening socket from `ssl_protocols`,
//!   `ssl_ciphers`, `ssl_prefer_server_ciphers`, `ssl_session_timeout` and `http2`;
//! - [`accept`]: one handshake, whose certificate is chosen by SNI among the servers of the
//!   address the connection arrived on, as nginx's servername callback does;
//! - [`load_ca`]: `proxy_ssl_trusted_certificate` for re-encryption to backends.
//!
//! As in nginx, the protocols and ciphers of a handshake are those of the address's default
//! server: SNI selects the certificate only.

use std::any::Any;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::listeners::TlsAccept;
use pingora::protocols::l4::stream::Stream as L4Stream;
use pingora::protocols::tls::server::handshake_with_callback;
use pingora::protocols::tls::SslStream;
use pingora::protocols::tls::TlsRef;
use pingora::tls::pkey::{PKey, Private};
use pingora::tls::ssl::{
    select_next_proto, AlpnError, NameType, SslAcceptor, SslMethod, SslOptions, SslVersion,
};
use pingora::tls::x509::X509;

use super::client_cert::{ClientCertificate, ClientVerification};
use crate::compile::diag::Diagnostic;
use crate::config::{Certificate, Origin, Tls, TlsVersion};

/// nginx's `ssl_ciphers` default.
pub const DEFAULT_CIPHERS: &str = "HIGH:!aNULL:!MD5";
/// The appliance's default protocols: TLS 1.2 and 1.3 (nginx 1.22 also enables 1.0 and 1.1).
pub const DEFAULT_PROTOCOLS: [TlsVersion; 2] = [TlsVersion::Tls12, TlsVersion::Tls13];
/// nginx's `ssl_session_timeout` default.
const DEFAULT_SESSION_TIMEOUT: Duration = Duration::from_secs(300);
/// How long a client may take over its handshake (nginx: `client_header_timeout`, 60s).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(60);

/// One certificate chain (leaf first) and its private key.
pub struct CertifiedKey {
    chain: Vec<X509>,
    key: PKey<Private>,
}

/// The certificate pairs of one server; several when it has, say, an RSA and an ECDSA
/// certificate, and OpenSSL picks the one the client's algorithms allow. With them, what the
/// server asks of clients' certificates (`ssl_verify_client`).
pub struct ServerKeys {
    pairs: Vec<CertifiedKey>,
    pub client_verification: Option<ClientVerification>,
}

impl ServerKeys {
    /// Reads and checks every pair. Errors name the file and point at the directive (or at
    /// `fallback`, the server, when the pair has no origin of its own).
    pub fn load(
        certificates: &[Certificate],
        fallback: Option<&Origin>,
    ) -> Result<ServerKeys, Diagnostic> {
        let pairs = certificates
            .iter()
            .map(|c| {
                load_pair(c).map_err(|e| {
                    if e.origin.is_none() {
                        e.at_opt(fallback)
                    } else {
                        e
                    }
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ServerKeys {
            pairs,
            client_verification: None,
        })
    }

    /// The same keys, asking clients for certificates as `verification` says.
    pub fn verifying_clients(self, verification: Option<ClientVerification>) -> ServerKeys {
        ServerKeys {
            client_verification: verification,
            ..self
        }
    }

    /// Puts the pairs on one connection, from the certificate callback.
    fn install(&self, ssl: &mut TlsRef) {
        use pingora::tls::ext::{ssl_add_chain_cert, ssl_use_certificate, ssl_use_private_key};
        for pair in &self.pairs {
            let Some(leaf) = pair.chain.first() else {
                continue;
            };
            // The chain goes with the certificate used last, so each pair is installed whole.
            let installed = ssl_use_certificate(ssl, leaf)
                .and_then(|()| ssl_use_private_key(ssl, &pair.key))
                .and_then(|()| {
                    pair.chain[1..]
                        .iter()
                        .try_for_each(|c| ssl_add_chain_cert(ssl, c))
                });
            if let Err(e) = installed {
                tracing::error!("cannot use a certificate for a handshake: {e}");
            }
        }
        if let Some(verification) = &self.client_verification {
            verification.apply(ssl);
        }
    }
}

fn read_file(path: &Path, what: &str, origin: Option<&Origin>) -> Result<Vec<u8>, Diagnostic> {
    std::fs::read(path).map_err(|e| {
        Diagnostic::error(format!("cannot load {what} \"{}\": {e}", path.display())).at_opt(origin)
    })
}

fn load_pair(c: &Certificate) -> Result<CertifiedKey, Diagnostic> {
    let at = c.origin.as_ref();
    let cert_path = c.certificate.display();
    let key_path = c.key.display();
    let pem = read_file(&c.certificate, "certificate", at)?;
    let chain = X509::stack_from_pem(&pem).map_err(|e| {
        Diagnostic::error(format!(
            "cannot load certificate \"{cert_path}\": not a PEM certificate ({e})"
        ))
        .at_opt(at)
    })?;
    let mut chain = chain;
    if let Some(path) = &c.chain {
        let pem = read_file(path, "certificate chain", at)?;
        let intermediates = X509::stack_from_pem(&pem).map_err(|e| {
            Diagnostic::error(format!(
                "cannot load certificate chain \"{}\": not PEM ({e})",
                path.display()
            ))
            .at_opt(at)
        })?;
        chain.extend(intermediates);
    }
    let Some(leaf) = chain.first() else {
        return Err(Diagnostic::error(format!(
            "cannot load certificate \"{cert_path}\": the file holds no PEM certificate"
        ))
        .at_opt(at));
    };
    let pem = read_file(&c.key, "certificate key", at)?;
    let key = PKey::private_key_from_pem(&pem).map_err(|e| {
        Diagnostic::error(format!(
            "cannot load certificate key \"{key_path}\": not an unencrypted PEM private key ({e})"
        ))
        .at_opt(at)
    })?;
    let public = leaf.public_key().map_err(|e| {
        Diagnostic::error(format!(
            "cannot load certificate \"{cert_path}\": its public key is unreadable ({e})"
        ))
        .at_opt(at)
    })?;
    if !public.public_eq(&key) {
        return Err(Diagnostic::error(format!(
            "certificate \"{cert_path}\" and key \"{key_path}\" do not match (key values mismatch)"
        ))
        .at_opt(at));
    }
    Ok(CertifiedKey { chain, key })
}

/// Reads a CA bundle (`proxy_ssl_trusted_certificate`).
pub fn load_ca(path: &Path, origin: Option<&Origin>) -> Result<Arc<Box<[X509]>>, Diagnostic> {
    let certs = load_cas(path, "trusted certificate", origin)?;
    Ok(Arc::new(certs.into_boxed_slice()))
}

/// The PEM certificates of a CA file, for `what` (`trusted certificate`): at least one.
pub fn load_cas(path: &Path, what: &str, origin: Option<&Origin>) -> Result<Vec<X509>, Diagnostic> {
    let pem = read_file(path, what, origin)?;
    let certs = X509::stack_from_pem(&pem).map_err(|e| {
        Diagnostic::error(format!(
            "cannot load {what} \"{}\": not PEM ({e})",
            path.display()
        ))
        .at_opt(origin)
    })?;
    if certs.is_empty() {
        return Err(Diagnostic::error(format!(
            "cannot load {what} \"{}\": the file holds no PEM certificate",
            path.display()
        ))
        .at_opt(origin));
    }
    Ok(certs)
}

fn openssl_version(v: TlsVersion) -> (SslVersion, SslOptions) {
    match v {
        TlsVersion::Tls10 => (SslVersion::TLS1, SslOptions::NO_TLSV1),
        TlsVersion::Tls11 => (SslVersion::TLS1_1, SslOptions::NO_TLSV1_1),
        TlsVersion::Tls12 => (SslVersion::TLS1_2, SslOptions::NO_TLSV1_2),
        TlsVersion::Tls13 => (SslVersion::TLS1_3, SslOptions::NO_TLSV1_3),
    }
}

/// `ssl_ciphers` split for OpenSSL: TLS 1.3 suite names (`TLS_AES_128_GCM_SHA256`) go to the
/// 1.3 list, everything else to the classic cipher string. nginx 1.22 passes the whole string
/// to the classic list, where 1.3 names are ignored; accepting them here is an extension.
fn split_ciphers(ciphers: &str) -> (String, String) {
    let (tls13, classic): (Vec<&str>, Vec<&str>) = ciphers
        .split(':')
        .filter(|c| !c.is_empty())
        .partition(|c| c.starts_with("TLS_"));
    (classic.join(":"), tls13.join(":"))
}

/// The acceptor of one listening socket, from the TLS settings of its default server.
/// `http2`: `None` for a stream listener (no ALPN), else whether ALPN may choose `h2`.
pub fn acceptor(
    tls: &Tls,
    http2: Option<bool>,
    origin: Option<&Origin>,
) -> Result<SslAcceptor, Diagnostic> {
    let fail = |what: &str, e: &dyn std::fmt::Display| {
        Diagnostic::error(format!("TLS settings: {what}: {e}")).at_opt(origin)
    };
    let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server())
        .map_err(|e| fail("cannot create an OpenSSL context", &e))?;

    let protocols = tls.protocols.as_deref().unwrap_or(&DEFAULT_PROTOCOLS);
    let (Some(low), Some(high)) = (protocols.iter().min(), protocols.iter().max()) else {
        return Err(Diagnostic::error("ssl_protocols lists no protocol").at_opt(origin));
    };
    b.clear_options(
        SslOptions::NO_TLSV1
            | SslOptions::NO_TLSV1_1
            | SslOptions::NO_TLSV1_2
            | SslOptions::NO_TLSV1_3,
    );
    b.set_min_proto_version(Some(openssl_version(*low).0))
        .map_err(|e| fail("ssl_protocols", &e))?;
    b.set_max_proto_version(Some(openssl_version(*high).0))
        .map_err(|e| fail("ssl_protocols", &e))?;
    // A gap in the list (TLSv1 TLSv1.2) disables the versions between.
    for v in [
        TlsVersion::Tls10,
        TlsVersion::Tls11,
        TlsVersion::Tls12,
        TlsVersion::Tls13,
    ] {
        if v > *low && v < *high && !protocols.contains(&v) {
            b.set_options(openssl_version(v).1);
        }
    }

    let (classic, tls13) = split_ciphers(tls.ciphers.as_deref().unwrap_or(DEFAULT_CIPHERS));
    if !classic.is_empty() {
        b.set_cipher_list(&classic)
            .map_err(|e| fail(&format!("ssl_ciphers \"{classic}\""), &e))?;
    }
    if !tls13.is_empty() {
        b.set_ciphersuites(&tls13)
            .map_err(|e| fail(&format!("ssl_ciphers \"{tls13}\""), &e))?;
    }
    if tls.prefer_server_ciphers == Some(true) {
        b.set_options(SslOptions::CIPHER_SERVER_PREFERENCE);
    } else {
        b.clear_options(SslOptions::CIPHER_SERVER_PREFERENCE);
    }
    let timeout = tls
        .session_timeout
        .map_or(DEFAULT_SESSION_TIMEOUT, |d| d.get());
    set_session_timeout(&mut b, timeout);

    if let Some(http2) = http2 {
        let preference: &'static [u8] = if http2 {
            b"\x02h2\x08http/1.1"
        } else {
            b"\x08http/1.1"
        };
        b.set_alpn_select_callback(move |_, offered| {
            select_next_proto(preference, offered).ok_or(AlpnError::NOACK)
        });
    }
    Ok(b.build())
}

/// `SSL_CTX_set_timeout`: the rust binding does not expose it; libssl is linked already.
fn set_session_timeout(b: &mut pingora::tls::ssl::SslAcceptorBuilder, timeout: Duration) {
    extern "C" {
        fn SSL_CTX_set_timeout(
            ctx: *mut pingora::tls::ssl_sys::SSL_CTX,
            seconds: std::ffi::c_long,
        ) -> std::ffi::c_long;
    }
    let seconds = std::ffi::c_long::try_from(timeout.as_secs()).unwrap_or(std::ffi::c_long::MAX);
    // Safety: the pointer is the live context the builder owns; the call only stores a number.
    unsafe {
        SSL_CTX_set_timeout(b.as_ptr(), seconds);
    }
}

/// What a handshake leaves in the connection's TLS digest: the name the client asked for
/// (SNI, `$ssl_server_name`) and, when the server asked for one, the client's certificate.
#[derive(Debug, Clone)]
pub struct Handshaken {
    pub server_name: Option<String>,
    pub client_certificate: Option<Arc<ClientCertificate>>,
}

/// Picks the certificates of a handshake from the SNI name (lowercased), or `None` without SNI.
pub type PickKeys = Box<dyn Fn(Option<&str>) -> Option<Arc<ServerKeys>> + Send + Sync>;

struct Handshake {
    pick: PickKeys,
}

#[async_trait]
impl TlsAccept for Handshake {
    async fn certificate_callback(&self, ssl: &mut TlsRef) {
        let name = ssl
            .servername(NameType::HOST_NAME)
            .map(|n| n.trim_end_matches('.').to_ascii_lowercase());
        if let Some(keys) = (self.pick)(name.as_deref()) {
            keys.install(ssl);
        }
    }

    async fn handshake_complete_callback(
        &self,
        ssl: &TlsRef,
    ) -> Option<Arc<dyn Any + Send + Sync>> {
        let handshaken = Handshaken {
            server_name: ssl.servername(NameType::HOST_NAME).map(str::to_string),
            client_certificate: ClientCertificate::of(ssl).map(Arc::new),
        };
        Some(Arc::new(handshaken))
    }
}

/// Runs the server side of a handshake on an accepted connection, within [`HANDSHAKE_TIMEOUT`].
pub async fn accept(
    acceptor: &SslAcceptor,
    stream: L4Stream,
    pick: PickKeys,
) -> pingora::Result<SslStream<L4Stream>> {
    accept_within(acceptor, stream, pick, HANDSHAKE_TIMEOUT).await
}

/// [`accept`] within `limit` (a stream server's `ssl_handshake_timeout`).
pub async fn accept_within(
    acceptor: &SslAcceptor,
    stream: L4Stream,
    pick: PickKeys,
    limit: Duration,
) -> pingora::Result<SslStream<L4Stream>> {
    let callbacks = Handshake { pick };
    match tokio::time::timeout(limit, handshake_with_callback(acceptor, stream, &callbacks)).await {
        Ok(result) => result,
        Err(_) => pingora::Error::e_explain(
            pingora::ErrorType::TLSHandshakeTimedout,
            "the client did not finish its TLS handshake in time",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls13_suites_are_split_from_the_cipher_string() {
        let (classic, tls13) =
            split_ciphers("ECDHE-RSA-AES128-GCM-SHA256:TLS_AES_128_GCM_SHA256:HIGH");
        assert_eq!(classic, "ECDHE-RSA-AES128-GCM-SHA256:HIGH");
        assert_eq!(tls13, "TLS_AES_128_GCM_SHA256");
    }

    #[test]
    fn missing_files_are_named() {
        let c = Certificate {
            certificate: "/nonexistent/cert.pem".into(),
            key: "/nonexistent/key.pem".into(),
            chain: None,
            origin: Some(Origin::new("nginx.conf", 12, 5)),
        };
        let e = ServerKeys::load(&[c], None)
            .err()
            .expect("a missing file is an error");
        let line = e.one_line("appliance");
        assert!(line.contains("\"/nonexistent/cert.pem\""), "{line}");
        assert!(line.ends_with("in nginx.conf:12"), "{line}");
    }

    #[test]
    fn bad_cipher_lists_are_config_errors() {
        let tls = Tls {
            ciphers: Some("NOT-A-CIPHER".into()),
            ..Tls::default()
        };
        assert!(acceptor(&tls, Some(false), None).is_err());
        assert!(acceptor(&Tls::default(), Some(true), None).is_ok());
    }
}
