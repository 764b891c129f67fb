//! One-line `Display` summaries of decoded frames, as tests print them on failure.

use std::fmt;

use crate::decode::*;
use crate::wire::*;

pub(crate) struct ChecksumNote {
    value: u16,
    ok: Option<bool>,
}

impl fmt::Display for ChecksumNote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.ok {
            Some(true) => f.write_str("csum ok"),
            Some(false) => write!(f, "csum BAD {:#06x}", self.value),
            None => write!(f, "csum {:#06x} unverified", self.value),
        }
    }
}

/// `eth 02:..>02:.. vlan 100 | ipv4 10.244.1.10>203.0.113.10 ttl 63 id 0x1234 DF | tcp 40000>80
/// [S] seq 1 ack 0 win 65535 len 0 csum ok`
impl fmt::Display for Decoded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "eth {}>{}", self.eth.src, self.eth.dst)?;
        if let Some(tag) = self.eth.vlan {
            write!(f, " vlan {}", tag.vid)?;
            if tag.pcp != 0 || tag.dei {
                write!(f, " pcp {}{}", tag.pcp, if tag.dei { " DEI" } else { "" })?;
            }
        }
        write!(f, " | {}", self.ipv4)?;
        if self.trailing_len != 0 {
            write!(f, " +{}B pad", self.trailing_len)?;
        }
        f.write_str(" | ")?;
        match &self.l4 {
            L4::Tcp(tcp) => write!(
                f,
                "tcp {}>{} {} seq {} ack {} win {} len {} {}",
                tcp.src_port,
                tcp.dst_port,
                tcp.flags,
                tcp.seq,
                tcp.ack,
                tcp.window,
                tcp.payload.len(),
                ChecksumNote {
                    value: tcp.checksum,
                    ok: tcp.checksum_ok
                }
            ),
            L4::Udp(udp) => {
                write!(
                    f,
                    "udp {}>{} len {} ",
                    udp.src_port,
                    udp.dst_port,
                    udp.payload.len()
                )?;
                if udp.checksum == 0 {
                    f.write_str("csum none")
                } else {
                    write!(
                        f,
                        "{}",
                        ChecksumNote {
                            value: udp.checksum,
                            ok: udp.checksum_ok
                        }
                    )
                }
            }
            L4::IcmpEcho(echo) => write!(
                f,
                "icmp echo {} id {} seq {} len {} {}",
                match echo.kind {
                    EchoKind::Request => "request",
                    EchoKind::Reply => "reply",
                },
                echo.id,
                echo.seq,
                echo.payload.len(),
                ChecksumNote {
                    value: echo.checksum,
                    ok: echo.checksum_ok
                }
            ),
            L4::IcmpError(error) => {
                write!(f, "icmp error type {} code {}", error.icmp_type, error.code)?;
                if error.next_hop_mtu != 0 {
                    write!(f, " mtu {}", error.next_hop_mtu)?;
                }
                write!(
                    f,
                    " {} [inner {}B: {}",
                    ChecksumNote {
                        value: error.checksum,
                        ok: error.checksum_ok
                    },
                    error.inner.quoted_len,
                    error.inner.ipv4
                )?;
                write!(f, " | {}]", error.inner.l4)
            }
            L4::Icmp(icmp) => write!(
                f,
                "icmp type {} code {} {}",
                icmp.icmp_type,
                icmp.code,
                ChecksumNote {
                    value: icmp.checksum,
                    ok: icmp.checksum_ok
                }
            ),
            L4::Fragment {
                protocol,
                payload_len,
            } => {
                write!(f, "fragment proto {protocol} len {payload_len}")
            }
            L4::Other { protocol, payload } => write!(f, "proto {protocol} len {}", payload.len()),
        }
    }
}

impl fmt::Display for Ipv4Info {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ipv4 {}>{} ttl {} id {:#06x}",
            self.src, self.dst, self.ttl, self.id
        )?;
        if self.tos != 0 {
            write!(f, " tos {:#04x}", self.tos)?;
        }
        if self.reserved_flag {
            f.write_str(" RF")?;
        }
        if self.dont_fragment {
            f.write_str(" DF")?;
        }
        if self.more_fragments {
            f.write_str(" MF")?;
        }
        if self.fragment_offset != 0 {
            write!(f, " frag {}", usize::from(self.fragment_offset) * 8)?;
        }
        if !self.options.is_empty() {
            write!(f, " opts {}B", self.options.len())?;
        }
        if !self.header_checksum_ok {
            write!(f, " hdr csum BAD {:#06x}", self.header_checksum)?;
        }
        Ok(())
    }
}

impl fmt::Display for InnerL4 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let note = |f: &mut fmt::Formatter<'_>, value: u16, ok: Option<bool>| match ok {
            Some(_) => write!(f, " {}", ChecksumNote { value, ok }),
            None => write!(f, " csum {value:#06x}"),
        };
        match self {
            InnerL4::Tcp {
                src_port,
                dst_port,
                seq,
                checksum,
                checksum_ok,
            } => {
                write!(f, "tcp {src_port}>{dst_port} seq {seq}")?;
                match checksum {
                    Some(value) => note(f, *value, *checksum_ok),
                    None => Ok(()),
                }
            }
            InnerL4::Udp {
                src_port,
                dst_port,
                checksum,
                checksum_ok,
                ..
            } => {
                write!(f, "udp {src_port}>{dst_port}")?;
                note(f, *checksum, *checksum_ok)
            }
            InnerL4::IcmpEcho {
                kind,
                id,
                seq,
                checksum,
                checksum_ok,
            } => {
                let kind = match kind {
                    EchoKind::Request => "request",
                    EchoKind::Reply => "reply",
                };
                write!(f, "icmp echo {kind} id {id} seq {seq}")?;
                note(f, *checksum, *checksum_ok)
            }
            InnerL4::Icmp { icmp_type, code } => write!(f, "icmp type {icmp_type} code {code}"),
            InnerL4::Fragment { protocol } => write!(f, "fragment proto {protocol}"),
            InnerL4::Truncated {
                protocol,
                available,
            } => {
                write!(f, "proto {protocol} truncated at {available}B")
            }
            InnerL4::Other { protocol } => write!(f, "proto {protocol}"),
        }
    }
}
