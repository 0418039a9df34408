//! nginx's ngx_crypt: the password hashes an htpasswd file may hold. nginx computes four
//! itself (`{PLAIN}`, `{SHA}`, `{SSHA}` and Apache's `$apr1$`) and hands every other to the C
//! library's crypt(3), which on Debian is libxcrypt (DES, `$1$`, `$5$`, `$6$`, `$2b$`/`$2y$`
//! bcrypt, `$y$` yescrypt...). The appliance does the same, calling the same libxcrypt, so a
//! file nginx accepts is accepted alike.

use std::ffi::{c_char, c_int, c_void, CString};

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use md5::{Digest, Md5};
use sha1::Sha1;

/// `key` (the password, up to its first NUL as nginx reads it) hashed the way `salt` (the
/// stored hash) says; `None` when the C library cannot (an unknown or broken setting, which
/// matches nothing, as libxcrypt's failure token matches nothing in nginx).
pub fn crypt(key: &[u8], salt: &[u8]) -> Option<Vec<u8>> {
    let key = until_nul(key);
    let salt = until_nul(salt);
    if salt.starts_with(b"$apr1$") {
        Some(apr1(key, salt))
    } else if salt.starts_with(b"{PLAIN}") {
        Some([b"{PLAIN}", key].concat())
    } else if salt.starts_with(b"{SSHA}") {
        Some(ssha(key, &salt[b"{SSHA}".len()..]))
    } else if salt.starts_with(b"{SHA}") {
        let digest = Sha1::digest(key);
        Some([b"{SHA}".as_slice(), STANDARD.encode(digest).as_bytes()].concat())
    } else {
        libc_crypt(key, salt)
    }
}

/// Whether `key` hashes to `stored`.
pub fn matches(key: &[u8], stored: &[u8]) -> bool {
    crypt(key, stored).is_some_and(|hashed| hashed == until_nul(stored))
}

fn until_nul(bytes: &[u8]) -> &[u8] {
    bytes.split(|&b| b == 0).next().unwrap_or_default()
}

/// ngx_decode_base64: the standard alphabet, read up to the first `=`, without padding or
/// trailing bits checked.
pub fn decode_base64(text: &[u8]) -> Option<Vec<u8>> {
    const LENIENT: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new()
            .with_decode_allow_trailing_bits(true)
            .with_decode_padding_mode(DecodePaddingMode::RequireNone),
    );
    let end = text.iter().position(|&b| b == b'=').unwrap_or(text.len());
    LENIENT.decode(&text[..end]).ok()
}

/// `{SSHA}`: base64(SHA1(key salt) salt), the salt being what follows the first 20 decoded
/// bytes (none when the stored value decodes to fewer).
fn ssha(key: &[u8], encoded: &[u8]) -> Vec<u8> {
    let decoded = decode_base64(encoded).filter(|d| d.len() >= 20);
    let salt = decoded.as_deref().map_or(&[][..], |d| &d[20..]);
    let mut sha1 = Sha1::new();
    sha1.update(key);
    sha1.update(salt);
    let mut out = sha1.finalize().to_vec();
    out.extend_from_slice(salt);
    [b"{SSHA}".as_slice(), STANDARD.encode(out).as_bytes()].concat()
}

/// Apache's `$apr1$`: Poul-Henning Kamp's MD5 crypt with its own magic, as ngx_crypt_apr1.
fn apr1(key: &[u8], setting: &[u8]) -> Vec<u8> {
    const MAGIC: &[u8] = b"$apr1$";
    let rest = &setting[MAGIC.len()..];
    // The salt: at most 8 characters, up to the next `$`.
    let salt_len = rest.iter().take(8).take_while(|&&b| b != b'$').count();
    let salt = &rest[..salt_len];

    let mut alternate = Md5::new();
    alternate.update(key);
    alternate.update(salt);
    alternate.update(key);
    let alternate = alternate.finalize();

    let mut md5 = Md5::new();
    md5.update(key);
    md5.update(MAGIC);
    md5.update(salt);
    for chunk in (0..key.len()).step_by(16) {
        md5.update(&alternate[..(key.len() - chunk).min(16)]);
    }
    let mut i = key.len();
    while i > 0 {
        // A zero byte (the cleared digest's first) for each set bit, the key's first for
        // each clear one.
        if i & 1 == 1 {
            md5.update([0u8]);
        } else {
            md5.update(&key[..1]);
        }
        i >>= 1;
    }
    let mut digest: [u8; 16] = md5.finalize().into();
    for round in 0..1000 {
        let mut ctx = Md5::new();
        if round & 1 == 1 {
            ctx.update(key);
        } else {
            ctx.update(digest);
        }
        if round % 3 != 0 {
            ctx.update(salt);
        }
        if round % 7 != 0 {
            ctx.update(key);
        }
        if round & 1 == 1 {
            ctx.update(digest);
        } else {
            ctx.update(key);
        }
        digest = ctx.finalize().into();
    }
    let mut out = Vec::with_capacity(MAGIC.len() + salt.len() + 1 + 22);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(salt);
    out.push(b'$');
    let d = |i: usize| u32::from(digest[i]);
    for (a, b, c) in [(0, 6, 12), (1, 7, 13), (2, 8, 14), (3, 9, 15), (4, 10, 5)] {
        to64(&mut out, (d(a) << 16) | (d(b) << 8) | d(c), 4);
    }
    to64(&mut out, d(11), 2);
    out
}

/// crypt(3)'s base-64 digits, least significant first.
fn to64(out: &mut Vec<u8>, mut v: u32, n: usize) {
    const ITOA64: &[u8] = b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    for _ in 0..n {
        out.push(ITOA64[(v & 0x3f) as usize]);
        v >>= 6;
    }
}

#[link(name = "crypt")]
extern "C" {
    /// libxcrypt's reentrant crypt: NULL (rather than a failure token) when it cannot hash.
    fn crypt_rn(
        phrase: *const c_char,
        setting: *const c_char,
        data: *mut c_void,
        size: c_int,
    ) -> *mut c_char;
}

/// The size of libxcrypt's `struct crypt_data`.
const CRYPT_DATA_SIZE: usize = 32768;

/// crypt(3) from the C library, as ngx_libc_crypt calls it.
fn libc_crypt(key: &[u8], salt: &[u8]) -> Option<Vec<u8>> {
    let key = CString::new(key).ok()?;
    let salt = CString::new(salt).ok()?;
    // Zeroed, as crypt_rn wants its scratch space before the first call.
    let mut data = vec![0u8; CRYPT_DATA_SIZE];
    // SAFETY: both strings are NUL-terminated and outlive the call; `data` is writable and
    // as large as the size passed; the result, when not NULL, points into `data` and is
    // copied out before `data` is dropped.
    unsafe {
        let hashed = crypt_rn(
            key.as_ptr(),
            salt.as_ptr(),
            data.as_mut_ptr().cast(),
            CRYPT_DATA_SIZE as c_int,
        );
        if hashed.is_null() {
            return None;
        }
        Some(std::ffi::CStr::from_ptr(hashed).to_bytes().to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hashes of "secret" made by other tools: `openssl passwd -apr1/-1/-5/-6 -salt ...`,
    /// Python's crypt for DES, bcrypt and yescrypt (libxcrypt), and by hand for the rest.
    const STORED: &[&str] = &[
        "{PLAIN}secret",
        "{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=",
        "$apr1$saltsalt$LrttParrLPdxvgutaSXWJ0",
        "$1$saltsalt$9xy1btjgzLYfb7hivXtC//",
        "$5$saltsalt$0IyaXrmV7.sGNS6tirgqHLqX/G.FBvgkYA.lpPdS5sA",
        "$6$saltsalt$TVLlQcbpFVof5W3Yz4DTP6gRstiNuHwwTt6GLc1E5n0U0aDehy0S5knV8wiOQSpT0Y77vwPZN.Pq.H91p5hVO1",
        "saHW9GdxihkGQ",
        "$2b$05$abcdefghijklmnopqrstuuOQiyCxlgf/oeuTqixKmWdcYUh4Hjl0a",
        "$y$j9T$abcdefghijklmnopqrstu.$7uryFExhLbAhrpK1WytVzeNObCUVaK3VoKccP3fJEIB",
    ];

    #[test]
    fn every_kind_of_hash_matches_its_password_only() {
        for stored in STORED {
            assert!(matches(b"secret", stored.as_bytes()), "{stored}");
            assert!(!matches(b"Secret", stored.as_bytes()), "{stored}");
        }
    }

    #[test]
    fn ssha_takes_its_salt_from_the_stored_value() {
        let salt = b"pepper";
        let mut sha1 = Sha1::new();
        sha1.update(b"secret");
        sha1.update(salt);
        let mut raw = sha1.finalize().to_vec();
        raw.extend_from_slice(salt);
        let stored = format!("{{SSHA}}{}", STANDARD.encode(raw));
        assert!(matches(b"secret", stored.as_bytes()));
        assert!(!matches(b"secrets", stored.as_bytes()));
    }

    #[test]
    fn a_setting_the_library_cannot_use_matches_nothing() {
        assert!(!matches(b"secret", b"$9$nonsense"));
        assert!(!matches(b"", b""));
    }

    #[test]
    fn base64_is_read_as_nginx_reads_it() {
        assert_eq!(decode_base64(b"dTpw").unwrap(), b"u:p");
        assert_eq!(decode_base64(b"dTpwYQ==").unwrap(), b"u:pa");
        assert_eq!(decode_base64(b"dTpwYQ").unwrap(), b"u:pa");
        assert_eq!(decode_base64(b"dTpwYQ=garbage").unwrap(), b"u:pa");
        assert!(decode_base64(b"dTp!").is_none());
        assert!(decode_base64(b"dTpwY").is_none());
    }
}
