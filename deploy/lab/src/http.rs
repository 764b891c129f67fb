//! Just enough HTTP/1.1 for the mirror and its probes: Content-Length bodies only, keep-alive,
//! a hard cap on header size. Both ends are ours, so anything outside that subset is rejected
//! rather than half-supported.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use egw_testbed::{LabError, Result};

/// Request line plus all headers may not exceed this; protects the mirror from unbounded reads.
pub const MAX_HEAD_BYTES: u64 = 16 * 1024;

/// The parts of a request the mirror acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    pub method: String,
    pub target: String,
    pub content_length: u64,
    pub close: bool,
}

/// The parts of a response the probes act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    pub status: u16,
    pub content_length: u64,
}

fn invalid(detail: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, detail.into())
}

/// Start line and lower-cased `(name, value)` header pairs.
type Head = (String, Vec<(String, String)>);

/// Reads request/status line and headers. Returns the first line and `(name, value)` pairs;
/// `Ok(None)` if the peer closed the connection cleanly before sending anything.
fn read_head<R: BufRead>(reader: &mut R) -> io::Result<Option<Head>> {
    let mut budget = MAX_HEAD_BYTES;
    let mut first_line: Option<String> = None;
    let mut headers = Vec::new();
    loop {
        let mut line = Vec::new();
        let read = reader.by_ref().take(budget).read_until(b'\n', &mut line)?;
        if read == 0 {
            if first_line.is_none() {
                return Ok(None);
            }
            return Err(invalid("connection closed inside the header"));
        }
        if line.last() != Some(&b'\n') {
            return Err(invalid(format!(
                "header larger than {MAX_HEAD_BYTES} bytes"
            )));
        }
        budget -= read as u64;
        let text = String::from_utf8(line).map_err(|_| invalid("header is not UTF-8"))?;
        let text = text.trim_end_matches(['\r', '\n']);
        match &first_line {
            None => first_line = Some(text.to_owned()),
            Some(_) if text.is_empty() => break,
            Some(_) => {
                let (name, value) = text
                    .split_once(':')
                    .ok_or_else(|| invalid(format!("malformed header line {text:?}")))?;
                headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
            }
        }
    }
    Ok(first_line.map(|line| (line, headers)))
}

fn content_length(headers: &[(String, String)]) -> io::Result<u64> {
    if headers
        .iter()
        .any(|(name, value)| name == "transfer-encoding" && !value.eq_ignore_ascii_case("identity"))
    {
        return Err(invalid(
            "transfer-encoding is not supported; send Content-Length",
        ));
    }
    match headers.iter().find(|(name, _)| name == "content-length") {
        None => Ok(0),
        Some((_, value)) => value
            .parse()
            .map_err(|_| invalid(format!("bad content-length {value:?}"))),
    }
}

/// Reads one request head; `Ok(None)` on clean EOF between requests.
pub fn read_request_head<R: BufRead>(reader: &mut R) -> io::Result<Option<RequestHead>> {
    let Some((line, headers)) = read_head(reader)? else {
        return Ok(None);
    };
    let mut parts = line.split_whitespace();
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(invalid(format!("malformed request line {line:?}")));
    };
    let close_requested = headers
        .iter()
        .any(|(name, value)| name == "connection" && value.eq_ignore_ascii_case("close"));
    Ok(Some(RequestHead {
        method: method.to_owned(),
        target: target.to_owned(),
        content_length: content_length(&headers)?,
        close: close_requested || version == "HTTP/1.0",
    }))
}

/// Reads one response head.
pub fn read_response_head<R: BufRead>(reader: &mut R) -> io::Result<ResponseHead> {
    let (line, headers) =
        read_head(reader)?.ok_or_else(|| invalid("connection closed before the response"))?;
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| invalid(format!("malformed status line {line:?}")))?;
    Ok(ResponseHead {
        status,
        content_length: content_length(&headers)?,
    })
}

/// Writes a response head with an explicit Content-Length.
pub fn write_response_head<W: Write>(
    writer: &mut W,
    status: u16,
    reason: &str,
    content_length: u64,
    close: bool,
) -> io::Result<()> {
    let connection = if close { "close" } else { "keep-alive" };
    write!(
        writer,
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {content_length}\r\nConnection: {connection}\r\n\r\n"
    )
}

/// Splits `path?query` and returns the value of `key` in the query, if present.
pub fn query_param<'a>(target: &'a str, key: &str) -> Option<&'a str> {
    let (_, query) = target.split_once('?')?;
    query.split('&').find_map(|pair| {
        let (name, value) = pair.split_once('=')?;
        (name == key).then_some(value)
    })
}

/// The path part of a request target.
pub fn path_of(target: &str) -> &str {
    target.split_once('?').map_or(target, |(path, _)| path)
}

/// A keep-alive client connection to the mirror. One connection = one NAT mapping, which is
/// what `tcp-hold` relies on.
pub struct Client {
    peer: SocketAddr,
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

/// Largest body the client will buffer in memory (`GET /` etc.); streaming endpoints bypass it.
const MAX_BUFFERED_BODY: u64 = 1024 * 1024;

impl Client {
    /// Connects within `connect_timeout`; every later read/write may block `io_timeout`.
    pub fn connect(
        peer: SocketAddr,
        connect_timeout: Duration,
        io_timeout: Duration,
    ) -> Result<Self> {
        let context = || format!("connecting to {peer}");
        let stream = TcpStream::connect_timeout(&peer, connect_timeout)
            .map_err(|source| LabError::io(context(), source))?;
        stream
            .set_read_timeout(Some(io_timeout))
            .and_then(|()| stream.set_write_timeout(Some(io_timeout)))
            .map_err(|source| LabError::io(context(), source))?;
        let writer = stream
            .try_clone()
            .map_err(|source| LabError::io(context(), source))?;
        Ok(Client {
            peer,
            reader: BufReader::with_capacity(64 * 1024, stream),
            writer,
        })
    }

    /// Local address of this connection (the pre-NAT source).
    pub fn local_addr(&self) -> Result<SocketAddr> {
        self.writer
            .local_addr()
            .map_err(|source| LabError::io("reading local address", source))
    }

    fn http_error(&self, target: &str, detail: impl std::fmt::Display) -> LabError {
        LabError::Http {
            context: format!("{target} on {}", self.peer),
            detail: detail.to_string(),
        }
    }

    /// Sends a request head (and nothing else).
    fn send_head(&mut self, method: &str, target: &str, content_length: u64) -> Result<()> {
        let head = format!(
            "{method} {target} HTTP/1.1\r\nHost: {}\r\nContent-Length: {content_length}\r\n\r\n",
            self.peer
        );
        self.writer
            .write_all(head.as_bytes())
            .map_err(|error| self.http_error(target, error))
    }

    fn expect_ok(&mut self, target: &str) -> Result<ResponseHead> {
        let head =
            read_response_head(&mut self.reader).map_err(|error| self.http_error(target, error))?;
        if head.status != 200 {
            let body = self.read_small_body(target, head.content_length)?;
            return Err(self.http_error(target, format!("status {}: {}", head.status, body.trim())));
        }
        Ok(head)
    }

    fn read_small_body(&mut self, target: &str, length: u64) -> Result<String> {
        if length > MAX_BUFFERED_BODY {
            return Err(self.http_error(target, format!("body of {length} bytes is too large")));
        }
        let mut body = Vec::new();
        self.reader
            .by_ref()
            .take(length)
            .read_to_end(&mut body)
            .map_err(|error| self.http_error(target, error))?;
        if body.len() as u64 != length {
            return Err(self.http_error(target, "response body truncated"));
        }
        Ok(String::from_utf8_lossy(&body).into_owned())
    }

    /// `GET target`, returning the (small, text) body.
    pub fn get_text(&mut self, target: &str) -> Result<String> {
        self.send_head("GET", target, 0)?;
        let head = self.expect_ok(target)?;
        self.read_small_body(target, head.content_length)
    }

    /// `GET target`, streaming the body into `sink`; returns the number of bytes received.
    pub fn get_streaming(&mut self, target: &str, sink: &mut dyn Write) -> Result<u64> {
        self.send_head("GET", target, 0)?;
        let head = self.expect_ok(target)?;
        let copied = io::copy(&mut self.reader.by_ref().take(head.content_length), sink)
            .map_err(|error| self.http_error(target, error))?;
        if copied != head.content_length {
            return Err(self.http_error(
                target,
                format!("body truncated: {copied} of {} bytes", head.content_length),
            ));
        }
        Ok(copied)
    }

    /// `POST target` with exactly `length` bytes produced by `fill`, returning the text body.
    pub fn post_streaming(
        &mut self,
        target: &str,
        length: u64,
        fill: &mut dyn FnMut(&mut [u8]),
    ) -> Result<String> {
        self.send_head("POST", target, length)?;
        let mut chunk = vec![0u8; 256 * 1024];
        let mut remaining = length;
        while remaining > 0 {
            let size = chunk
                .len()
                .min(usize::try_from(remaining).unwrap_or(usize::MAX));
            fill(&mut chunk[..size]);
            self.writer
                .write_all(&chunk[..size])
                .map_err(|error| self.http_error(target, error))?;
            remaining -= size as u64;
        }
        let head = self.expect_ok(target)?;
        self.read_small_body(target, head.content_length)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_request_with_body_length() {
        let raw = b"POST /sha256 HTTP/1.1\r\nHost: x\r\nContent-Length: 42\r\n\r\nrest";
        let mut reader = &raw[..];
        let head = read_request_head(&mut reader).unwrap().unwrap();
        assert_eq!(head.method, "POST");
        assert_eq!(head.target, "/sha256");
        assert_eq!(head.content_length, 42);
        assert!(!head.close);
        assert_eq!(reader, b"rest");
    }

    #[test]
    fn clean_eof_is_not_an_error() {
        let mut reader = &b""[..];
        assert_eq!(read_request_head(&mut reader).unwrap(), None);
    }

    #[test]
    fn oversized_header_is_rejected() {
        let mut raw = b"GET / HTTP/1.1\r\nX: ".to_vec();
        raw.extend(std::iter::repeat_n(b'a', MAX_HEAD_BYTES as usize));
        raw.extend_from_slice(b"\r\n\r\n");
        let mut reader = &raw[..];
        assert!(read_request_head(&mut reader).is_err());
    }

    #[test]
    fn chunked_is_rejected() {
        let raw = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
        let mut reader = &raw[..];
        assert!(read_request_head(&mut reader).is_err());
    }

    #[test]
    fn query_parameters() {
        assert_eq!(query_param("/bytes?n=10&seed=3", "seed"), Some("3"));
        assert_eq!(query_param("/bytes?n=10", "seed"), None);
        assert_eq!(path_of("/bytes?n=10"), "/bytes");
        assert_eq!(path_of("/"), "/");
    }
}
