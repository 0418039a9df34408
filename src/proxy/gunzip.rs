//! nginx's gunzip filter (ngx_http_gunzip_filter_module): a response whose Content-Encoding is
//! `gzip` goes out decompressed to a client that may not have gzip, as `gzip_http_version`,
//! `gzip_proxied` and `gzip_disable` decide it (`GzipConf::unzip` makes the decision). It is for
//! upstreams and `gzip_static always` files that keep only a compressed copy.
//!
//! The decompressed response loses its Content-Encoding, Content-Length and Accept-Ranges, its
//! ETag becomes weak, and it gets `Vary: Accept-Encoding` with `gzip_vary on` (as does one left
//! compressed). The filter comes after the headers filter (`add_header` sees the compressed
//! response) and before the sub filter and gzip, which see the decompressed one.

use bytes::Bytes;
use flate2::{Decompress, FlushDecompress, Status};
use http::header::{ACCEPT_RANGES, CONTENT_ENCODING, CONTENT_LENGTH, ETAG};
use pingora::http::ResponseHeader;

use super::gzip::weak_etag;

/// The headers of a response gunzip decompresses, changed as its header filter changes them
/// (`vary`: `gzip_vary on`). The body's framing is the caller's: its length is now unknown.
pub fn strip_headers(response: &mut ResponseHeader, vary: bool) -> pingora::Result<()> {
    // nginx drops the Content-Encoding it read, the last one.
    let encodings: Vec<_> = (response.headers.get_all(CONTENT_ENCODING).iter().cloned()).collect();
    response.remove_header(&CONTENT_ENCODING);
    for earlier in encodings.iter().take(encodings.len().saturating_sub(1)) {
        response.append_header(CONTENT_ENCODING, earlier)?;
    }
    response.remove_header(&CONTENT_LENGTH);
    response.remove_header(&ACCEPT_RANGES);
    if let Some(etag) = response.remove_header(&ETAG) {
        if let Some(weak) = weak_etag(etag.as_bytes()) {
            response.insert_header(ETAG, weak)?;
        }
    }
    if vary {
        response.append_header("Vary", "Accept-Encoding")?;
    }
    Ok(())
}

/// A gzip body decompressed as it passes, as nginx inflates it: member after member (a body may
/// be several gzip streams end to end), and an error for data that is not gzip, or for a body
/// that ends inside a member.
pub struct Decompressor {
    inflate: Decompress,
    /// The last member ended; more data starts another.
    member_ended: bool,
}

impl Default for Decompressor {
    fn default() -> Self {
        Decompressor::new()
    }
}

/// zlib's largest window, which a gzip member may use.
const WINDOW_BITS: u8 = 15;

impl Decompressor {
    pub fn new() -> Self {
        Decompressor {
            inflate: Decompress::new_gzip(WINDOW_BITS),
            member_ended: false,
        }
    }

    /// Decompresses `data`; returns what it gives so far.
    pub fn push(&mut self, data: &[u8]) -> std::io::Result<Bytes> {
        // Text compresses some 4 to 10 times; the buffer grows when it is not enough.
        let mut out = Vec::with_capacity((data.len() * 4).clamp(1024, 64 * 1024));
        let mut rest = data;
        loop {
            if self.member_ended && !rest.is_empty() {
                // ngx_http_gunzip_filter_inflate's inflateReset: another member follows.
                self.inflate = Decompress::new_gzip(WINDOW_BITS);
                self.member_ended = false;
            }
            if out.capacity() - out.len() < 1024 {
                out.reserve(out.capacity().clamp(1024, 256 * 1024));
            }
            let (before_in, before_out) = (self.inflate.total_in(), self.inflate.total_out());
            let status = self
                .inflate
                .decompress_vec(rest, &mut out, FlushDecompress::None)
                // nginx's words, with zlib's Z_DATA_ERROR.
                .map_err(|_| std::io::Error::other("inflate() failed: 0, -3"))?;
            let used = (self.inflate.total_in() - before_in) as usize;
            let made = self.inflate.total_out() - before_out;
            rest = &rest[used..];
            if status == Status::StreamEnd {
                self.member_ended = true;
                if rest.is_empty() {
                    break;
                }
                continue;
            }
            // Room left over: zlib has taken all it could and given all it had.
            if out.capacity() > out.len() && (rest.is_empty() || (used == 0 && made == 0)) {
                if !rest.is_empty() {
                    return Err(std::io::Error::other("inflate() failed: 0, -5"));
                }
                break;
            }
        }
        Ok(Bytes::from(out))
    }

    /// The body's end: an error if it ended inside a member, or had no member at all.
    pub fn finish(self) -> std::io::Result<()> {
        match self.member_ended {
            true => Ok(()),
            // nginx's words, with zlib's Z_BUF_ERROR.
            false => Err(std::io::Error::other(
                "inflate() returned -5 on response end",
            )),
        }
    }

    /// A whole body at once.
    pub fn whole(mut self, body: &[u8]) -> std::io::Result<Bytes> {
        let out = self.push(body)?;
        self.finish()?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
        encoder.write_all(data).expect("write");
        encoder.finish().expect("finish")
    }

    fn text(n: usize) -> Vec<u8> {
        (0..n)
            .flat_map(|i| format!("line {i} of the body\n").into_bytes())
            .collect()
    }

    #[test]
    fn a_body_cut_anywhere_decompresses_whole() {
        let plain = text(2000);
        let compressed = gzip(&plain);
        for cut in (0..compressed.len()).step_by(97).chain([compressed.len()]) {
            let mut d = Decompressor::new();
            let mut out = d.push(&compressed[..cut]).expect("first").to_vec();
            out.extend_from_slice(&d.push(&compressed[cut..]).expect("second"));
            d.finish().expect("finish");
            assert_eq!(out, plain, "cut at {cut}");
        }
    }

    #[test]
    fn members_end_to_end_are_one_body() {
        let (a, b) = (text(300), b"and the second member".to_vec());
        let body = [gzip(&a), gzip(&b)].concat();
        let out = Decompressor::new().whole(&body).expect("two members");
        assert_eq!(out, [a.as_slice(), &b].concat());
        // Split where the second member starts, too.
        let first = gzip(&a);
        let mut d = Decompressor::new();
        let mut out = d.push(&first).expect("first").to_vec();
        out.extend_from_slice(&d.push(&gzip(b"x")).expect("second"));
        d.finish().expect("finish");
        assert_eq!(out, [text(300), b"x".to_vec()].concat());
    }

    #[test]
    fn a_large_ratio_grows_the_buffer() {
        let plain = vec![b'a'; 3 * 1024 * 1024];
        let out = Decompressor::new().whole(&gzip(&plain)).expect("zeros");
        assert_eq!(out.len(), plain.len());
    }

    #[test]
    fn what_is_not_gzip_or_ends_early_fails() {
        assert!(Decompressor::new().push(b"plain text, not gzip").is_err());
        let compressed = gzip(&text(100));
        let mut d = Decompressor::new();
        d.push(&compressed[..compressed.len() - 9])
            .expect("a prefix");
        assert!(d.finish().is_err());
        assert!(Decompressor::new().whole(b"").is_err());
        let trailing = [compressed, b"garbage after it".to_vec()].concat();
        assert!(Decompressor::new().whole(&trailing).is_err());
    }
}
