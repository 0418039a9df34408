//! Talking to the segment about an address, below IP: announcing that this node now has it
//! (gratuitous ARP for IPv4, an unsolicited neighbour advertisement for IPv6) and asking whether
//! anyone else has it (an ARP probe as in RFC 5227, a neighbour solicitation as in duplicate
//! address detection, RFC 4862).
//!
//! The kernel offers no call for either, so the frames are written whole and sent on an
//! `AF_PACKET` socket bound to the interface. `libc` is the only dependency for that: the
//! socket, `sockaddr_ll`, `sendto` and `recvfrom` are four calls, kept with their `unsafe`
//! in [`PacketSocket`].

use std::io;
use std::mem;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::time::Instant;

pub type Mac = [u8; 6];

const ETH_P_ARP: u16 = 0x0806;
const ETH_P_IPV6: u16 = 0x86dd;
const BROADCAST: Mac = [0xff; 6];
const ARP_REQUEST: u16 = 1;
const ARP_REPLY: u16 = 2;
const ICMPV6: u8 = 58;
const ND_SOLICIT: u8 = 135;
const ND_ADVERT: u8 = 136;
/// Ethernet's minimum frame without the checksum; short frames are padded to it.
const MIN_FRAME: usize = 60;

/// The interface the address lives on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    pub name: String,
    pub index: u32,
    pub mac: Mac,
}

pub fn mac_text(mac: &Mac) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Another node seen on the segment for our address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seen {
    /// It answers for the address, or announces it: it holds it.
    Holder(Mac),
    /// It is probing for the address: it is about to claim it too.
    Prober(Mac),
}

/// A raw socket on one interface for one ethertype.
pub struct PacketSocket {
    fd: AsyncFd<OwnedFd>,
    index: u32,
    ethertype: u16,
}

impl PacketSocket {
    pub fn open(index: u32, ethertype: u16) -> io::Result<PacketSocket> {
        // SAFETY: plain socket(2); the result is checked before use and owned at once.
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                i32::from(ethertype.to_be()),
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let addr = Self::address(index, ethertype, &[0; 6]);
        // SAFETY: `addr` is a valid sockaddr_ll and its size is passed with it.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_ll).cast(),
                mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: an OwnedFd keeps its descriptor open and unchanged until dropped, which
        // happens only with the AsyncFd.
        let fd = unsafe { AsyncFd::register(fd) }.map_err(|e| e.into_parts().1)?;
        Ok(PacketSocket {
            fd,
            index,
            ethertype,
        })
    }

    fn address(index: u32, ethertype: u16, dst: &Mac) -> libc::sockaddr_ll {
        // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
        let mut addr: libc::sockaddr_ll = unsafe { mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = ethertype.to_be();
        addr.sll_ifindex = index as i32;
        addr.sll_halen = 6;
        addr.sll_addr[..6].copy_from_slice(dst);
        addr
    }

    /// Sends a whole Ethernet frame.
    pub async fn send(&self, frame: &[u8]) -> io::Result<()> {
        let mut dst = [0u8; 6];
        dst.copy_from_slice(&frame[..6]);
        let addr = Self::address(self.index, self.ethertype, &dst);
        loop {
            let mut guard = self.fd.writable().await?;
            // SAFETY: the buffer and the address are valid for the lengths given.
            let result = guard.try_io(|fd| {
                let n = unsafe {
                    libc::sendto(
                        fd.as_raw_fd(),
                        frame.as_ptr().cast(),
                        frame.len(),
                        0,
                        (&addr as *const libc::sockaddr_ll).cast(),
                        mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
                    )
                };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(())
                }
            });
            match result {
                Ok(r) => return r,
                Err(_would_block) => continue,
            }
        }
    }

    /// Receives the next frame that arrived on the interface (frames this host sent are skipped).
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let mut guard = self.fd.readable().await?;
            let result = guard.try_io(|fd| {
                // SAFETY: as in `open`; recvfrom writes at most the lengths given.
                let mut from: libc::sockaddr_ll = unsafe { mem::zeroed() };
                let mut len = mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
                let n = unsafe {
                    libc::recvfrom(
                        fd.as_raw_fd(),
                        buf.as_mut_ptr().cast(),
                        buf.len(),
                        0,
                        (&mut from as *mut libc::sockaddr_ll).cast(),
                        &mut len,
                    )
                };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok((n as usize, from.sll_pkttype))
                }
            });
            match result {
                Ok(Ok((_, kind))) if kind == libc::PACKET_OUTGOING => continue,
                Ok(Ok((n, _))) => return Ok(n),
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
    }
}

fn ethernet(dst: &Mac, src: &Mac, ethertype: u16) -> Vec<u8> {
    let mut f = Vec::with_capacity(96);
    f.extend_from_slice(dst);
    f.extend_from_slice(src);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f
}

fn arp(op: u16, sha: &Mac, spa: Ipv4Addr, tha: &Mac, tpa: Ipv4Addr, dst: &Mac) -> Vec<u8> {
    let mut f = ethernet(dst, sha, ETH_P_ARP);
    f.extend_from_slice(&[0, 1, 0x08, 0x00, 6, 4]);
    f.extend_from_slice(&op.to_be_bytes());
    f.extend_from_slice(sha);
    f.extend_from_slice(&spa.octets());
    f.extend_from_slice(tha);
    f.extend_from_slice(&tpa.octets());
    f.resize(MIN_FRAME, 0);
    f
}

/// A gratuitous ARP request: "`ip` is at `mac`", broadcast. Neighbours with an entry for `ip`
/// replace it.
pub fn gratuitous_arp(mac: &Mac, ip: Ipv4Addr) -> Vec<u8> {
    arp(ARP_REQUEST, mac, ip, &[0; 6], ip, &BROADCAST)
}

/// An RFC 5227 probe: "who has `ip`?" from the unspecified address, which asks without
/// teaching anyone a mapping.
pub fn arp_probe(mac: &Mac, ip: Ipv4Addr) -> Vec<u8> {
    arp(
        ARP_REQUEST,
        mac,
        Ipv4Addr::UNSPECIFIED,
        &[0; 6],
        ip,
        &BROADCAST,
    )
}

/// What an ARP frame says about `ip`, if it came from another node.
pub fn parse_arp(frame: &[u8], ip: Ipv4Addr, ours: &Mac) -> Option<Seen> {
    let a = frame.get(14..42)?;
    if frame[12..14] != ETH_P_ARP.to_be_bytes() || a[..6] != [0, 1, 0x08, 0x00, 6, 4] {
        return None;
    }
    let op = u16::from_be_bytes([a[6], a[7]]);
    let sha: Mac = a[8..14].try_into().ok()?;
    let spa = Ipv4Addr::new(a[14], a[15], a[16], a[17]);
    let tpa = Ipv4Addr::new(a[24], a[25], a[26], a[27]);
    if sha == *ours {
        return None;
    }
    match op {
        ARP_REPLY | ARP_REQUEST if spa == ip => Some(Seen::Holder(sha)),
        ARP_REQUEST if spa.is_unspecified() && tpa == ip => Some(Seen::Prober(sha)),
        _ => None,
    }
}

fn solicited_node(ip: &Ipv6Addr) -> Ipv6Addr {
    let o = ip.octets();
    Ipv6Addr::new(
        0xff02,
        0,
        0,
        0,
        0,
        1,
        0xff00 | u16::from(o[13]),
        u16::from_be_bytes([o[14], o[15]]),
    )
}

fn multicast_mac(group: &Ipv6Addr) -> Mac {
    let o = group.octets();
    [0x33, 0x33, o[12], o[13], o[14], o[15]]
}

/// The ICMPv6 checksum over the pseudo-header and the message (RFC 4443).
fn icmpv6_checksum(src: &Ipv6Addr, dst: &Ipv6Addr, message: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut add = |bytes: &[u8]| {
        for pair in bytes.chunks(2) {
            let word = u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]);
            sum += u32::from(word);
        }
    };
    add(&src.octets());
    add(&dst.octets());
    add(&(message.len() as u32).to_be_bytes());
    add(&[0, 0, 0, ICMPV6]);
    add(message);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn ipv6_icmp(mac: &Mac, dst_mac: &Mac, src: Ipv6Addr, dst: Ipv6Addr, mut msg: Vec<u8>) -> Vec<u8> {
    let sum = icmpv6_checksum(&src, &dst, &msg);
    msg[2..4].copy_from_slice(&sum.to_be_bytes());
    let mut f = ethernet(dst_mac, mac, ETH_P_IPV6);
    f.extend_from_slice(&[0x60, 0, 0, 0]);
    f.extend_from_slice(&(msg.len() as u16).to_be_bytes());
    f.push(ICMPV6);
    f.push(255); // hop limit: neighbour discovery must arrive with 255
    f.extend_from_slice(&src.octets());
    f.extend_from_slice(&dst.octets());
    f.extend_from_slice(&msg);
    f
}

/// An unsolicited neighbour advertisement with the override flag: "`ip` is at `mac`", to all
/// nodes.
pub fn unsolicited_na(mac: &Mac, ip: Ipv6Addr) -> Vec<u8> {
    let all_nodes = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
    let mut msg = vec![ND_ADVERT, 0, 0, 0, 0x20, 0, 0, 0];
    msg.extend_from_slice(&ip.octets());
    msg.extend_from_slice(&[2, 1]); // option: target link-layer address, 8 bytes
    msg.extend_from_slice(mac);
    ipv6_icmp(mac, &multicast_mac(&all_nodes), ip, all_nodes, msg)
}

/// A duplicate-address-detection solicitation for `ip`, from the unspecified address.
pub fn ns_probe(mac: &Mac, ip: Ipv6Addr) -> Vec<u8> {
    let group = solicited_node(&ip);
    let mut msg = vec![ND_SOLICIT, 0, 0, 0, 0, 0, 0, 0];
    msg.extend_from_slice(&ip.octets());
    ipv6_icmp(
        mac,
        &multicast_mac(&group),
        Ipv6Addr::UNSPECIFIED,
        group,
        msg,
    )
}

/// What a neighbour-discovery frame says about `ip`, if it came from another node.
pub fn parse_nd(frame: &[u8], ip: Ipv6Addr, ours: &Mac) -> Option<Seen> {
    let src_mac: Mac = frame.get(6..12)?.try_into().ok()?;
    let h = frame.get(14..54)?;
    if frame[12..14] != ETH_P_IPV6.to_be_bytes() || h[6] != ICMPV6 || h[7] != 255 {
        return None;
    }
    let src: [u8; 16] = h[8..24].try_into().ok()?;
    let msg = frame.get(54..)?;
    let target: [u8; 16] = msg.get(8..24)?.try_into().ok()?;
    if Ipv6Addr::from(target) != ip || src_mac == *ours {
        return None;
    }
    match msg[0] {
        ND_ADVERT => {
            // Prefer the advertised link-layer address over the frame's sender.
            let mut holder = src_mac;
            let mut opts = &msg[24..];
            while opts.len() >= 8 && opts[1] != 0 {
                let len = usize::from(opts[1]) * 8;
                if opts[0] == 2 && len >= 8 {
                    holder.copy_from_slice(&opts[2..8]);
                }
                opts = opts.get(len..).unwrap_or_default();
            }
            (holder != *ours).then_some(Seen::Holder(holder))
        }
        ND_SOLICIT if Ipv6Addr::from(src).is_unspecified() => Some(Seen::Prober(src_mac)),
        _ => None,
    }
}

/// Tells the segment that this node has `ip` now.
pub async fn announce(link: &Link, ip: std::net::IpAddr) -> io::Result<()> {
    let (ethertype, frame) = match ip {
        std::net::IpAddr::V4(v4) => (ETH_P_ARP, gratuitous_arp(&link.mac, v4)),
        std::net::IpAddr::V6(v6) => (ETH_P_IPV6, unsolicited_na(&link.mac, v6)),
    };
    PacketSocket::open(link.index, ethertype)?
        .send(&frame)
        .await
}

/// Asks the segment whether another node has `ip` (or is probing for it), listening for `wait`.
/// Two probes go out, half of `wait` apart, so that one lost frame does not make a held address
/// look free. A holder wins over a prober in the answer.
pub async fn probe(link: &Link, ip: std::net::IpAddr, wait: Duration) -> io::Result<Option<Seen>> {
    let (socket, frame) = match ip {
        std::net::IpAddr::V4(v4) => (
            PacketSocket::open(link.index, ETH_P_ARP)?,
            arp_probe(&link.mac, v4),
        ),
        std::net::IpAddr::V6(v6) => (
            PacketSocket::open(link.index, ETH_P_IPV6)?,
            ns_probe(&link.mac, v6),
        ),
    };
    let parse = |f: &[u8]| match ip {
        std::net::IpAddr::V4(v4) => parse_arp(f, v4, &link.mac),
        std::net::IpAddr::V6(v6) => parse_nd(f, v6, &link.mac),
    };
    let start = Instant::now();
    let second_probe = start + wait / 2;
    let deadline = start + wait;
    socket.send(&frame).await?;
    let mut sent_again = false;
    let mut seen = None;
    let mut buf = [0u8; 2048];
    loop {
        let until = if sent_again { deadline } else { second_probe };
        match tokio::time::timeout_at(until, socket.recv(&mut buf)).await {
            Ok(Ok(n)) => match parse(&buf[..n]) {
                Some(Seen::Holder(mac)) => return Ok(Some(Seen::Holder(mac))),
                Some(p) => seen = seen.or(Some(p)),
                None => {}
            },
            Ok(Err(e)) => return Err(e),
            Err(_) if !sent_again => {
                socket.send(&frame).await?;
                sent_again = true;
            }
            Err(_) => return Ok(seen),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Mac = [2, 0, 0, 0, 0, 0xa];
    const B: Mac = [2, 0, 0, 0, 0, 0xb];

    #[test]
    fn arp_frames_say_what_they_should() {
        let vip: Ipv4Addr = "10.0.0.100".parse().unwrap();
        let g = gratuitous_arp(&A, vip);
        assert_eq!(g.len(), 60);
        assert_eq!(&g[..6], &BROADCAST);
        // Another node's gratuitous ARP shows it holding the address; our own is ignored.
        assert_eq!(parse_arp(&g, vip, &B), Some(Seen::Holder(A)));
        assert_eq!(parse_arp(&g, vip, &A), None);
        assert_eq!(parse_arp(&g, "10.0.0.101".parse().unwrap(), &B), None);
        let p = arp_probe(&A, vip);
        assert_eq!(parse_arp(&p, vip, &B), Some(Seen::Prober(A)));
        // A reply from a holder: op 2, sender = the address.
        let reply = arp(ARP_REPLY, &B, vip, &A, Ipv4Addr::UNSPECIFIED, &A);
        assert_eq!(parse_arp(&reply, vip, &A), Some(Seen::Holder(B)));
        assert_eq!(parse_arp(&reply[..30], vip, &A), None);
    }

    #[test]
    fn neighbour_discovery_frames_round_trip_with_valid_checksums() {
        let vip: Ipv6Addr = "fd00::100".parse().unwrap();
        let na = unsolicited_na(&A, vip);
        assert_eq!(&na[..6], &[0x33, 0x33, 0, 0, 0, 1]);
        assert_eq!(parse_nd(&na, vip, &B), Some(Seen::Holder(A)));
        assert_eq!(parse_nd(&na, vip, &A), None);
        let ns = ns_probe(&A, vip);
        assert_eq!(&ns[..6], &[0x33, 0x33, 0xff, 0, 1, 0]);
        assert_eq!(parse_nd(&ns, vip, &B), Some(Seen::Prober(A)));
        // The checksum over pseudo-header and message, computed with the checksum in place,
        // folds to zero when it is right.
        for frame in [&na, &ns] {
            let src = Ipv6Addr::from(<[u8; 16]>::try_from(&frame[22..38]).unwrap());
            let dst = Ipv6Addr::from(<[u8; 16]>::try_from(&frame[38..54]).unwrap());
            assert_eq!(icmpv6_checksum(&src, &dst, &frame[54..]), 0);
        }
    }

    #[test]
    fn solicited_node_groups_follow_rfc_4291() {
        let ip: Ipv6Addr = "2001:db8::1:2:3456:789a".parse().unwrap();
        assert_eq!(
            solicited_node(&ip),
            "ff02::1:ff56:789a".parse::<Ipv6Addr>().unwrap()
        );
        assert_eq!(
            multicast_mac(&solicited_node(&ip)),
            [0x33, 0x33, 0xff, 0x56, 0x78, 0x9a]
        );
    }
}
