//! nginx's `ssl_preread`: what a client's TLS ClientHello says, read before a stream server
//! chooses where the connection goes, without terminating TLS. The common use is routing TLS
//! by name (`map $ssl_preread_server_name $backend { ... }`, `proxy_pass $backend;`).
//!
//! Read as ngx_stream_ssl_preread_module reads it, quirks included, so that a config routes
//! the same connections to the same places:
//! - only whole TLS records are looked at, and the ClientHello may span several;
//! - bytes that are not a TLS handshake record (an SSH banner, plain HTTP) leave the variables
//!   empty, and the connection goes on;
//! - a malformed ClientHello also leaves them empty, and so does an SNI entry that is not a
//!   host name;
//! - the first `server_name` and the first ALPN extension count; ALPN's protocols are joined
//!   with `,`;
//! - any `supported_versions` extension makes the protocol `TLSv1.3`, whatever it lists;
//!   otherwise the ClientHello's own version is reported (an SSLv2-style hello is reported
//!   from its header).

/// What the ClientHello said, as far as it was read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Preread {
    /// `$ssl_preread_server_name`.
    pub server_name: Vec<u8>,
    /// `$ssl_preread_alpn_protocols`: the protocols, `,` between them.
    pub alpn_protocols: Vec<u8>,
    version: [u8; 2],
}

impl Preread {
    /// `$ssl_preread_protocol`, in OpenSSL's spelling; empty when not known.
    pub fn protocol(&self) -> &'static str {
        match self.version {
            [0, 2] => "SSLv2",
            [3, 0] => "SSLv3",
            [3, 1] => "TLSv1",
            [3, 2] => "TLSv1.1",
            [3, 3] => "TLSv1.2",
            [3, 4] => "TLSv1.3",
            _ => "",
        }
    }
}

/// How far the bytes read so far go.
#[derive(Debug, PartialEq, Eq)]
pub enum Scan {
    /// The ClientHello was read: the connection may go on.
    Done(Preread),
    /// Not a ClientHello nginx can read: the connection goes on, the variables empty.
    NotTls,
    /// More bytes are needed.
    Partial,
}

/// Looks at the bytes a client has sent so far. Called again, from the start, as more arrive:
/// a ClientHello is a few hundred bytes, and nginx's preread buffer 16k at most.
pub fn scan(buf: &[u8]) -> Scan {
    let mut handshake = Vec::new();
    let mut p = buf;
    while p.len() >= 5 {
        if p[0] & 0x80 != 0 && p[2] == 1 && (p[3] == 0 || p[3] == 3) {
            // An SSLv2-compatible ClientHello: only its version is known.
            return Scan::Done(Preread {
                version: [p[3], p[4]],
                ..Preread::default()
            });
        }
        // A handshake record, of SSLv3 or a TLS version.
        if p[0] != 0x16 || p[1] != 3 {
            return Scan::NotTls;
        }
        let len = usize::from(u16::from_be_bytes([p[3], p[4]]));
        let Some(record) = p.get(5..5 + len) else {
            break;
        };
        handshake.extend_from_slice(record);
        match client_hello(&handshake) {
            Parse::Done(found) => return Scan::Done(found),
            Parse::Malformed => return Scan::NotTls,
            Parse::Incomplete => {}
        }
        p = &p[5 + len..];
    }
    Scan::Partial
}

enum Parse {
    Done(Preread),
    Malformed,
    Incomplete,
}

/// Reads a handshake message from the start of `bytes`, which may stop short of its end.
fn client_hello(bytes: &[u8]) -> Parse {
    let mut found = Preread::default();
    let mut r = Reader {
        bytes,
        pos: 0,
        limit: usize::MAX,
    };
    match read_hello(&mut r, &mut found) {
        Ok(()) => Parse::Done(found),
        Err(Short::Malformed) => Parse::Malformed,
        Err(Short::MoreBytes) => Parse::Incomplete,
    }
}

enum Short {
    /// A field runs past the message's own length, or holds what nginx refuses.
    Malformed,
    /// A field runs past the bytes read so far.
    MoreBytes,
}

/// The handshake message, bounded by the length its header gives, as nginx's `left`.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    limit: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Short> {
        let end = self.pos + n;
        if end > self.limit {
            return Err(Short::Malformed);
        }
        let taken = self.bytes.get(self.pos..end).ok_or(Short::MoreBytes)?;
        self.pos = end;
        Ok(taken)
    }

    fn u8(&mut self) -> Result<usize, Short> {
        Ok(usize::from(self.take(1)?[0]))
    }

    fn u16(&mut self) -> Result<usize, Short> {
        let b = self.take(2)?;
        Ok(usize::from(u16::from_be_bytes([b[0], b[1]])))
    }

    fn at_end(&self) -> bool {
        self.pos == self.limit
    }
}

fn read_hello(r: &mut Reader<'_>, found: &mut Preread) -> Result<(), Short> {
    let header = r.take(4)?;
    if header[0] != 1 {
        return Err(Short::Malformed);
    }
    let len = usize::from(header[1]) << 16 | usize::from(header[2]) << 8 | usize::from(header[3]);
    r.limit = 4 + len;
    let version = r.take(2)?;
    found.version = [version[0], version[1]];
    r.take(32)?; // random
    let session_id = r.u8()?;
    r.take(session_id)?;
    let cipher_suites = r.u16()?;
    r.take(cipher_suites)?;
    let compression = r.u8()?;
    r.take(compression)?;
    if r.at_end() {
        return Ok(());
    }
    // The extensions' total length: nginx goes by the message's length instead.
    r.u16()?;
    let (mut seen_name, mut seen_alpn) = (false, false);
    while !r.at_end() {
        let kind = r.u16()?;
        let size = r.u16()?;
        match kind {
            0 if !seen_name => {
                seen_name = true;
                server_name(r, found)?;
            }
            16 if !seen_alpn => {
                seen_alpn = true;
                alpn(r, found)?;
            }
            43 => {
                // supported_versions: TLS 1.3 is offered (nginx looks no further).
                found.version = [3, 4];
                let listed = r.u8()?;
                r.take(listed)?;
            }
            _ => {
                r.take(size)?;
            }
        }
    }
    Ok(())
}

/// The `server_name` extension: the first entry, which must be a host name; the rest of the
/// list is skipped by the list's length.
fn server_name(r: &mut Reader<'_>, found: &mut Preread) -> Result<(), Short> {
    let mut list = r.u16()?;
    let head = r.take(3)?;
    if head[0] != 0 {
        return Err(Short::Malformed);
    }
    let len = usize::from(u16::from_be_bytes([head[1], head[2]]));
    list = list.checked_sub(3 + len).ok_or(Short::Malformed)?;
    let name = r.take(len)?;
    found.server_name = name.to_vec();
    r.take(list)?;
    Ok(())
}

/// The ALPN extension: each protocol, none empty, within the list's length.
fn alpn(r: &mut Reader<'_>, found: &mut Preread) -> Result<(), Short> {
    let mut list = r.u16()?;
    loop {
        let len = r.u8()?;
        if len == 0 {
            return Err(Short::Malformed);
        }
        list = list.checked_sub(1 + len).ok_or(Short::Malformed)?;
        found.alpn_protocols.extend_from_slice(r.take(len)?);
        if list == 0 {
            return Ok(());
        }
        found.alpn_protocols.push(b',');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ClientHello with the given extensions (type, body), in one record.
    fn hello(extensions: &[(u16, Vec<u8>)]) -> Vec<u8> {
        let mut ext = Vec::new();
        for (kind, body) in extensions {
            ext.extend_from_slice(&kind.to_be_bytes());
            ext.extend_from_slice(&(body.len() as u16).to_be_bytes());
            ext.extend_from_slice(body);
        }
        let mut body = vec![3, 3];
        body.extend_from_slice(&[7; 32]);
        body.push(0); // no session id
        body.extend_from_slice(&[0, 2, 0x13, 0x01]);
        body.extend_from_slice(&[1, 0]);
        body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
        body.extend_from_slice(&ext);
        let mut message = vec![1, 0, (body.len() >> 8) as u8, body.len() as u8];
        message.extend_from_slice(&body);
        records(&message, message.len())
    }

    /// The handshake message in records of at most `size` bytes.
    fn records(message: &[u8], size: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for chunk in message.chunks(size) {
            out.extend_from_slice(&[0x16, 3, 1]);
            out.extend_from_slice(&(chunk.len() as u16).to_be_bytes());
            out.extend_from_slice(chunk);
        }
        out
    }

    fn sni(name: &str) -> (u16, Vec<u8>) {
        let mut body = ((name.len() + 3) as u16).to_be_bytes().to_vec();
        body.push(0);
        body.extend_from_slice(&(name.len() as u16).to_be_bytes());
        body.extend_from_slice(name.as_bytes());
        (0, body)
    }

    fn alpn(protocols: &[&str]) -> (u16, Vec<u8>) {
        let mut list = Vec::new();
        for p in protocols {
            list.push(p.len() as u8);
            list.extend_from_slice(p.as_bytes());
        }
        let mut body = (list.len() as u16).to_be_bytes().to_vec();
        body.extend_from_slice(&list);
        (16, body)
    }

    fn done(bytes: &[u8]) -> Preread {
        match scan(bytes) {
            Scan::Done(found) => found,
            other => panic!("not done: {other:?}"),
        }
    }

    #[test]
    fn name_alpn_and_protocol() {
        let bytes = hello(&[sni("a.example.test"), alpn(&["h2", "http/1.1"])]);
        let found = done(&bytes);
        assert_eq!(found.server_name, b"a.example.test");
        assert_eq!(found.alpn_protocols, b"h2,http/1.1");
        assert_eq!(found.protocol(), "TLSv1.2");
        let tls13 = hello(&[(43, vec![2, 3, 4]), sni("b")]);
        assert_eq!(done(&tls13).protocol(), "TLSv1.3");
        assert_eq!(done(&hello(&[])).server_name, b"");
    }

    #[test]
    fn a_hello_over_several_records_and_reads() {
        let one = hello(&[sni("split.example.test"), (21, vec![0; 300])]);
        let message = &one[5..];
        let split = records(message, 40);
        for cut in 0..split.len() {
            assert_eq!(scan(&split[..cut]), Scan::Partial, "cut at {cut}");
        }
        assert_eq!(done(&split).server_name, b"split.example.test");
    }

    #[test]
    fn what_is_not_a_client_hello() {
        assert_eq!(scan(b"SSH-2.0-OpenSSH_9.2\r\n"), Scan::NotTls);
        assert_eq!(scan(b"GET / HTTP/1.1\r\n"), Scan::NotTls);
        assert_eq!(scan(b"SSH"), Scan::Partial);
        // An SNI entry that is not a host name, an empty ALPN protocol.
        let mut odd = sni("x");
        odd.1[2] = 1;
        assert_eq!(scan(&hello(&[odd])), Scan::NotTls);
        assert_eq!(scan(&hello(&[(16, vec![0, 1, 0])])), Scan::NotTls);
        // A server hello (type 2).
        let mut server = hello(&[]);
        server[5] = 2;
        assert_eq!(scan(&server), Scan::NotTls);
        let v2 = [0x80, 0x2e, 1, 3, 1, 0, 0];
        assert_eq!(done(&v2).protocol(), "TLSv1");
    }

    #[test]
    fn the_first_name_and_alpn_count() {
        let bytes = hello(&[sni("first"), alpn(&["a"]), sni("second"), alpn(&["b"])]);
        let found = done(&bytes);
        assert_eq!(found.server_name, b"first");
        assert_eq!(found.alpn_protocols, b"a");
    }
}
