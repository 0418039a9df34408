//! A `split_clients` variable, as the data plane evaluates it (see `config::split_clients`):
//! the source's MurmurHash2 (seed 0, as ngx_murmur_hash2) picks the first part whose bound it
//! is under; `*` takes any hash.

use super::vars::{eval, RequestVars};
use crate::compile::diag::Diagnostic;
use crate::config::template::{Context, Template};
use crate::config::{Defined, SplitClients};

pub(super) struct Split {
    source: Template,
    /// Each part's exclusive bound in the hash space (`None` for `*`) and its value.
    parts: Vec<(Option<u32>, Vec<u8>)>,
}

impl Split {
    pub(super) fn build(
        split: &SplitClients,
        context: Context,
        defined: Defined<'_>,
    ) -> Result<Split, Diagnostic> {
        let at = split.origin.as_ref();
        let source = super::tables::template_in(context, &split.source, defined, at)?;
        let bounds = split
            .bounds()
            .map_err(|(_, message)| Diagnostic::error(message).at_opt(at))?;
        let parts = bounds
            .into_iter()
            .zip(&split.parts)
            .map(|(bound, part)| (bound, part.value.clone().into_bytes()))
            .collect();
        Ok(Split { source, parts })
    }

    pub(super) fn write(&self, vars: &RequestVars<'_>, out: &mut Vec<u8>) {
        let mut key = Vec::new();
        eval(&self.source, vars, &mut key);
        let hash = murmur2::murmur2(&key, 0);
        if let Some((_, value)) = self
            .parts
            .iter()
            .find(|(bound, _)| bound.is_none_or(|bound| hash < bound))
        {
            out.extend_from_slice(value);
        }
    }
}

#[cfg(test)]
mod tests {
    /// ngx_murmur_hash2 is MurmurHash2 with seed 0: these are the values a C build of nginx
    /// 1.22's src/core/ngx_murmurhash.c gives, one for each length of tail.
    #[test]
    fn the_hash_is_nginx_s() {
        let nginx: [(&[u8], u32); 7] = [
            (b"", 0),
            (b"a", 2456313694),
            (b"ab", 446775395),
            (b"abc", 324500635),
            (b"abcd", 646393889),
            (b"127.0.0.1AAA", 3053215307),
            (b"hello", 3848350155),
        ];
        for (key, hash) in nginx {
            assert_eq!(murmur2::murmur2(key, 0), hash, "{key:?}");
        }
    }
}
