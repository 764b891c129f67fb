//! Client side of the mirror, run inside a pod namespace (`ip netns exec <pod> egw-lab probe ...`).
//! Each probe reports what the mirror saw, i.e. the post-NAT source.

use std::io::{self, BufRead, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use egw_testbed::{LabError, Result};

use crate::http::Client;
use crate::icmp;
use crate::pattern::PatternStream;

/// Bound on every connect/read/write a probe does.
pub const PROBE_IO_TIMEOUT: Duration = Duration::from_secs(10);
/// UDP and ICMP are lossy; this many attempts before declaring failure.
pub const DATAGRAM_ATTEMPTS: u32 = 5;
const DATAGRAM_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);

fn parse_seen(text: &str, context: &str) -> Result<SocketAddr> {
    text.trim().parse().map_err(|_| LabError::BadOutput {
        command: context.to_owned(),
        output: text.to_owned(),
    })
}

/// One TCP connection, `GET /`, returns the source the mirror saw.
pub fn tcp_source_seen(mirror: SocketAddr) -> Result<SocketAddr> {
    let mut client = Client::connect(mirror, PROBE_IO_TIMEOUT, PROBE_IO_TIMEOUT)?;
    let body = client.get_text("/")?;
    parse_seen(&body, "GET /")
}

/// Arbitrary `GET` returning the text body.
pub fn http_get(mirror: SocketAddr, target: &str) -> Result<String> {
    Client::connect(mirror, PROBE_IO_TIMEOUT, PROBE_IO_TIMEOUT)?.get_text(target)
}

/// One UDP datagram (retried on loss), returns the source the mirror saw.
pub fn udp_source_seen(mirror: SocketAddr) -> Result<SocketAddr> {
    let context = |what: &str| format!("UDP probe to {mirror}: {what}");
    let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))
        .map_err(|source| LabError::io(context("bind"), source))?;
    socket
        .connect(mirror)
        .and_then(|()| socket.set_read_timeout(Some(DATAGRAM_ATTEMPT_TIMEOUT)))
        .map_err(|source| LabError::io(context("connect"), source))?;
    let mut buf = [0u8; 512];
    let mut last_error = None;
    for _ in 0..DATAGRAM_ATTEMPTS {
        socket
            .send(b"egw-lab udp probe")
            .map_err(|source| LabError::io(context("send"), source))?;
        match socket.recv(&mut buf) {
            Ok(len) => return parse_seen(&String::from_utf8_lossy(&buf[..len]), "UDP reply"),
            Err(error) => last_error = Some(error),
        }
    }
    Err(LabError::ProbeFailed(format!(
        "no UDP reply from {mirror} after {DATAGRAM_ATTEMPTS} attempts: {}",
        last_error.map_or_else(String::new, |error| error.to_string())
    )))
}

/// Sends UDP datagrams to a port nobody listens on and reports whether the ICMP port-unreachable
/// the target sends back reached this socket. A connected UDP socket only sees
/// `ECONNREFUSED` when the error arrives with a quote that matches it, so through a NAT this
/// proves the ICMP error was translated back (RFC 5508), quoted header included.
pub fn udp_refused(target: SocketAddr) -> Result<bool> {
    let context = |what: &str| format!("UDP refusal probe to {target}: {what}");
    let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))
        .map_err(|source| LabError::io(context("bind"), source))?;
    socket
        .connect(target)
        .and_then(|()| socket.set_read_timeout(Some(DATAGRAM_ATTEMPT_TIMEOUT)))
        .map_err(|source| LabError::io(context("connect"), source))?;
    let mut buf = [0u8; 64];
    for _ in 0..DATAGRAM_ATTEMPTS {
        match socket.send(b"egw-lab closed-port probe") {
            Err(error) if error.kind() == std::io::ErrorKind::ConnectionRefused => return Ok(true),
            Err(error) => return Err(LabError::io(context("send"), error)),
            Ok(_) => {}
        }
        match socket.recv(&mut buf) {
            Err(error) if error.kind() == std::io::ErrorKind::ConnectionRefused => return Ok(true),
            Err(_) | Ok(_) => {}
        }
    }
    Ok(false)
}

/// Sends one UDP datagram from `bind` (address and port chosen by the caller, e.g. to pose as a
/// known remote endpoint) to `target`, expecting nothing back.
pub fn udp_send(bind: SocketAddr, target: SocketAddr) -> Result<()> {
    let socket =
        UdpSocket::bind(bind).map_err(|source| LabError::io(format!("binding {bind}"), source))?;
    socket
        .send_to(b"egw-lab unsolicited", target)
        .map_err(|source| LabError::io(format!("sending to {target}"), source))?;
    Ok(())
}

/// Result of an ICMP echo probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IcmpEcho {
    /// Source of the echo reply (should be the mirror).
    pub reply_from: Ipv4Addr,
    /// Hex token carried in the payload; ask the mirror `GET /icmp-seen?token=...` for the
    /// source address it saw.
    pub token: String,
}

/// Sends tagged echo requests until a reply with our token arrives.
pub fn icmp_echo(target: Ipv4Addr) -> Result<IcmpEcho> {
    let context = |what: &str| format!("ICMP probe to {target}: {what}");
    let mut socket = socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::RAW,
        Some(socket2::Protocol::ICMPV4),
    )
    .map_err(|source| LabError::io(context("open raw socket"), source))?;
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .map_err(|source| LabError::io(context("set timeout"), source))?;
    let token = icmp::random_token();
    let identifier = u16::from_le_bytes([token[0], token[1]]);
    let destination = socket2::SockAddr::from(SocketAddrV4::new(target, 0));
    let mut buf = vec![0u8; 65536];
    for sequence in 1..=DATAGRAM_ATTEMPTS {
        let request = icmp::echo_request(identifier, sequence as u16, &token);
        socket
            .send_to(&request, &destination)
            .map_err(|source| LabError::io(context("send"), source))?;
        let deadline = Instant::now() + DATAGRAM_ATTEMPT_TIMEOUT;
        while Instant::now() < deadline {
            let len = match socket.read(&mut buf) {
                Ok(len) => len,
                Err(error)
                    if matches!(
                        error.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    continue
                }
                Err(source) => return Err(LabError::io(context("receive"), source)),
            };
            if let Some(echo) = icmp::parse_tagged_echo(&buf[..len]) {
                if !echo.is_request && echo.token == token {
                    return Ok(IcmpEcho {
                        reply_from: echo.source,
                        token: icmp::hex(&token),
                    });
                }
            }
        }
    }
    Err(LabError::ProbeFailed(format!(
        "no ICMP echo reply from {target} after {DATAGRAM_ATTEMPTS} attempts"
    )))
}

/// Outcome of an upload: our hash of what we sent and the mirror's hash of what it received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadReport {
    pub bytes: u64,
    pub local_sha256: String,
    pub remote_sha256: String,
}

impl UploadReport {
    pub fn intact(&self) -> bool {
        self.local_sha256 == self.remote_sha256
    }
}

/// Streams `bytes` of pattern `seed` to `POST /sha256` over one connection.
pub fn tcp_upload(mirror: SocketAddr, bytes: u64, seed: u64) -> Result<UploadReport> {
    let mut client = Client::connect(mirror, PROBE_IO_TIMEOUT, PROBE_IO_TIMEOUT)?;
    let mut pattern = PatternStream::new(seed);
    let mut hasher = Sha256::new();
    let remote = client.post_streaming("/sha256", bytes, &mut |chunk| {
        pattern.fill(chunk);
        hasher.update(&*chunk);
    })?;
    Ok(UploadReport {
        bytes,
        local_sha256: icmp::hex(&hasher.finalize()),
        remote_sha256: remote.trim().to_owned(),
    })
}

/// Compares a received stream against the expected pattern as it arrives.
struct PatternChecker {
    expected: PatternStream,
    scratch: Vec<u8>,
    first_mismatch: Option<u64>,
    offset: u64,
}

impl Write for PatternChecker {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.scratch.resize(buf.len(), 0);
        self.expected.fill(&mut self.scratch);
        if self.first_mismatch.is_none() {
            if let Some(index) = buf
                .iter()
                .zip(&self.scratch)
                .position(|(got, want)| got != want)
            {
                self.first_mismatch = Some(self.offset + index as u64);
            }
        }
        self.offset += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Downloads `bytes` of pattern `seed` from `GET /bytes` and verifies every byte.
pub fn tcp_download(mirror: SocketAddr, bytes: u64, seed: u64) -> Result<u64> {
    let mut client = Client::connect(mirror, PROBE_IO_TIMEOUT, PROBE_IO_TIMEOUT)?;
    let mut checker = PatternChecker {
        expected: PatternStream::new(seed),
        scratch: Vec::new(),
        first_mismatch: None,
        offset: 0,
    };
    let received = client.get_streaming(&format!("/bytes?n={bytes}&seed={seed}"), &mut checker)?;
    match checker.first_mismatch {
        None => Ok(received),
        Some(offset) => Err(LabError::ProbeFailed(format!(
            "downloaded data differs from the pattern at byte {offset}"
        ))),
    }
}

/// Holds one TCP connection open: prints `seen=<addr>` once immediately, then once per line
/// read from `commands`, until EOF or `max_duration`. Used to show that an established
/// connection keeps its NAT mapping across gateway reconfiguration.
pub fn tcp_hold(
    mirror: SocketAddr,
    commands: &mut dyn BufRead,
    output: &mut dyn Write,
    max_queries: u32,
) -> Result<()> {
    let mut client = Client::connect(
        mirror,
        PROBE_IO_TIMEOUT,
        crate::mirror::CONNECTION_IDLE_TIMEOUT,
    )?;
    let local = client.local_addr()?;
    let write_error = |source| LabError::io("writing probe output", source);
    for query in 0..max_queries {
        let seen = parse_seen(&client.get_text("/")?, "GET /")?;
        writeln!(output, "seen={seen} local={local}")
            .and_then(|()| output.flush())
            .map_err(write_error)?;
        if query + 1 == max_queries {
            break;
        }
        let mut line = String::new();
        let read = commands
            .read_line(&mut line)
            .map_err(|source| LabError::io("reading tcp-hold commands", source))?;
        if read == 0 {
            break;
        }
    }
    Ok(())
}
