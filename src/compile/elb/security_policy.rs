//! ELB's predefined SSL security policies (`Reference-Security-Policy=ELBSecurityPolicy-...`):
//! the protocols each enables and, for the current ones, the ciphers in ELB's order.
//!
//! Source: the Classic Load Balancer guide's "Predefined SSL security policies" tables. For the
//! policies before 2016-08 only the protocols are reproduced; the report says so.

/// One predefined policy.
#[derive(Debug)]
pub struct Predefined {
    pub name: &'static str,
    /// ELB's protocol names: `SSLv3`, `TLSv1`, `TLSv1.1`, `TLSv1.2`.
    pub protocols: &'static [&'static str],
    /// OpenSSL cipher names in preference order, when known.
    pub ciphers: Option<&'static [&'static str]>,
    pub server_order: bool,
}

/// The policy ELB gives an HTTPS or SSL listener that names none.
pub const DEFAULT: &str = "ELBSecurityPolicy-2016-08";

const CIPHERS_2016_08: &[&str] = &[
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES128-SHA256",
    "ECDHE-RSA-AES128-SHA256",
    "ECDHE-ECDSA-AES128-SHA",
    "ECDHE-RSA-AES128-SHA",
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-AES256-SHA384",
    "ECDHE-RSA-AES256-SHA384",
    "ECDHE-RSA-AES256-SHA",
    "ECDHE-ECDSA-AES256-SHA",
    "AES128-GCM-SHA256",
    "AES128-SHA256",
    "AES128-SHA",
    "AES256-GCM-SHA384",
    "AES256-SHA256",
    "AES256-SHA",
];

const CIPHERS_TLS_1_2_2017_01: &[&str] = &[
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES128-SHA256",
    "ECDHE-RSA-AES128-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-AES256-SHA384",
    "ECDHE-RSA-AES256-SHA384",
    "AES128-GCM-SHA256",
    "AES128-SHA256",
    "AES256-GCM-SHA384",
    "AES256-SHA256",
];

const TLS_1_0_TO_1_2: &[&str] = &["TLSv1", "TLSv1.1", "TLSv1.2"];

pub const PREDEFINED: &[Predefined] = &[
    Predefined {
        name: "ELBSecurityPolicy-TLS-1-2-2017-01",
        protocols: &["TLSv1.2"],
        ciphers: Some(CIPHERS_TLS_1_2_2017_01),
        server_order: true,
    },
    Predefined {
        name: "ELBSecurityPolicy-TLS-1-1-2017-01",
        protocols: &["TLSv1.1", "TLSv1.2"],
        ciphers: Some(CIPHERS_2016_08),
        server_order: true,
    },
    Predefined {
        name: "ELBSecurityPolicy-2016-08",
        protocols: TLS_1_0_TO_1_2,
        ciphers: Some(CIPHERS_2016_08),
        server_order: true,
    },
    Predefined {
        name: "ELBSecurityPolicy-2015-05",
        protocols: TLS_1_0_TO_1_2,
        ciphers: None,
        server_order: true,
    },
    Predefined {
        name: "ELBSecurityPolicy-2015-03",
        protocols: TLS_1_0_TO_1_2,
        ciphers: None,
        server_order: true,
    },
    Predefined {
        name: "ELBSecurityPolicy-2015-02",
        protocols: TLS_1_0_TO_1_2,
        ciphers: None,
        server_order: true,
    },
    Predefined {
        name: "ELBSecurityPolicy-2014-10",
        protocols: TLS_1_0_TO_1_2,
        ciphers: None,
        server_order: true,
    },
    Predefined {
        name: "ELBSecurityPolicy-2014-01",
        protocols: &["SSLv3", "TLSv1", "TLSv1.1", "TLSv1.2"],
        ciphers: None,
        server_order: true,
    },
    Predefined {
        name: "ELBSecurityPolicy-2011-08",
        protocols: &["SSLv3", "TLSv1"],
        ciphers: None,
        server_order: false,
    },
];

/// A predefined policy by name; ELB's names are matched without regard to case.
pub fn predefined(name: &str) -> Option<&'static Predefined> {
    PREDEFINED
        .iter()
        .find(|p| p.name.eq_ignore_ascii_case(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_and_unknown() {
        assert_eq!(predefined(DEFAULT).unwrap().protocols, TLS_1_0_TO_1_2);
        assert_eq!(
            predefined("elbsecuritypolicy-tls-1-2-2017-01")
                .unwrap()
                .protocols,
            ["TLSv1.2"]
        );
        assert!(predefined("ELBSecurityPolicy-2099-01").is_none());
    }
}
