//! The control socket protocol between `vecnetd` and its clients (`vecnetctl`, `vecnet-cni`):
//! HTTP/1.1 with JSON or text bodies over a UNIX socket, one request per connection.
//!
//! Written in-house on `std` rather than with axum/hyper: the surface is five routes on a local
//! socket, and a blocking implementation keeps the CNI plugin and the CLI free of an async
//! runtime (they start, send one request and exit).

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// Largest request or response body accepted (CNI configs and `show trace` output fit).
pub const MAX_BODY: usize = 16 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub body: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("cannot reach vecnetd at {path}: {source}")]
    Connect {
        path: String,
        source: std::io::Error,
    },
    #[error("control socket I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("malformed HTTP message: {0}")]
    Malformed(String),
}

fn read_message<R: BufRead>(r: &mut R) -> Result<(String, String), ControlError> {
    let mut first = String::new();
    if r.read_line(&mut first)? == 0 {
        return Err(ControlError::Malformed("empty message".into()));
    }
    let mut len = 0usize;
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Err(ControlError::Malformed("headers not terminated".into()));
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.trim().eq_ignore_ascii_case("content-length") {
                len = v
                    .trim()
                    .parse()
                    .map_err(|_| ControlError::Malformed(format!("bad Content-Length {v:?}")))?;
            }
        }
    }
    if len > MAX_BODY {
        return Err(ControlError::Malformed(format!(
            "body of {len} bytes is too large"
        )));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)?;
    let body =
        String::from_utf8(body).map_err(|_| ControlError::Malformed("body is not UTF-8".into()))?;
    Ok((first.trim_end().to_string(), body))
}

/// Reads one request from a server-side stream (the UNIX control socket or the metrics TCP
/// listener).
pub fn read_request<S: Read>(stream: &mut S) -> Result<Request, ControlError> {
    let mut r = BufReader::new(stream);
    let (first, body) = read_message(&mut r)?;
    let mut parts = first.split_whitespace();
    let (Some(method), Some(path)) = (parts.next(), parts.next()) else {
        return Err(ControlError::Malformed(format!(
            "bad request line {first:?}"
        )));
    };
    Ok(Request {
        method: method.to_string(),
        path: path.to_string(),
        body,
    })
}

/// Writes a response and closes the exchange.
pub fn write_response<S: Write>(
    stream: &mut S,
    status: u16,
    content_type: &str,
    body: &str,
) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    };
    write!(
        stream,
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()
}

/// Sends one request and returns (status, body).
pub fn call(
    socket: &Path,
    method: &str,
    path: &str,
    body: &str,
    timeout: Duration,
) -> Result<(u16, String), ControlError> {
    let mut s = UnixStream::connect(socket).map_err(|source| ControlError::Connect {
        path: socket.display().to_string(),
        source,
    })?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: vecnetd\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    s.flush()?;
    let mut r = BufReader::new(s);
    let (first, body) = read_message(&mut r)?;
    let status = first
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| ControlError::Malformed(format!("bad status line {first:?}")))?;
    Ok((status, body))
}
