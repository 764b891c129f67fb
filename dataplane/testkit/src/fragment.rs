//! Slicing a frame for ICMP quotes, RFC 791 fragmentation of a built frame, and reassembly.

use crate::checksum::checksum;
use crate::decode::*;
use crate::wire::*;

/// The IPv4 packet inside an Ethernet frame (after any VLAN tag), cut to its total length.
pub fn ip_packet_of(frame: &[u8]) -> Result<&[u8], DecodeError> {
    let (eth, ip_offset) = parse_eth(frame)?;
    if eth.ethertype != ETHERTYPE_IPV4 {
        return Err(DecodeError::NotIpv4 {
            ethertype: eth.ethertype,
        });
    }
    let after_l2 = &frame[ip_offset..];
    let ipv4 = parse_ipv4_header(after_l2)?;
    bounded_ipv4_packet(after_l2, &ipv4)
}

/// What RFC 792 routers quote in an ICMP error: the IPv4 header (options included, per its IHL)
/// and the first 8 bytes of its payload, or less if the packet is shorter.
pub fn icmp_quote(ip_packet: &[u8]) -> &[u8] {
    let header_len = ip_packet
        .first()
        .map_or(0, |first| usize::from(first & 0x0f) * 4);
    truncated(ip_packet, header_len + 8)
}

/// The first `len` bytes of `bytes` (all of them if shorter): e.g. a quote that ends mid-header,
/// or the 576-byte-style quotes of RFC 1812 routers.
pub fn truncated(bytes: &[u8], len: usize) -> &[u8] {
    &bytes[..len.min(bytes.len())]
}

/// Why [`fragment_packet`] could not split a frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FragmentError {
    #[error("frame does not hold a decodable IPv4 packet: {0}")]
    Decode(#[from] DecodeError),
    #[error("MTU {mtu} leaves no room for 8 data bytes after a {header_len}-byte IPv4 header")]
    MtuTooSmall { mtu: usize, header_len: usize },
    #[error("fragment at byte offset {offset} lies beyond the 13-bit offset field")]
    OffsetTooLarge { offset: usize },
}

/// Splits the IPv4 packet of `frame` into fragment frames of at most `mtu` IPv4 bytes each, as a
/// router would (RFC 791): same L2 header, data cut at multiples of 8 bytes, MF on all but the last
/// (which keeps the original MF, so fragments of fragments work), offsets counted from the
/// original's, only options with the copy bit repeated after the first fragment, and fresh header
/// checksums. DF is kept as it was: this is a test tool, not a router. A packet that already fits
/// comes back as one frame. Trailing L2 padding is dropped.
pub fn fragment_packet(frame: &[u8], mtu: usize) -> Result<Vec<Vec<u8>>, FragmentError> {
    let (_, ip_offset) = parse_eth(frame)?;
    let packet = ip_packet_of(frame)?;
    let l2 = &frame[..ip_offset];
    if packet.len() <= mtu {
        return Ok(vec![frame[..ip_offset + packet.len()].to_vec()]);
    }
    let original = parse_ipv4_header(packet)?;
    let first_header = &packet[..original.header_len()];
    let data = &packet[original.header_len()..];
    let later_header = header_for_later_fragments(first_header);

    let mut fragments = Vec::new();
    let mut sent = 0;
    while sent < data.len() {
        let header = if sent == 0 {
            first_header
        } else {
            later_header.as_slice()
        };
        let room = mtu.saturating_sub(header.len()) / 8 * 8;
        if room == 0 {
            return Err(FragmentError::MtuTooSmall {
                mtu,
                header_len: header.len(),
            });
        }
        let chunk = &data[sent..data.len().min(sent + room)];
        let is_last = sent + chunk.len() == data.len();
        let offset_units = usize::from(original.fragment_offset) + sent / 8;
        let offset_units = u16::try_from(offset_units)
            .ok()
            .filter(|units| *units <= MAX_FRAGMENT_OFFSET)
            .ok_or(FragmentError::OffsetTooLarge {
                offset: offset_units * 8,
            })?;
        let more_fragments = !is_last || original.more_fragments;

        let mut fragment = Vec::with_capacity(l2.len() + header.len() + chunk.len());
        fragment.extend_from_slice(l2);
        fragment.extend_from_slice(header);
        fragment.extend_from_slice(chunk);
        // Bounded by mtu <= packet.len() <= 65535.
        let total_length = (header.len() + chunk.len()) as u16;
        let flags = get_u16(header, 6) & 0xc000 | if more_fragments { 0x2000 } else { 0 };
        rewrite_ipv4_header(
            &mut fragment[ip_offset..],
            total_length,
            flags | offset_units,
        );
        fragments.push(fragment);
        sent += chunk.len();
    }
    Ok(fragments)
}

/// The header of second and later fragments: the fixed part plus the options whose copy bit is
/// set (RFC 791 section 3.1), padded with zeros.
pub(crate) fn header_for_later_fragments(first_header: &[u8]) -> Vec<u8> {
    let mut header = first_header[..IPV4_MIN_HEADER_LEN].to_vec();
    let options = &first_header[IPV4_MIN_HEADER_LEN..];
    let mut at = 0;
    while let Some(&option_type) = options.get(at) {
        match option_type {
            0 => break,   // End of option list.
            1 => at += 1, // No-op: single byte, copy bit clear.
            _ => {
                let Some(&len) = options.get(at + 1) else {
                    break;
                };
                let len = usize::from(len);
                let Some(option) = options.get(at..at + len).filter(|_| len >= 2) else {
                    break;
                };
                if option_type & 0x80 != 0 {
                    header.extend_from_slice(option);
                }
                at += len;
            }
        }
    }
    header.resize(padded_to_4(header.len()), 0);
    header[0] = 0x40 | (header.len() / 4) as u8;
    header
}

/// Sets total length and flags/offset of the IPv4 header at the start of `packet` and recomputes
/// its checksum.
pub(crate) fn rewrite_ipv4_header(packet: &mut [u8], total_length: u16, flags_and_offset: u16) {
    let header_len = usize::from(packet[0] & 0x0f) * 4;
    put_u16(packet, 2, total_length);
    put_u16(packet, 6, flags_and_offset);
    put_u16(packet, 10, 0);
    let header_checksum = checksum(&packet[..header_len]);
    put_u16(packet, 10, header_checksum);
}

/// Why [`reassemble`] could not rebuild a datagram.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReassembleError {
    #[error("no fragments given")]
    Empty,
    #[error("fragment {index}: {source}")]
    Decode { index: usize, source: DecodeError },
    #[error("fragment {index} belongs to another datagram (src, dst, protocol or id differ)")]
    ForeignFragment { index: usize },
    #[error("no fragment at offset 0")]
    MissingFirst,
    #[error("bytes {from}..{to} are missing")]
    Gap { from: usize, to: usize },
    #[error("fragment at byte {offset} overlaps earlier data with different content")]
    Overlap { offset: usize },
    #[error("no last fragment (one with MF clear)")]
    MissingLast,
    #[error("data continues past the fragment at byte {offset} that has MF clear")]
    DataAfterLast { offset: usize },
    #[error("data at byte {offset} of a non-last fragment is not a multiple of 8 bytes long")]
    UnalignedFragment { offset: usize },
    #[error("reassembled datagram would be {len} bytes, over 65535")]
    TooLong { len: usize },
}

/// Rebuilds the datagram from fragment frames given in any order (exact duplicates are allowed),
/// so its transport checksum can be verified with [`Decoded::parse`]. The result carries the L2
/// header and IPv4 header (options included) of the offset-0 fragment, with MF cleared, offset 0,
/// the full total length and a fresh header checksum.
pub fn reassemble<B: AsRef<[u8]>>(fragments: &[B]) -> Result<Vec<u8>, ReassembleError> {
    struct Piece<'a> {
        frame: &'a [u8],
        ip_offset: usize,
        header_len: usize,
        offset: usize,
        more_fragments: bool,
        data: &'a [u8],
    }
    let mut pieces = Vec::with_capacity(fragments.len());
    let mut datagram_key = None;
    for (index, fragment) in fragments.iter().enumerate() {
        let frame = fragment.as_ref();
        let decode = |error| ReassembleError::Decode {
            index,
            source: error,
        };
        let (_, ip_offset) = parse_eth(frame).map_err(decode)?;
        let packet = ip_packet_of(frame).map_err(decode)?;
        let ipv4 = parse_ipv4_header(packet).map_err(decode)?;
        let key = (ipv4.src, ipv4.dst, ipv4.protocol, ipv4.id);
        if *datagram_key.get_or_insert(key) != key {
            return Err(ReassembleError::ForeignFragment { index });
        }
        pieces.push(Piece {
            frame,
            ip_offset,
            header_len: ipv4.header_len(),
            offset: usize::from(ipv4.fragment_offset) * 8,
            more_fragments: ipv4.more_fragments,
            data: &packet[ipv4.header_len()..],
        });
    }
    pieces.sort_by_key(|piece| piece.offset);
    let first = pieces.first().ok_or(ReassembleError::Empty)?;
    if first.offset != 0 {
        return Err(ReassembleError::MissingFirst);
    }
    let l2_and_header = &first.frame[..first.ip_offset + first.header_len];
    let mut datagram = l2_and_header.to_vec();
    let mut data_len = 0;
    let mut complete = false;
    for piece in &pieces {
        if piece.offset < data_len {
            // Only an exact duplicate of data already placed is harmless.
            let placed = &datagram[l2_and_header.len() + piece.offset..];
            if piece.offset + piece.data.len() > data_len || !placed.starts_with(piece.data) {
                return Err(ReassembleError::Overlap {
                    offset: piece.offset,
                });
            }
            continue;
        }
        if complete {
            return Err(ReassembleError::DataAfterLast {
                offset: piece.offset,
            });
        }
        if piece.offset > data_len {
            return Err(ReassembleError::Gap {
                from: data_len,
                to: piece.offset,
            });
        }
        if piece.more_fragments && piece.data.len() % 8 != 0 {
            return Err(ReassembleError::UnalignedFragment {
                offset: piece.offset,
            });
        }
        datagram.extend_from_slice(piece.data);
        data_len += piece.data.len();
        complete = !piece.more_fragments;
    }
    if !complete {
        return Err(ReassembleError::MissingLast);
    }
    let total_len = first.header_len + data_len;
    let total_length =
        u16::try_from(total_len).map_err(|_| ReassembleError::TooLong { len: total_len })?;
    let packet = &mut datagram[first.ip_offset..];
    let dont_fragment = get_u16(packet, 6) & 0x4000;
    rewrite_ipv4_header(packet, total_length, dont_fragment);
    Ok(datagram)
}
