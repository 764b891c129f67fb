//! The "mirror": a server in the internet namespace that tells each client which source
//! address:port it sees — i.e. the egress address the gateway chose.
//!
//! Endpoints (TCP, minimal HTTP/1.1 with keep-alive):
//! - `GET /` → `"<src-ip>:<src-port>\n"`
//! - `POST /sha256` → hex SHA-256 of the streamed request body + `"\n"`
//! - `GET /bytes?n=N&seed=S` → N bytes of [`PatternStream`] seeded with S
//! - `GET /icmp-seen?token=HEX` → source IPv4 of the last tagged echo request with that token
//!
//! UDP: every datagram is answered with `"<src-ip>:<src-port>"`.

use std::collections::{HashMap, VecDeque};
use std::io::{self, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use sha2::{Digest, Sha256};

use egw_testbed::{LabError, Result};

use crate::http;
use crate::icmp;
use crate::pattern::PatternStream;

/// Concurrent TCP connections beyond this are refused, so a runaway client cannot exhaust
/// threads in the mirror.
pub const MAX_CONNECTIONS: usize = 256;
/// Idle/read timeout per connection. Long, because `tcp-hold` keeps a connection idle while a
/// test reconfigures the gateway.
pub const CONNECTION_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// Tokens remembered by the ICMP listener; oldest are forgotten first.
pub const MAX_REMEMBERED_ICMP_TOKENS: usize = 4096;
/// Upper bound for `GET /bytes`, to keep a typo from streaming forever.
pub const MAX_DOWNLOAD_BYTES: u64 = 64 * 1024 * 1024 * 1024;

/// Where the mirror listens.
#[derive(Debug, Clone)]
pub struct MirrorConfig {
    pub tcp: SocketAddr,
    pub udp: SocketAddr,
    /// Open a raw ICMP socket to record echo-request sources (needs CAP_NET_RAW).
    pub icmp: bool,
    /// Created once every socket is bound, so a supervisor can wait for readiness.
    pub ready_file: Option<PathBuf>,
}

#[derive(Default)]
struct IcmpSeen {
    by_token: HashMap<String, Ipv4Addr>,
    order: VecDeque<String>,
}

impl IcmpSeen {
    fn record(&mut self, token: String, source: Ipv4Addr) {
        if self.by_token.insert(token.clone(), source).is_none() {
            self.order.push_back(token);
        }
        while self.order.len() > MAX_REMEMBERED_ICMP_TOKENS {
            if let Some(oldest) = self.order.pop_front() {
                self.by_token.remove(&oldest);
            }
        }
    }
}

type SharedIcmpSeen = Arc<Mutex<IcmpSeen>>;

/// Binds all sockets, signals readiness, and serves until the process is killed. Returns only
/// on a setup error or if a listener fails irrecoverably.
pub fn serve(config: &MirrorConfig) -> Result<()> {
    let tcp = TcpListener::bind(config.tcp)
        .map_err(|source| LabError::io(format!("binding TCP {}", config.tcp), source))?;
    let udp = UdpSocket::bind(config.udp)
        .map_err(|source| LabError::io(format!("binding UDP {}", config.udp), source))?;
    let seen: SharedIcmpSeen = Arc::default();
    if config.icmp {
        let socket = socket2::Socket::new(
            socket2::Domain::IPV4,
            socket2::Type::RAW,
            Some(socket2::Protocol::ICMPV4),
        )
        .map_err(|source| LabError::io("opening raw ICMP socket", source))?;
        let seen = Arc::clone(&seen);
        thread::spawn(move || icmp_listener(socket, &seen));
    }
    thread::spawn(move || udp_echo(&udp));
    if let Some(path) = &config.ready_file {
        std::fs::write(path, b"ready\n")
            .map_err(|source| LabError::io(format!("writing {}", path.display()), source))?;
    }
    let active = Arc::new(AtomicUsize::new(0));
    for incoming in tcp.incoming() {
        let stream = match incoming {
            Ok(stream) => stream,
            // Transient accept errors (EMFILE, ECONNABORTED) must not kill the mirror.
            Err(_) => {
                thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        if active.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
            active.fetch_sub(1, Ordering::SeqCst);
            continue;
        }
        let active = Arc::clone(&active);
        let seen = Arc::clone(&seen);
        thread::spawn(move || {
            // Errors only mean the client went away or misbehaved; the connection just ends.
            let _ = serve_connection(stream, &seen);
            active.fetch_sub(1, Ordering::SeqCst);
        });
    }
    Ok(())
}

fn udp_echo(socket: &UdpSocket) {
    let mut buf = vec![0u8; 65536];
    loop {
        match socket.recv_from(&mut buf) {
            Ok((_, peer)) => {
                let _ = socket.send_to(peer.to_string().as_bytes(), peer);
            }
            Err(_) => thread::sleep(Duration::from_millis(10)),
        }
    }
}

fn icmp_listener(mut socket: socket2::Socket, seen: &SharedIcmpSeen) {
    let mut buf = vec![0u8; 65536];
    loop {
        match socket.read(&mut buf) {
            Ok(len) => {
                if let Some(echo) = icmp::parse_tagged_echo(&buf[..len]) {
                    if echo.is_request {
                        if let Ok(mut seen) = seen.lock() {
                            seen.record(icmp::hex(&echo.token), echo.source);
                        }
                    }
                }
            }
            Err(_) => thread::sleep(Duration::from_millis(10)),
        }
    }
}

fn serve_connection(stream: TcpStream, seen: &SharedIcmpSeen) -> io::Result<()> {
    stream.set_read_timeout(Some(CONNECTION_IDLE_TIMEOUT))?;
    stream.set_write_timeout(Some(CONNECTION_IDLE_TIMEOUT))?;
    stream.set_nodelay(true)?;
    let peer = stream.peer_addr()?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::with_capacity(256 * 1024, stream);
    while let Some(request) = http::read_request_head(&mut reader)? {
        let mut body = reader.by_ref().take(request.content_length);
        let outcome = respond(&request, &mut body, &mut writer, peer, seen);
        // Whatever the handler did not consume must be drained to keep the stream in sync.
        io::copy(&mut body, &mut io::sink())?;
        outcome?;
        writer.flush()?;
        if request.close {
            break;
        }
    }
    Ok(())
}

fn text_response(
    writer: &mut TcpStream,
    status: u16,
    reason: &str,
    body: &str,
    close: bool,
) -> io::Result<()> {
    http::write_response_head(writer, status, reason, body.len() as u64, close)?;
    writer.write_all(body.as_bytes())
}

fn respond(
    request: &http::RequestHead,
    body: &mut dyn Read,
    writer: &mut TcpStream,
    peer: SocketAddr,
    seen: &SharedIcmpSeen,
) -> io::Result<()> {
    let close = request.close;
    match (request.method.as_str(), http::path_of(&request.target)) {
        ("GET", "/") => text_response(writer, 200, "OK", &format!("{peer}\n"), close),
        ("POST", "/sha256") => {
            let mut hasher = Sha256::new();
            let received = io::copy(body, &mut hasher)?;
            if received != request.content_length {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "body truncated",
                ));
            }
            let digest = icmp::hex(&hasher.finalize());
            text_response(writer, 200, "OK", &format!("{digest}\n"), close)
        }
        ("GET", "/bytes") => {
            let length =
                http::query_param(&request.target, "n").and_then(|n| n.parse::<u64>().ok());
            let seed = http::query_param(&request.target, "seed")
                .map_or(Some(0), |s| s.parse::<u64>().ok());
            match (length, seed) {
                (Some(length), Some(seed)) if length <= MAX_DOWNLOAD_BYTES => {
                    http::write_response_head(writer, 200, "OK", length, close)?;
                    stream_pattern(writer, length, seed)
                }
                _ => text_response(
                    writer,
                    400,
                    "Bad Request",
                    "need n=<bytes up to 64 GiB>&seed=<u64>\n",
                    close,
                ),
            }
        }
        ("GET", "/icmp-seen") => {
            let token = http::query_param(&request.target, "token").unwrap_or_default();
            let source = seen
                .lock()
                .ok()
                .and_then(|seen| seen.by_token.get(token).copied());
            match source {
                Some(source) => text_response(
                    writer,
                    200,
                    "OK",
                    &format!("{}\n", IpAddr::V4(source)),
                    close,
                ),
                None => text_response(writer, 404, "Not Found", "token not seen\n", close),
            }
        }
        _ => text_response(writer, 404, "Not Found", "unknown endpoint\n", close),
    }
}

fn stream_pattern(writer: &mut TcpStream, length: u64, seed: u64) -> io::Result<()> {
    let mut pattern = PatternStream::new(seed);
    let mut chunk = vec![0u8; 256 * 1024];
    let mut remaining = length;
    while remaining > 0 {
        let size = chunk
            .len()
            .min(usize::try_from(remaining).unwrap_or(usize::MAX));
        pattern.fill(&mut chunk[..size]);
        writer.write_all(&chunk[..size])?;
        remaining -= size as u64;
    }
    Ok(())
}
