//! A set of header names looked up for every header of every response (`proxy_hide_header`).
//!
//! Most names asked about are not in the set. A mask of the lengths of the names it holds
//! answers those without lowercasing or hashing the name: nginx's default hidden headers are
//! 4 to 18 bytes long, and `Content-Type`, `Content-Length`, `Connection`, `Cache-Control` and
//! the like are of other lengths.

/// Lowercase header names.
#[derive(Debug, Default)]
pub struct HeaderNames {
    /// The names, hashed fast: they come from the config, so no client can fill the set with
    /// colliding keys.
    names: foldhash::HashSet<String>,
    /// Bit `n` is set when a name of `n` bytes is in the set; bit 63, for any of 63 or more.
    lengths: u64,
}

impl HeaderNames {
    pub fn new(names: impl IntoIterator<Item = String>) -> HeaderNames {
        let names: foldhash::HashSet<String> =
            names.into_iter().map(|n| n.to_ascii_lowercase()).collect();
        let lengths = names.iter().fold(0, |mask, n| mask | length_bit(n.len()));
        HeaderNames { names, lengths }
    }

    /// Whether `lower`, a lowercase name, is in the set.
    pub fn contains(&self, lower: &str) -> bool {
        self.lengths & length_bit(lower.len()) != 0 && self.names.contains(lower)
    }

    /// Whether `name`, in any case, is in the set.
    pub fn contains_any_case(&self, name: &[u8]) -> bool {
        if self.lengths & length_bit(name.len()) == 0 {
            return false;
        }
        let mut buf = [0u8; 64];
        if name.len() <= buf.len() {
            let lower = &mut buf[..name.len()];
            lower.copy_from_slice(name);
            lower.make_ascii_lowercase();
            return std::str::from_utf8(lower).is_ok_and(|l| self.names.contains(l));
        }
        self.names
            .contains(&String::from_utf8_lossy(name).to_ascii_lowercase())
    }
}

fn length_bit(len: usize) -> u64 {
    1 << len.min(63)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_in_any_case_and_others_do_not() {
        let long = "x-".repeat(40);
        let set = HeaderNames::new(["Date".to_string(), "x-accel-expires".into(), long.clone()]);
        assert!(set.contains("date") && set.contains("x-accel-expires") && set.contains(&long));
        assert!(!set.contains("Date"), "`contains` takes lowercase");
        assert!(set.contains_any_case(b"DATE") && set.contains_any_case(b"X-Accel-Expires"));
        assert!(set.contains_any_case(long.to_uppercase().as_bytes()));
        // Same length, other name; other lengths.
        assert!(!set.contains_any_case(b"dato") && !set.contains_any_case(b"content-type"));
        assert!(!set.contains_any_case(&b"x-".repeat(41)));
        assert!(!HeaderNames::default().contains("date"));
    }
}
