//! The filters that change a response body as it passes, in the order nginx's body filters run
//! them: gunzip, then the sub filter, then the charset filter's recoding, then gzip. One set
//! serves a proxied response on the fast path and on Pingora's session, and a file.

use bytes::Bytes;

use super::gunzip::Decompressor;
use super::gzip::Compressor;
use super::recode::Recoder;
use super::sub_filter::Substituter;

/// The filters one response goes through; each is there only when it changes this body.
#[derive(Default)]
pub struct BodyFilters {
    pub decompressor: Option<Decompressor>,
    pub substituter: Option<Substituter>,
    pub recoder: Option<Recoder>,
    pub compressor: Option<Compressor>,
}

/// zlib failed on the body (data that is not gzip, for gunzip): nginx logs it and ends the
/// response where it is.
#[derive(Debug)]
pub struct FilterFailed {
    /// "gunzip" or "gzip".
    pub filter: &'static str,
    pub error: std::io::Error,
}

impl std::fmt::Display for FilterFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.filter, self.error)
    }
}

/// The Pingora error type a [`FilterFailed`] becomes on Pingora's session.
pub const FILTER_FAILED: &str = "a response body filter failed";

impl FilterFailed {
    /// As a Pingora error: the response ends where it is, without an error page.
    pub fn into_pingora(self) -> Box<pingora::Error> {
        pingora::Error::because(
            pingora::ErrorType::Custom(FILTER_FAILED),
            self.filter,
            self.error,
        )
    }
}

fn failed(filter: &'static str) -> impl Fn(std::io::Error) -> FilterFailed {
    move |error| FilterFailed { filter, error }
}

impl BodyFilters {
    pub fn is_empty(&self) -> bool {
        self.decompressor.is_none()
            && self.substituter.is_none()
            && self.recoder.is_none()
            && self.compressor.is_none()
    }

    /// `data` through the filters: what goes out now (often less than came in while a filter
    /// holds some back).
    pub fn push(&mut self, data: &[u8]) -> Result<Bytes, FilterFailed> {
        let mut out: Option<Bytes> = None;
        if let Some(d) = self.decompressor.as_mut() {
            out = Some(d.push(data).map_err(failed("gunzip"))?);
        }
        if let Some(s) = self.substituter.as_mut() {
            out = Some(s.push(out.as_deref().unwrap_or(data)));
        }
        if let Some(r) = self.recoder.as_mut() {
            out = Some(r.push(out.as_deref().unwrap_or(data)));
        }
        if let Some(c) = self.compressor.as_mut() {
            out = Some(
                c.push(out.as_deref().unwrap_or(data))
                    .map_err(failed("gzip"))?,
            );
        }
        Ok(out.unwrap_or_else(|| Bytes::copy_from_slice(data)))
    }

    /// The body's end: what the filters held back, through the filters after them, and gzip's
    /// trailer. The filters are spent.
    pub fn finish(&mut self) -> Result<Bytes, FilterFailed> {
        if let Some(d) = self.decompressor.take() {
            d.finish().map_err(failed("gunzip"))?;
        }
        let mut held = match self.substituter.take() {
            Some(mut s) => s.finish(),
            None => Bytes::new(),
        };
        // A UTF-8 character cut short at the body's end is dropped, as nginx drops it.
        if let Some(mut r) = self.recoder.take() {
            held = r.push(&held);
        }
        match self.compressor.take() {
            Some(c) => c.whole(&held).map_err(failed("gzip")),
            None => Ok(held),
        }
    }
}
