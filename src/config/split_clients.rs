//! nginx's `split_clients`: a variable that puts each client in one of several buckets by a
//! hash of a key, in set proportions. It is how nginx configs send a share of the traffic to
//! a canary pool (`proxy_pass http://$pool`):
//!
//! ```toml
//! [[http.split_clients]]
//! source = "${remote_addr}AAA"
//! variable = "variant"
//! parts = [
//!     { percent = "0.5%", value = ".one" },
//!     { percent = "2%", value = ".two" },
//!     { percent = "*", value = "" },
//! ]
//! ```
//!
//! As ngx_http_split_clients_module: the key is hashed with MurmurHash2 (seed 0), and the
//! parts, in the order written, take consecutive shares of the 32-bit hash space; `*` takes
//! the rest. Percentages have at most two decimals and may add up to 100% at most; a hash past
//! every part (when they add up to less and there is no `*`) gives the empty value. Values are
//! literal text, not templates.

use serde::{Deserialize, Serialize};

use super::origin::Origin;

/// One `split_clients` block.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplitClients {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<Origin>,
    /// What is hashed: a template.
    pub source: String,
    /// The variable defined, without its `$`.
    pub variable: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parts: Vec<SplitPart>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplitPart {
    /// `"12.5%"`, or `"*"` for whatever the parts before leave.
    pub percent: String,
    pub value: String,
}

/// A part that went wrong: its index and nginx's message.
pub type SplitError = (Option<usize>, String);

impl SplitClients {
    /// Each part's upper bound in the hash space (exclusive; `None` for `*`, which takes any
    /// hash), in order, as ngx_conf_split_clients_block computes them.
    pub fn bounds(&self) -> Result<Vec<Option<u32>>, SplitError> {
        let mut sum: u32 = 0;
        let mut last: u32 = 0;
        let mut bounds = Vec::with_capacity(self.parts.len());
        for (i, part) in self.parts.iter().enumerate() {
            let Some(hundredths) = hundredths_of_percent(&part.percent) else {
                return Err((
                    Some(i),
                    format!("invalid percent value \"{}\"", part.percent),
                ));
            };
            // 0 is `*` (or a share that wrapped to 0 in nginx's 32 bits, which it reads alike).
            sum = if hundredths == 0 {
                10_000
            } else {
                sum.wrapping_add(hundredths)
            };
            if sum > 10_000 {
                return Err((None, "percent total is greater than 100%".to_string()));
            }
            if hundredths == 0 {
                bounds.push(None);
            } else {
                // nginx's arithmetic: a 32-bit running total of each share of 0xffffffff.
                last = last.wrapping_add((u64::from(hundredths) * 0xffff_ffff / 10_000) as u32);
                bounds.push(Some(last));
            }
        }
        Ok(bounds)
    }
}

/// `"12.5%"` as 1250, `"*"` as 0; `None` for what nginx refuses (no `%`, more than two
/// decimals, zero, not a number): ngx_atofp with two decimals, kept in 32 bits as nginx keeps
/// it.
fn hundredths_of_percent(text: &str) -> Option<u32> {
    if text == "*" {
        return Some(0);
    }
    let number = text.strip_suffix('%')?;
    let (whole, fraction) = match number.split_once('.') {
        Some((whole, fraction)) => (whole, fraction),
        None => (number, ""),
    };
    if fraction.len() > 2
        || fraction.contains('.')
        || !whole
            .bytes()
            .chain(fraction.bytes())
            .all(|b| b.is_ascii_digit())
        || whole.len() + fraction.len() == 0
    {
        return None;
    }
    let mut value: u64 = 0;
    for b in whole.bytes().chain(fraction.bytes()) {
        value = value.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
        if value > i64::MAX as u64 {
            return None;
        }
    }
    value = value.checked_mul(10u64.pow(2 - fraction.len() as u32))?;
    if value == 0 {
        return None;
    }
    Some(value as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(parts: &[(&str, &str)]) -> SplitClients {
        SplitClients {
            origin: None,
            source: "$remote_addr".into(),
            variable: "v".into(),
            parts: parts
                .iter()
                .map(|(p, v)| SplitPart {
                    percent: p.to_string(),
                    value: v.to_string(),
                })
                .collect(),
        }
    }

    #[test]
    fn percentages_read_as_nginx_reads_them() {
        assert_eq!(hundredths_of_percent("0.5%"), Some(50));
        assert_eq!(hundredths_of_percent("10%"), Some(1000));
        assert_eq!(hundredths_of_percent("12.25%"), Some(1225));
        assert_eq!(hundredths_of_percent(".5%"), Some(50));
        assert_eq!(hundredths_of_percent("5.%"), Some(500));
        assert_eq!(hundredths_of_percent("*"), Some(0));
        for bad in ["0%", "10", "1.234%", "x%", "%", "1.2.3%", "-1%", "0.00%"] {
            assert_eq!(hundredths_of_percent(bad), None, "{bad}");
        }
    }

    #[test]
    fn bounds_accumulate_and_the_total_is_capped() {
        let bounds = split(&[("50%", "a"), ("*", "b")]).bounds().unwrap();
        assert_eq!(bounds, vec![Some(0x7fff_ffff), None]);
        let bounds = split(&[("25%", "a"), ("25%", "b")]).bounds().unwrap();
        assert_eq!(bounds, vec![Some(1_073_741_823), Some(2_147_483_646)]);
        assert_eq!(
            split(&[("60%", "a"), ("50%", "b")]).bounds().unwrap_err().1,
            "percent total is greater than 100%"
        );
        assert_eq!(
            split(&[("*", "a"), ("1%", "b")]).bounds().unwrap_err().1,
            "percent total is greater than 100%"
        );
        assert_eq!(
            split(&[("1%", "a"), ("x", "b")]).bounds().unwrap_err(),
            (Some(1), "invalid percent value \"x\"".to_string())
        );
    }
}
