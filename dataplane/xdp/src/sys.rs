//! Raw kernel interfaces aya 0.14 does not expose: XDP attachment state over
//! rtnetlink, and forced detachment of BPF links owned by other processes.
//!
//! Needed to find and remove a stale egw program left on an interface by an
//! older run (a netlink attachment survives its process; a BPF link pinned or
//! held by a leaked fd does too).
#![allow(unsafe_code)] // raw netlink and bpf(2) syscalls; every block says why it is sound.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// XDP attachment flags from `linux/if_link.h`.
pub(crate) const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;
pub(crate) const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;

const IFLA_XDP: u16 = 43;
const IFLA_XDP_FD: u16 = 1;
const IFLA_XDP_ATTACHED: u16 = 2;
const IFLA_XDP_FLAGS: u16 = 3;
const IFLA_XDP_PROG_ID: u16 = 4;
const IFLA_XDP_DRV_PROG_ID: u16 = 5;
const IFLA_XDP_SKB_PROG_ID: u16 = 6;
const NLA_F_NESTED: u16 = 1 << 15;
const NLA_TYPE_MASK: u16 = !(NLA_F_NESTED | (1 << 14));

const XDP_ATTACHED_DRV: u8 = 1;
const XDP_ATTACHED_SKB: u8 = 2;
const XDP_ATTACHED_HW: u8 = 3;
const XDP_ATTACHED_MULTI: u8 = 4;

const NLMSG_HDR_LEN: usize = 16;
const IFINFOMSG_LEN: usize = 16;

/// Where an XDP program is attached on an interface, as the kernel reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XdpAttachmentState {
    /// Program in native (driver) mode, if any.
    pub native_program_id: Option<u32>,
    /// Program in generic (skb) mode, if any.
    pub generic_program_id: Option<u32>,
    /// A program offloaded to hardware is attached (egw never does that).
    pub hardware_attached: bool,
}

impl XdpAttachmentState {
    /// True when no XDP program of any mode is attached.
    pub fn is_empty(&self) -> bool {
        self.native_program_id.is_none()
            && self.generic_program_id.is_none()
            && !self.hardware_attached
    }
}

fn netlink_socket() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2) call with constant arguments; no pointers.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by socket(2) and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn push_attr(buf: &mut Vec<u8>, kind: u16, payload: &[u8]) {
    let len = 4 + payload.len();
    buf.extend_from_slice(&(len as u16).to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(payload);
    buf.resize(buf.len().next_multiple_of(4), 0);
}

fn link_request(message_type: u16, flags: u16, ifindex: u32, attrs: &[u8]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(NLMSG_HDR_LEN + IFINFOMSG_LEN + attrs.len());
    let total = (NLMSG_HDR_LEN + IFINFOMSG_LEN + attrs.len()) as u32;
    buf.extend_from_slice(&total.to_ne_bytes());
    buf.extend_from_slice(&message_type.to_ne_bytes());
    buf.extend_from_slice(&(flags | libc::NLM_F_REQUEST as u16).to_ne_bytes());
    buf.extend_from_slice(&1u32.to_ne_bytes()); // sequence number
    buf.extend_from_slice(&0u32.to_ne_bytes()); // port id: kernel assigns
                                                // struct ifinfomsg { family, pad, type, index, flags, change }
    buf.extend_from_slice(&[libc::AF_UNSPEC as u8, 0, 0, 0]);
    buf.extend_from_slice(&(ifindex as i32).to_ne_bytes());
    buf.extend_from_slice(&0u32.to_ne_bytes());
    buf.extend_from_slice(&0u32.to_ne_bytes());
    buf.extend_from_slice(attrs);
    buf
}

/// Sends one request and returns the first reply message's payload (after the
/// nlmsghdr). An `NLMSG_ERROR` reply with a non-zero code becomes an error.
fn transact(request: &[u8]) -> io::Result<Vec<u8>> {
    let socket = netlink_socket()?;
    // SAFETY: `request` is a valid readable buffer of the given length; the
    // kernel only reads it. A null destination address means the kernel.
    let sent = unsafe {
        libc::send(
            socket.as_raw_fd(),
            request.as_ptr().cast(),
            request.len(),
            0,
        )
    };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut buf = vec![0u8; 64 * 1024];
    // SAFETY: `buf` is a valid writable buffer of `buf.len()` bytes, and the
    // kernel writes at most that many.
    let received = unsafe { libc::recv(socket.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
    if received < 0 {
        return Err(io::Error::last_os_error());
    }
    buf.truncate(received as usize);
    if buf.len() < NLMSG_HDR_LEN {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "short netlink reply",
        ));
    }
    let short = || io::Error::new(io::ErrorKind::InvalidData, "short netlink reply");
    let message_len = bytes_at(&buf, 0)
        .map(u32::from_ne_bytes)
        .ok_or_else(short)? as usize;
    let message_type = bytes_at(&buf, 4)
        .map(u16::from_ne_bytes)
        .ok_or_else(short)?;
    let end = message_len.min(buf.len());
    let payload = buf.get(NLMSG_HDR_LEN..end).ok_or_else(short)?.to_vec();
    if message_type == libc::NLMSG_ERROR as u16 {
        let code = bytes_at(&payload, 0)
            .map(i32::from_ne_bytes)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "short netlink error"))?;
        if code != 0 {
            return Err(io::Error::from_raw_os_error(-code));
        }
    }
    Ok(payload)
}

/// The `N` bytes of `data` at offset `at`, if it holds them (the kernel's replies are
/// untrusted input: a short one is an error, never a panic).
fn bytes_at<const N: usize>(data: &[u8], at: usize) -> Option<[u8; N]> {
    data.get(at..at.checked_add(N)?)?.try_into().ok()
}

fn attrs(mut data: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        let len = usize::from(u16::from_ne_bytes(bytes_at(data, 0)?));
        let kind = u16::from_ne_bytes(bytes_at(data, 2)?) & NLA_TYPE_MASK;
        if len < 4 || len > data.len() {
            return None;
        }
        let payload = data.get(4..len)?;
        data = data.get(len.next_multiple_of(4).min(data.len())..)?;
        Some((kind, payload))
    })
}

fn read_u32(payload: &[u8]) -> Option<u32> {
    Some(u32::from_ne_bytes(payload.get(..4)?.try_into().ok()?))
}

/// Queries which XDP programs are attached to `ifindex` in the calling
/// thread's network namespace.
pub fn query_xdp_attachment(ifindex: u32) -> io::Result<XdpAttachmentState> {
    let request = link_request(libc::RTM_GETLINK, 0, ifindex, &[]);
    let payload = transact(&request)?;
    let link_attrs = payload
        .get(IFINFOMSG_LEN..)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "short RTM_NEWLINK"))?;
    let mut state = XdpAttachmentState {
        native_program_id: None,
        generic_program_id: None,
        hardware_attached: false,
    };
    let Some((_, xdp)) = attrs(link_attrs).find(|(kind, _)| *kind == IFLA_XDP) else {
        return Ok(state);
    };
    let mut attached = 0u8;
    let mut single_program = None;
    for (kind, value) in attrs(xdp) {
        match kind {
            IFLA_XDP_ATTACHED => attached = value.first().copied().unwrap_or(0),
            IFLA_XDP_PROG_ID => single_program = read_u32(value),
            IFLA_XDP_DRV_PROG_ID => state.native_program_id = read_u32(value),
            IFLA_XDP_SKB_PROG_ID => state.generic_program_id = read_u32(value),
            _ => {}
        }
    }
    // With a single attachment the kernel reports only IFLA_XDP_PROG_ID.
    match attached {
        XDP_ATTACHED_DRV => state.native_program_id = single_program,
        XDP_ATTACHED_SKB => state.generic_program_id = single_program,
        XDP_ATTACHED_HW => state.hardware_attached = true,
        XDP_ATTACHED_MULTI => {}
        _ => {}
    }
    Ok(state)
}

/// Removes a netlink-attached XDP program of the given mode
/// (`XDP_FLAGS_DRV_MODE` or `XDP_FLAGS_SKB_MODE`). Fails with `EBUSY` when the
/// attachment is a BPF link; those go through [`force_detach_xdp_link`].
pub(crate) fn netlink_detach_xdp(ifindex: u32, mode_flag: u32) -> io::Result<()> {
    let mut xdp = Vec::new();
    push_attr(&mut xdp, IFLA_XDP_FD, &(-1i32).to_ne_bytes());
    push_attr(&mut xdp, IFLA_XDP_FLAGS, &mode_flag.to_ne_bytes());
    let mut attrs = Vec::new();
    push_attr(&mut attrs, IFLA_XDP | NLA_F_NESTED, &xdp);
    let request = link_request(libc::RTM_SETLINK, libc::NLM_F_ACK as u16, ifindex, &attrs);
    transact(&request).map(drop)
}

const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_LINK_GET_FD_BY_ID: libc::c_long = 30;
const BPF_LINK_DETACH: libc::c_long = 34;
const BPF_LINK_TYPE_XDP: u32 = 6;

/// `union bpf_attr` is 144 bytes on 6.x kernels; passing a smaller, zeroed
/// prefix is accepted by every kernel that knows the commands used here.
type BpfAttr = [u64; 16];

/// Two consecutive `u32` fields as the `u64` word that holds them in memory.
fn pack_u32_pair(first: u32, second: u32) -> u64 {
    let mut bytes = [0u8; 8];
    bytes[..4].copy_from_slice(&first.to_ne_bytes());
    bytes[4..].copy_from_slice(&second.to_ne_bytes());
    u64::from_ne_bytes(bytes)
}

/// The `u32` field stored in the first half of a `u64` word.
fn first_u32(word: u64) -> u32 {
    let bytes = word.to_ne_bytes();
    u32::from_ne_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
}

fn sys_bpf(command: libc::c_long, attr: &mut BpfAttr) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a valid, writable, fully initialised buffer of the
    // size passed; the kernel reads/writes at most that many bytes.
    let result = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            command,
            attr.as_mut_ptr(),
            std::mem::size_of::<BpfAttr>(),
        )
    };
    if result < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(result)
}

fn link_fd_by_id(link_id: u32) -> io::Result<OwnedFd> {
    let mut attr: BpfAttr = [0; 16];
    attr[0] = u64::from(link_id);
    let fd = sys_bpf(BPF_LINK_GET_FD_BY_ID, &mut attr)?;
    let fd = i32::try_from(fd).map_err(|_| io::Error::other("link fd out of range"))?;
    // SAFETY: BPF_LINK_GET_FD_BY_ID returned a new fd that only we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn xdp_link_ifindex_of(link: &OwnedFd) -> io::Result<Option<u32>> {
    let mut info = [0u64; 32];
    let mut attr: BpfAttr = [0; 16];
    // struct { u32 bpf_fd; u32 info_len; u64 info; }
    attr[0] = pack_u32_pair(link.as_raw_fd() as u32, std::mem::size_of_val(&info) as u32);
    attr[1] = info.as_mut_ptr() as u64;
    sys_bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr)?;
    // struct bpf_link_info { u32 type; u32 id; u32 prog_id; union {...} } with
    // the union (for XDP: `u32 ifindex`) at byte offset 16.
    if first_u32(info[0]) != BPF_LINK_TYPE_XDP {
        return Ok(None);
    }
    Ok(Some(first_u32(info[2])))
}

/// Forcibly detaches the XDP BPF link `link_id` if it is attached to
/// `ifindex`; returns whether it was. Works on links held open by other
/// owners (a leaked fd, a pin, a process that has not exited yet).
pub(crate) fn force_detach_xdp_link(link_id: u32, ifindex: u32) -> io::Result<bool> {
    let link = link_fd_by_id(link_id)?;
    if xdp_link_ifindex_of(&link)? != Some(ifindex) {
        return Ok(false);
    }
    let mut attr: BpfAttr = [0; 16];
    attr[0] = u64::from(link.as_raw_fd() as u32);
    sys_bpf(BPF_LINK_DETACH, &mut attr)?;
    Ok(true)
}

/// Resolves an interface name in the calling thread's network namespace.
pub(crate) fn interface_index(name: &str) -> io::Result<u32> {
    let c_name = std::ffi::CString::new(name)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "interface name contains NUL"))?;
    // SAFETY: `c_name` is a valid NUL-terminated string that outlives the call.
    let index = unsafe { libc::if_nametoindex(c_name.as_ptr()) };
    if index == 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(index)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netlink_attributes_round_trip_including_nesting() {
        let mut inner = Vec::new();
        push_attr(&mut inner, IFLA_XDP_ATTACHED, &[XDP_ATTACHED_DRV]);
        push_attr(&mut inner, IFLA_XDP_PROG_ID, &42u32.to_ne_bytes());
        let mut outer = Vec::new();
        push_attr(&mut outer, 3, b"gw0\0");
        push_attr(&mut outer, IFLA_XDP | NLA_F_NESTED, &inner);
        let found: Vec<u16> = attrs(&outer).map(|(kind, _)| kind).collect();
        assert_eq!(found, vec![3, IFLA_XDP]);
        let (_, xdp) = attrs(&outer).nth(1).unwrap();
        let nested: Vec<(u16, Vec<u8>)> = attrs(xdp).map(|(k, v)| (k, v.to_vec())).collect();
        assert_eq!(nested[0], (IFLA_XDP_ATTACHED, vec![XDP_ATTACHED_DRV]));
        assert_eq!(read_u32(&nested[1].1), Some(42));
    }

    #[test]
    fn truncated_attributes_stop_parsing() {
        let mut data = Vec::new();
        push_attr(&mut data, 1, &7u32.to_ne_bytes());
        data.truncate(6);
        assert_eq!(attrs(&data).count(), 0);
    }

    #[test]
    fn u32_pairs_pack_in_memory_order() {
        let word = pack_u32_pair(7, 9);
        assert_eq!(first_u32(word), 7);
        let bytes = word.to_ne_bytes();
        assert_eq!(
            u32::from_ne_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]),
            9
        );
    }
}
