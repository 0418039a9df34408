//! nginx's `geo`: a variable whose value depends on the client's address, looked up in a table
//! of networks. Configs use it to route or refuse by address (`geo $internal { default 0;
//! 10.0.0.0/8 1; }` and then `if ($internal)` or a `map` on it):
//!
//! ```toml
//! [[http.geo]]
//! variable = "internal"
//! entries = [
//!     { network = "default", value = "0" },
//!     { network = "10.0.0.0/8", value = "1" },
//!     { network = "10.9.0.0/16", delete = true },
//! ]
//! ```
//!
//! As ngx_http_geo_module:
//! - The address is the client's (after realip), or `source` evaluated and read as an address
//!   (255.255.255.255 when it is not one). With `proxies`, a client among them is replaced by
//!   the rightmost address of `X-Forwarded-For` (with `proxy_recursive`, the rightmost one not
//!   among them), as realip does.
//! - Networks are CIDR blocks or addresses, and `default` (0.0.0.0/0 and ::/0). The longest
//!   block holding the address gives the value; a block given twice keeps the later value;
//!   `delete` takes a block out again. IPv4-mapped IPv6 addresses are looked up as IPv4.
//! - With `ranges`, networks are IPv4 ranges `a.b.c.d-e.f.g.h` instead, which may nest but not
//!   overlap, and only IPv4 addresses match (any other is looked up as 255.255.255.255).
//! - Values are literal text, not templates; an address nothing holds gives the empty value.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};

use serde::{Deserialize, Serialize};

use super::origin::Origin;

/// One `geo` block.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GeoVar {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<Origin>,
    /// What gives the address, a template (`$arg_ip`); the client's address when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The variable defined, without its `$`.
    pub variable: String,
    /// Networks are IPv4 ranges (`ranges`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ranges: bool,
    /// Trusted proxies (`proxy`): addresses or CIDR blocks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub proxies: Vec<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub proxy_recursive: bool,
    /// In the order written: later entries replace and delete earlier ones.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub entries: Vec<GeoEntry>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GeoEntry {
    /// A CIDR block, an address or `default`; with `ranges`, `a.b.c.d-e.f.g.h` or `default`.
    pub network: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub value: String,
    /// Takes the network out instead (nginx's `delete`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub delete: bool,
}

/// What a geo block's entries build: each address's value.
#[derive(Clone, Debug)]
pub struct GeoTable {
    values: Vec<String>,
    kind: Kind,
}

#[derive(Clone, Debug)]
enum Kind {
    Networks {
        v4: Prefixes<u32>,
        v6: Prefixes<u128>,
    },
    Ranges {
        /// By the high 16 bits of the address: sorted, disjoint (low start, low end, value).
        blocks: HashMap<u16, Vec<(u16, u16, usize)>>,
        default: Option<usize>,
    },
}

/// Networks by prefix length, for a longest-prefix match.
#[derive(Clone, Debug)]
struct Prefixes<T> {
    by_length: Vec<HashMap<T, usize>>,
}

/// The entry that went wrong (`None`: the block) and nginx's message.
pub type GeoError = (Option<usize>, String);

/// What nginx warns about while it builds the table: the entry and its message.
pub type GeoWarning = (usize, String);

/// A network as `proxy` and the entries take it (ngx_http_geo_cidr_value): a CIDR block or an
/// address, its low bits cleared (true when some were set).
pub fn parse_network(text: &str) -> Result<(ipnet::IpNet, bool), String> {
    let invalid = || format!("invalid network \"{text}\"");
    let net = match text.split_once('/') {
        None => ipnet::IpNet::from(text.parse::<IpAddr>().map_err(|_| invalid())?),
        Some((addr, len)) => {
            let addr: IpAddr = addr.parse().map_err(|_| invalid())?;
            if len.is_empty() || !len.bytes().all(|b| b.is_ascii_digit()) {
                return Err(invalid());
            }
            let len: u8 = len.parse().map_err(|_| invalid())?;
            ipnet::IpNet::new(addr, len).map_err(|_| invalid())?
        }
    };
    let trunc = net.trunc();
    Ok((trunc, trunc != net))
}

impl GeoVar {
    /// Builds the table as nginx builds it while it reads the block, with its warnings.
    pub fn table(&self) -> Result<(GeoTable, Vec<GeoWarning>), GeoError> {
        for proxy in &self.proxies {
            parse_network(proxy).map_err(|e| (None, e))?;
        }
        let mut builder = Builder::default();
        for (i, entry) in self.entries.iter().enumerate() {
            if self.ranges {
                builder.range(i, entry)?;
            } else {
                builder.network(i, entry)?;
            }
        }
        let Builder {
            values,
            v4,
            v6,
            blocks,
            default,
            warnings,
        } = builder;
        let kind = if self.ranges {
            let blocks = blocks
                .into_iter()
                .filter(|(_, list)| !list.is_empty())
                .collect();
            Kind::Ranges { blocks, default }
        } else {
            Kind::Networks {
                v4: Prefixes::new(v4),
                v6: Prefixes::new(v6),
            }
        };
        Ok((GeoTable { values, kind }, warnings))
    }

    /// The trusted proxies, parsed.
    pub fn proxy_networks(&self) -> Vec<ipnet::IpNet> {
        self.proxies
            .iter()
            .filter_map(|p| parse_network(p).ok().map(|(net, _)| net))
            .collect()
    }
}

#[derive(Default)]
struct Builder {
    values: Vec<String>,
    v4: HashMap<(u32, u8), usize>,
    v6: HashMap<(u128, u8), usize>,
    blocks: HashMap<u16, Vec<(u16, u16, usize)>>,
    default: Option<usize>,
    warnings: Vec<GeoWarning>,
}

impl Builder {
    fn value(&mut self, text: &str) -> usize {
        match self.values.iter().position(|v| v == text) {
            Some(index) => index,
            None => {
                self.values.push(text.to_string());
                self.values.len() - 1
            }
        }
    }

    /// A network entry (ngx_http_geo_cidr).
    fn network(&mut self, i: usize, entry: &GeoEntry) -> Result<(), GeoError> {
        let nets = if entry.network == "default" && !entry.delete {
            vec![
                "0.0.0.0/0"
                    .parse::<ipnet::IpNet>()
                    .map_err(|e| (Some(i), e.to_string()))?,
                "::/0"
                    .parse::<ipnet::IpNet>()
                    .map_err(|e| (Some(i), e.to_string()))?,
            ]
        } else {
            let (net, low_bits) = parse_network(&entry.network).map_err(|e| (Some(i), e))?;
            if low_bits {
                self.warnings.push((
                    i,
                    format!("low address bits of {} are meaningless", entry.network),
                ));
            }
            vec![net]
        };
        for net in nets {
            let key = |net: &ipnet::IpNet| match net {
                ipnet::IpNet::V4(n) => Key::V4((u32::from(n.network()), n.prefix_len())),
                ipnet::IpNet::V6(n) => Key::V6((u128::from(n.network()), n.prefix_len())),
            };
            if entry.delete {
                let removed = match key(&net) {
                    Key::V4(k) => self.v4.remove(&k),
                    Key::V6(k) => self.v6.remove(&k),
                };
                if removed.is_none() {
                    self.warnings
                        .push((i, format!("no network \"{}\" to delete", entry.network)));
                }
                continue;
            }
            let value = self.value(&entry.value);
            let old = match key(&net) {
                Key::V4(k) => self.v4.insert(k, value),
                Key::V6(k) => self.v6.insert(k, value),
            };
            if let Some(old) = old {
                self.warnings.push((
                    i,
                    format!(
                        "duplicate network \"{}\", value: \"{}\", old value: \"{}\"",
                        entry.network, entry.value, self.values[old]
                    ),
                ));
            }
        }
        Ok(())
    }

    /// A range entry (ngx_http_geo_range): `default`, or `a.b.c.d-e.f.g.h` added or deleted.
    fn range(&mut self, i: usize, entry: &GeoEntry) -> Result<(), GeoError> {
        if entry.network == "default" && !entry.delete {
            if let Some(old) = self.default {
                self.warnings.push((
                    i,
                    format!(
                        "duplicate default geo range value: \"{}\", old value: \"{}\"",
                        entry.value, self.values[old]
                    ),
                ));
            }
            self.default = Some(self.value(&entry.value));
            return Ok(());
        }
        let invalid = || (Some(i), format!("invalid range \"{}\"", entry.network));
        let (start, end) = entry.network.split_once('-').ok_or_else(invalid)?;
        let start = u32::from(start.parse::<Ipv4Addr>().map_err(|_| invalid())?);
        let end = u32::from(end.parse::<Ipv4Addr>().map_err(|_| invalid())?);
        // ngx_inet_addr reads 255.255.255.255 as its error value.
        if start > end || start == u32::MAX || end == u32::MAX {
            return Err(invalid());
        }
        if entry.delete {
            if !self.delete_range(start, end) {
                self.warnings.push((
                    i,
                    format!("no address range \"{}\" to delete", entry.network),
                ));
            }
            return Ok(());
        }
        let value = self.value(&entry.value);
        for (high, low, high_end) in blocks_of(start, end) {
            self.add_range(i, entry, value, high, low, high_end)?;
        }
        Ok(())
    }

    /// Adds `low..=high_end` of the block `high` with `value`: after, inside (splitting it) or
    /// over exactly one range already there, else an error.
    fn add_range(
        &mut self,
        i: usize,
        entry: &GeoEntry,
        value: usize,
        high: u16,
        s: u16,
        e: u16,
    ) -> Result<(), GeoError> {
        let list = self.blocks.entry(high).or_default();
        // The last range that does not start after the new one ends.
        let Some(at) = list.iter().rposition(|&(start, _, _)| e >= start) else {
            list.insert(0, (s, e, value));
            return Ok(());
        };
        let (start, end, old) = list[at];
        if s > end {
            list.insert(at + 1, (s, e, value));
        } else if s == start && e == end {
            self.warnings.push((
                i,
                format!(
                    "duplicate range \"{}\", value: \"{}\", old value: \"{}\"",
                    entry.network, entry.value, self.values[old]
                ),
            ));
            list[at].2 = value;
        } else if s > start && e < end {
            list[at].1 = s - 1;
            list.insert(at + 1, (s, e, value));
            list.insert(at + 2, (e + 1, end, old));
        } else if s == start && e < end {
            list[at] = (s, e, value);
            list.insert(at + 1, (e + 1, end, old));
        } else if s > start && e == end {
            list[at].1 = s - 1;
            list.insert(at + 1, (s, e, value));
        } else {
            let [h1, h2] = high.to_be_bytes();
            let [s1, s2] = start.to_be_bytes();
            let [e1, e2] = end.to_be_bytes();
            return Err((
                Some(i),
                format!(
                    "range \"{}\" overlaps \"{h1}.{h2}.{s1}.{s2}-{h1}.{h2}.{e1}.{e2}\"",
                    entry.network
                ),
            ));
        }
        Ok(())
    }

    /// Deletes the ranges that are exactly `start..=end` in each block; false when some block
    /// had none (nginx then warns).
    fn delete_range(&mut self, start: u32, end: u32) -> bool {
        let mut all = true;
        for (high, s, e) in blocks_of(start, end) {
            let list = self.blocks.entry(high).or_default();
            match list.iter().position(|&(a, b, _)| a == s && b == e) {
                Some(at) => {
                    list.remove(at);
                }
                None => all = false,
            }
        }
        all
    }
}

enum Key {
    V4((u32, u8)),
    V6((u128, u8)),
}

/// The blocks of 65,536 addresses a range spans: (high 16 bits, first low, last low).
fn blocks_of(start: u32, end: u32) -> impl Iterator<Item = (u16, u16, u16)> {
    let (first, last) = ((start >> 16) as u16, (end >> 16) as u16);
    (first..=last).map(move |high| {
        let s = if high == first { start as u16 } else { 0 };
        let e = if high == last { end as u16 } else { u16::MAX };
        (high, s, e)
    })
}

impl<T: Copy + Eq + std::hash::Hash + Mask> Prefixes<T> {
    fn new(entries: HashMap<(T, u8), usize>) -> Prefixes<T> {
        let mut by_length = vec![HashMap::new(); T::BITS as usize + 1];
        for ((net, len), value) in entries {
            by_length[len as usize].insert(net, value);
        }
        Prefixes { by_length }
    }

    /// The value of the longest prefix holding `addr`.
    fn find(&self, addr: T) -> Option<usize> {
        self.by_length
            .iter()
            .enumerate()
            .rev()
            .filter(|(_, nets)| !nets.is_empty())
            .find_map(|(len, nets)| nets.get(&addr.masked(len as u32)).copied())
    }
}

trait Mask: Sized {
    const BITS: u32;
    fn masked(self, len: u32) -> Self;
}

impl Mask for u32 {
    const BITS: u32 = 32;
    fn masked(self, len: u32) -> u32 {
        self.checked_shr(32 - len).map_or(0, |v| v << (32 - len))
    }
}

impl Mask for u128 {
    const BITS: u32 = 128;
    fn masked(self, len: u32) -> u128 {
        self.checked_shr(128 - len).map_or(0, |v| v << (128 - len))
    }
}

impl GeoTable {
    /// The value for `addr`; `None` (a Unix socket, or a source that is no address) is looked
    /// up as 255.255.255.255, as nginx does.
    pub fn lookup(&self, addr: Option<IpAddr>) -> &str {
        let v4 = match addr.map(|a| a.to_canonical()) {
            Some(IpAddr::V4(a)) => Some(u32::from(a)),
            Some(IpAddr::V6(a)) => {
                if let Kind::Networks { v6, .. } = &self.kind {
                    return self.value(v6.find(u128::from(a)));
                }
                None
            }
            None => None,
        };
        let v4 = v4.unwrap_or(u32::MAX);
        match &self.kind {
            Kind::Networks { v4: nets, .. } => self.value(nets.find(v4)),
            Kind::Ranges { blocks, default } => {
                let low = v4 as u16;
                let found = blocks.get(&((v4 >> 16) as u16)).and_then(|list| {
                    list.iter()
                        .find(|&&(s, e, _)| s <= low && low <= e)
                        .map(|&(_, _, value)| value)
                });
                self.value(found.or(*default))
            }
        }
    }

    fn value(&self, index: Option<usize>) -> &str {
        index.map_or("", |i| self.values[i].as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn geo(ranges: bool, entries: &[(&str, &str)]) -> GeoVar {
        GeoVar {
            variable: "g".into(),
            ranges,
            entries: entries
                .iter()
                .map(|(network, value)| match network.strip_prefix("delete ") {
                    Some(network) => GeoEntry {
                        network: network.to_string(),
                        value: String::new(),
                        delete: true,
                    },
                    None => GeoEntry {
                        network: network.to_string(),
                        value: value.to_string(),
                        delete: false,
                    },
                })
                .collect(),
            ..GeoVar::default()
        }
    }

    fn at(table: &GeoTable, addr: &str) -> String {
        table.lookup(Some(addr.parse().unwrap())).to_string()
    }

    #[test]
    fn the_longest_network_wins_and_later_entries_replace_or_delete() {
        let (table, warnings) = geo(
            false,
            &[
                ("default", "d"),
                ("10.0.0.0/8", "ten"),
                ("10.1.0.0/16", "ten-one"),
                ("10.1.2.3", "host"),
                ("10.2.0.0/16", "x"),
                ("10.2.0.0/16", "y"),
                ("delete 10.1.0.0/16", ""),
                ("2001:db8::/32", "six"),
                ("192.168.1.7/24", "low-bits"),
            ],
        )
        .table()
        .unwrap();
        assert_eq!(at(&table, "10.1.2.3"), "host");
        assert_eq!(at(&table, "10.1.2.4"), "ten");
        assert_eq!(at(&table, "10.2.9.9"), "y");
        assert_eq!(at(&table, "11.0.0.1"), "d");
        assert_eq!(at(&table, "::ffff:10.1.2.3"), "host");
        assert_eq!(at(&table, "2001:db8::1"), "six");
        assert_eq!(at(&table, "2001:db9::1"), "d");
        assert_eq!(at(&table, "192.168.1.200"), "low-bits");
        assert_eq!(table.lookup(None), "d");
        let messages: Vec<&str> = warnings.iter().map(|(_, m)| m.as_str()).collect();
        assert_eq!(
            messages,
            [
                "duplicate network \"10.2.0.0/16\", value: \"y\", old value: \"x\"",
                "low address bits of 192.168.1.7/24 are meaningless"
            ]
        );
    }

    #[test]
    fn without_a_default_nothing_matched_is_empty() {
        let (table, _) = geo(false, &[("127.0.0.2", "two")]).table().unwrap();
        assert_eq!(at(&table, "127.0.0.2"), "two");
        assert_eq!(at(&table, "127.0.0.3"), "");
        assert_eq!(at(&table, "::1"), "");
        let err = geo(false, &[("10.0.0.0/33", "x")]).table().unwrap_err();
        assert_eq!(err, (Some(0), "invalid network \"10.0.0.0/33\"".into()));
    }

    #[test]
    fn a_range_over_several_blocks_is_refused_where_it_overlaps() {
        let err = geo(
            true,
            &[
                ("10.0.0.0-10.0.0.9", "c"),
                ("10.0.255.250-10.0.255.255", "e"),
                ("9.255.255.0-10.1.0.5", "wide"),
            ],
        )
        .table()
        .unwrap_err();
        assert_eq!(
            err,
            (
                Some(2),
                "range \"9.255.255.0-10.1.0.5\" overlaps \"10.0.255.250-10.0.255.255\"".into()
            )
        );
    }

    #[test]
    fn ranges_look_up_by_block() {
        let (table, _) = geo(
            true,
            &[
                ("default", "d"),
                ("10.0.0.0-10.0.255.255", "a"),
                ("10.0.1.0-10.0.1.255", "b"),
                ("10.0.0.0-10.0.0.9", "c"),
                ("10.0.255.250-10.0.255.255", "e"),
                ("10.1.255.0-10.2.0.5", "across"),
                ("delete 10.0.1.0-10.0.1.255", ""),
            ],
        )
        .table()
        .unwrap();
        assert_eq!(at(&table, "10.0.0.5"), "c");
        assert_eq!(at(&table, "10.0.0.10"), "a");
        assert_eq!(at(&table, "10.0.1.7"), "d");
        assert_eq!(at(&table, "10.0.2.7"), "a");
        assert_eq!(at(&table, "10.0.255.251"), "e");
        assert_eq!(at(&table, "10.1.255.1"), "across");
        assert_eq!(at(&table, "10.2.0.5"), "across");
        assert_eq!(at(&table, "10.2.0.6"), "d");
        assert_eq!(at(&table, "2001:db8::1"), "d");
        let err = geo(
            true,
            &[("10.0.0.0-10.0.0.9", "a"), ("10.0.0.5-10.0.0.20", "b")],
        )
        .table()
        .unwrap_err();
        assert_eq!(
            err,
            (
                Some(1),
                "range \"10.0.0.5-10.0.0.20\" overlaps \"10.0.0.0-10.0.0.9\"".into()
            )
        );
        let err = geo(true, &[("10.0.0.0/8", "a")]).table().unwrap_err();
        assert_eq!(err.1, "invalid range \"10.0.0.0/8\"");
    }
}
