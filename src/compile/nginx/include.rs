//! Where nginx finds a file named in the configuration (`ngx_conf_full_name`) and how an
//! `include` glob expands (`ngx_conf_include`, `ngx_open_glob`).
//!
//! Paths are bytes, as they are to nginx: a name is taken up to its first NUL byte (nginx copies
//! it as a C string), a relative name is the configuration prefix followed by the name, and a
//! name with `*`, `?` or `[` anywhere in the full path is a glob. Globs go to the C library's
//! glob(3) with no flags, exactly as nginx calls it: no brace expansion, wildcards do not match
//! a leading dot, backslash escapes, and the matches come back sorted by strcmp (this process
//! never sets a collation locale, and neither does nginx).

use std::ffi::{CStr, CString, OsStr};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// A name as C sees it: up to the first NUL.
pub fn c_bytes(name: &[u8]) -> &[u8] {
    name.split(|&b| b == 0).next().unwrap_or(name)
}

/// ngx_get_full_name: absolute names stay, others go after the prefix (which ends in `/`, or
/// is empty for the working directory).
pub fn full_name(prefix: &[u8], name: &[u8]) -> Vec<u8> {
    let name = c_bytes(name);
    if name.first() == Some(&b'/') {
        return name.to_vec();
    }
    let mut full = Vec::with_capacity(prefix.len() + name.len());
    full.extend_from_slice(prefix);
    full.extend_from_slice(name);
    full
}

/// The prefix form nginx keeps: the directory with a trailing `/` (empty stays empty).
pub fn as_prefix(dir: &[u8]) -> Vec<u8> {
    let mut p = dir.to_vec();
    if !p.is_empty() && p.last() != Some(&b'/') {
        p.push(b'/');
    }
    p
}

/// nginx's configuration prefix for a main file: everything up to its last `/` (one at the very
/// start does not count), else `fallback`.
pub fn conf_prefix_of(conf_file: &[u8], fallback: &[u8]) -> Vec<u8> {
    match conf_file.iter().rposition(|&b| b == b'/') {
        Some(i) if i > 0 => conf_file[..=i].to_vec(),
        _ => fallback.to_vec(),
    }
}

/// strpbrk(file, "*?["): whether `include` treats the name as a glob.
pub fn is_glob(full: &[u8]) -> bool {
    full.iter().any(|b| matches!(b, b'*' | b'?' | b'['))
}

pub fn to_path(bytes: &[u8]) -> PathBuf {
    PathBuf::from(OsStr::from_bytes(bytes))
}

pub fn path_bytes(path: &Path) -> &[u8] {
    path.as_os_str().as_bytes()
}

/// The files a glob matches, in glob(3)'s order; matching nothing is not an error (nginx passes
/// test=1). None when glob(3) fails (a directory it cannot read with GLOB_ERR semantics, no
/// memory): nginx's message then takes errno, which glob(3) does not define.
pub fn expand(pattern: &[u8]) -> Option<Vec<Vec<u8>>> {
    let pattern = CString::new(c_bytes(pattern)).ok()?;
    // SAFETY: glob_t is a plain C struct for which all-zero is the documented initial state;
    // glob() fills it and globfree() releases it exactly once, on every path out. The strings
    // in gl_pathv are NUL-terminated and live until globfree, and are copied before it.
    unsafe {
        let mut found: libc::glob_t = std::mem::zeroed();
        let rc = libc::glob(pattern.as_ptr(), 0, None, &mut found);
        let result = match rc {
            0 => {
                let mut names = Vec::with_capacity(found.gl_pathc);
                for i in 0..found.gl_pathc {
                    let p = *found.gl_pathv.add(i);
                    if !p.is_null() {
                        names.push(CStr::from_ptr(p).to_bytes().to_vec());
                    }
                }
                Some(names)
            }
            libc::GLOB_NOMATCH => Some(Vec::new()),
            _ => None,
        };
        libc::globfree(&mut found);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_resolve_like_nginx() {
        assert_eq!(
            full_name(b"/etc/nginx/", b"mime.types"),
            b"/etc/nginx/mime.types"
        );
        assert_eq!(full_name(b"/etc/nginx/", b"/abs/x.conf"), b"/abs/x.conf");
        assert_eq!(full_name(b"", b"x.conf"), b"x.conf");
        assert_eq!(full_name(b"/p/", b"a\0b"), b"/p/a", "C string");
        assert_eq!(
            conf_prefix_of(b"/etc/nginx/nginx.conf", b"/x/"),
            b"/etc/nginx/"
        );
        assert_eq!(conf_prefix_of(b"/nginx.conf", b"/x/"), b"/x/");
        assert_eq!(conf_prefix_of(b"nginx.conf", b""), b"");
        assert_eq!(as_prefix(b"/a"), b"/a/");
        assert!(is_glob(b"/etc/nginx/conf.d/*.conf"));
        assert!(is_glob(b"/a[/b"));
        assert!(!is_glob(b"/etc/nginx/{a,b}.conf"), "no braces");
    }

    #[test]
    fn globs_sort_bytewise_and_skip_dotfiles() {
        let dir = std::env::temp_dir().join(format!("appliance-glob-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for f in ["b.conf", "a.conf", "B.conf", ".hidden.conf", "a-b.conf"] {
            std::fs::write(dir.join(f), "").unwrap();
        }
        let pattern = [path_bytes(&dir), b"/*.conf"].concat();
        let names: Vec<String> = expand(&pattern)
            .unwrap()
            .iter()
            .map(|n| String::from_utf8_lossy(&n[path_bytes(&dir).len() + 1..]).into_owned())
            .collect();
        assert_eq!(names, ["B.conf", "a-b.conf", "a.conf", "b.conf"]);
        let none = [path_bytes(&dir), b"/*.nothing"].concat();
        assert_eq!(expand(&none), Some(vec![]));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
