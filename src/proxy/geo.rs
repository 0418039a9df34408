//! A `geo` variable, as the data plane evaluates it (see `config::geo`): the address is the
//! client's, or the source's read as an address; behind a trusted `proxy`, the one
//! `X-Forwarded-For` gives; then the table says the value.

use std::net::{IpAddr, SocketAddr};

use super::realip::RealIpConf;
use super::vars::{eval, RequestVars};
use crate::compile::diag::Diagnostic;
use crate::config::geo::GeoTable;
use crate::config::template::{Context, Template};
use crate::config::{Defined, GeoVar};

pub(super) struct Geo {
    source: Option<Template>,
    proxies: Option<RealIpConf>,
    table: GeoTable,
}

impl Geo {
    pub(super) fn build(
        geo: &GeoVar,
        context: Context,
        defined: Defined<'_>,
    ) -> Result<Geo, Diagnostic> {
        let at = geo.origin.as_ref();
        let source = match &geo.source {
            Some(text) => Some(super::tables::template_in(context, text, defined, at)?),
            None => None,
        };
        let (table, _warnings) = geo
            .table()
            .map_err(|(_, message)| Diagnostic::error(message).at_opt(at))?;
        Ok(Geo {
            source,
            proxies: RealIpConf::forwarded_for(geo.proxy_networks(), geo.proxy_recursive),
            table,
        })
    }

    pub(super) fn write(&self, vars: &RequestVars<'_>, out: &mut Vec<u8>) {
        let value = self.table.lookup(self.address(vars));
        out.extend_from_slice(value.as_bytes());
    }

    /// The address looked up; `None` when the source is no address (nginx then looks up
    /// 255.255.255.255 and does not read `X-Forwarded-For`) or the client is on a Unix socket.
    fn address(&self, vars: &RequestVars<'_>) -> Option<IpAddr> {
        let addr = match &self.source {
            None => vars.client.map(|(ip, _)| ip),
            Some(source) => {
                let mut text = Vec::new();
                eval(source, vars, &mut text);
                Some(std::str::from_utf8(&text).ok()?.parse::<IpAddr>().ok()?)
            }
        };
        let Some(proxies) = &self.proxies else {
            return addr;
        };
        let peer = addr.map(|ip| SocketAddr::new(ip, 0));
        match proxies.client(peer, vars.request, None) {
            Some(forwarded) => Some(forwarded.ip()),
            None => addr,
        }
    }
}
