//! Where a config item came from.
//!
//! Every item of the model remembers the file and line the user wrote it on, so that `migrate`
//! can comment the TOML it prints and runtime errors can point at the user's own line, whether
//! that line is in an nginx.conf, an ELB script or an appliance.toml.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A position in a source file: path as the user named it, 1-based line and column.
///
/// In TOML it is written `"path:line:column"`; the column may be left out.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Origin {
    pub file: Arc<str>,
    pub line: u32,
    pub column: u32,
}

impl Origin {
    pub fn new(file: impl Into<Arc<str>>, line: u32, column: u32) -> Self {
        Origin {
            file: file.into(),
            line,
            column,
        }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.column > 0 {
            write!(f, "{}:{}:{}", self.file, self.line, self.column)
        } else {
            write!(f, "{}:{}", self.file, self.line)
        }
    }
}

impl FromStr for Origin {
    type Err = String;

    /// Parses `path:line[:column]`. The path itself may contain colons, so the numbers are
    /// taken from the right.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("origin \"{s}\" is not \"file:line[:column]\"");
        let (head, last) = s.rsplit_once(':').ok_or_else(bad)?;
        let last: u32 = last.parse().map_err(|_| bad())?;
        match head.rsplit_once(':') {
            Some((file, line)) if !file.is_empty() && line.parse::<u32>().is_ok() => {
                Ok(Origin::new(file, line.parse().map_err(|_| bad())?, last))
            }
            _ if !head.is_empty() => Ok(Origin::new(head, last, 0)),
            _ => Err(bad()),
        }
    }
}

impl Serialize for Origin {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Origin {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_with_and_without_column() {
        for s in [
            "nginx.conf:12:5",
            "/etc/nginx/conf.d/a.conf:3",
            "C:/x.conf:1:1",
        ] {
            let o: Origin = s.parse().unwrap();
            assert_eq!(o.to_string(), s);
        }
        assert!("nginx.conf".parse::<Origin>().is_err());
        assert!(":3".parse::<Origin>().is_err());
    }
}
