//! Step 9's wire: HTTP/1.1 towards a source, spoken by the calling task itself.
//!
//! hyper's client connection runs in a task of its own and hands each call over through
//! channels: the request to the connection's task, the answer's head and then its body back,
//! two tasks woken where one would do. On the data plane that task alone cost about 12.5
//! thousand instructions of 90.6 thousand a call (`load-tests/instructions.py`). A call to a
//! source is one request and one answer on a connection nothing else uses meanwhile, so here
//! the calling task writes the request (prepared whole by the caller, one write) and reads the
//! answer itself: httparse for its head, its body taken from the read buffer.
//!
//! What is understood of an answer: interim (1xx) answers are skipped; the body is framed by
//! `Transfer-Encoding: chunked` (its last coding), by `Content-Length`, or by the connection's
//! end, and is absent for 204, 304 and an answer to HEAD. The connection carries another call
//! only if the answer was framed by its length or chunks, is HTTP/1.1 without `Connection:
//! close` (or HTTP/1.0 with `keep-alive`), and the source sent nothing after it. Anything
//! else (a head that is not HTTP, conflicting lengths, a body beyond the caller's limit, an end
//! before the answer is whole) is an error, and the connection is dropped with it.

use std::io::{self, Write as _};
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderValue, StatusCode};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_util::either::Either;

/// The most header lines an answer may have.
const MAX_HEADERS: usize = 64;
/// The longest an answer's head (or a chunk's size line, or its trailers) may be.
const MAX_HEAD: usize = 64 * 1024;
/// What a read asks for at least.
const READ_AT_LEAST: usize = 8 * 1024;

/// A connection's transport: TCP (`Left`), or TLS over it (`Right`).
pub type Io = Either<TcpStream, Box<tokio_rustls::client::TlsStream<TcpStream>>>;

/// Why a call got no (whole) answer.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The request could not be written whole: the source cannot have read it.
    #[error("writing the request: {0}")]
    Write(io::Error),
    #[error("reading the answer: {0}")]
    Read(io::Error),
    #[error("the connection ended before any answer")]
    Unanswered,
    #[error("the connection ended before the answer was whole")]
    Incomplete,
    #[error("the answer is not HTTP/1.1: {0}")]
    Malformed(&'static str),
    #[error("the answer's body exceeds {0} bytes")]
    TooLarge(usize),
}

/// An answer read whole.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub content_type: Option<HeaderValue>,
    pub body: Bytes,
}

/// How an answer's body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Empty,
    Length(u64),
    Chunked,
    Close,
}

/// What the caller needs of an answer's head, read out of the buffer it was parsed from.
struct Head {
    len: usize,
    status: StatusCode,
    content_type: Option<HeaderValue>,
    framing: Framing,
    keep_alive: bool,
}

/// One HTTP/1.1 connection to a source, used by one call at a time.
#[derive(Debug)]
pub struct Conn {
    io: Io,
    buf: BytesMut,
}

impl Conn {
    pub fn new(io: Io) -> Self {
        Conn { io, buf: BytesMut::new() }
    }

    /// Whether an idle connection can carry a call: the source has neither closed it nor sent
    /// anything on it. Looks without waiting (nothing to read is the good case).
    pub fn is_open(&mut self) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        let mut byte = [0u8; 1];
        let mut read = ReadBuf::new(&mut byte);
        let mut cx = Context::from_waker(Waker::noop());
        match Pin::new(&mut self.io).poll_read(&mut cx, &mut read) {
            Poll::Pending => true,
            // Kept, so that the connection stays not open when looked at again.
            Poll::Ready(Ok(())) if !read.filled().is_empty() => {
                self.buf.extend_from_slice(read.filled());
                false
            }
            Poll::Ready(_) => false,
        }
    }

    /// Writes `request` (head and body, as they go on the wire) and reads its answer, whose
    /// body may hold at most `limit` bytes. `head_request`: the request's method is HEAD, whose
    /// answer has no body. Returns the answer and whether the connection can carry another call.
    pub async fn call(
        &mut self,
        request: &[u8],
        head_request: bool,
        limit: usize,
    ) -> Result<(Answer, bool), CallError> {
        self.io.write_all(request).await.map_err(CallError::Write)?;
        self.io.flush().await.map_err(CallError::Write)?;
        let head = self.head().await?;
        self.buf.advance(head.len);
        let framing = if head_request { Framing::Empty } else { head.framing };
        let body = match framing {
            Framing::Empty => Bytes::new(),
            Framing::Length(n) => self.length(n, limit).await?,
            Framing::Chunked => self.chunked(limit).await?,
            Framing::Close => self.until_closed(limit).await?,
        };
        // Bytes after the answer were never asked for: the connection is not trusted again.
        let reusable = head.keep_alive && framing != Framing::Close && self.buf.is_empty();
        Ok((Answer { status: head.status, content_type: head.content_type, body }, reusable))
    }

    /// Reads more into the buffer; `Ok(0)` at the connection's end.
    async fn fill(&mut self, at_least: usize) -> Result<usize, CallError> {
        self.buf.reserve(at_least.max(READ_AT_LEAST));
        self.io.read_buf(&mut self.buf).await.map_err(CallError::Read)
    }

    /// The answer's head, interim answers skipped.
    async fn head(&mut self) -> Result<Head, CallError> {
        loop {
            if !self.buf.is_empty() {
                match parse_head(&self.buf)? {
                    Some(Parsed::Interim(n)) => {
                        self.buf.advance(n);
                        continue;
                    }
                    Some(Parsed::Final(head)) => return Ok(head),
                    None if self.buf.len() > MAX_HEAD => return Err(CallError::Malformed("a head longer than 64 KiB")),
                    None => {}
                }
            }
            if self.fill(0).await? == 0 {
                return Err(if self.buf.is_empty() { CallError::Unanswered } else { CallError::Incomplete });
            }
        }
    }

    async fn length(&mut self, n: u64, limit: usize) -> Result<Bytes, CallError> {
        let n = usize::try_from(n).ok().filter(|n| *n <= limit).ok_or(CallError::TooLarge(limit))?;
        while self.buf.len() < n {
            if self.fill(n - self.buf.len()).await? == 0 {
                return Err(CallError::Incomplete);
            }
        }
        Ok(self.buf.split_to(n).freeze())
    }

    async fn chunked(&mut self, limit: usize) -> Result<Bytes, CallError> {
        let mut body = BytesMut::new();
        loop {
            let (used, size) = loop {
                match httparse::parse_chunk_size(&self.buf) {
                    Ok(httparse::Status::Complete(found)) => break found,
                    Ok(httparse::Status::Partial) if self.buf.len() > MAX_HEAD => {
                        return Err(CallError::Malformed("a chunk size line longer than 64 KiB"));
                    }
                    Ok(httparse::Status::Partial) => {}
                    Err(_) => return Err(CallError::Malformed("a chunk size that is not hexadecimal")),
                }
                if self.fill(0).await? == 0 {
                    return Err(CallError::Incomplete);
                }
            };
            self.buf.advance(used);
            if size == 0 {
                self.trailers().await?;
                return Ok(body.freeze());
            }
            let size = usize::try_from(size)
                .ok()
                .filter(|s| body.len().checked_add(*s).is_some_and(|total| total <= limit))
                .ok_or(CallError::TooLarge(limit))?;
            while self.buf.len() < size + 2 {
                if self.fill(size + 2 - self.buf.len()).await? == 0 {
                    return Err(CallError::Incomplete);
                }
            }
            if &self.buf[size..size + 2] != b"\r\n" {
                return Err(CallError::Malformed("a chunk not followed by CRLF"));
            }
            body.extend_from_slice(&self.buf[..size]);
            self.buf.advance(size + 2);
        }
    }

    /// The trailer lines after the last chunk, up to the empty line; not kept.
    async fn trailers(&mut self) -> Result<(), CallError> {
        let mut read = 0;
        loop {
            match self.buf.windows(2).position(|w| w == b"\r\n") {
                Some(0) => {
                    self.buf.advance(2);
                    return Ok(());
                }
                Some(line) => {
                    read += line + 2;
                    self.buf.advance(line + 2);
                }
                None if read + self.buf.len() > MAX_HEAD => {
                    return Err(CallError::Malformed("trailers longer than 64 KiB"));
                }
                None => {
                    if self.fill(0).await? == 0 {
                        return Err(CallError::Incomplete);
                    }
                }
            }
        }
    }

    async fn until_closed(&mut self, limit: usize) -> Result<Bytes, CallError> {
        loop {
            if self.buf.len() > limit {
                return Err(CallError::TooLarge(limit));
            }
            if self.fill(0).await? == 0 {
                return Ok(self.buf.split().freeze());
            }
        }
    }
}

enum Parsed {
    /// An interim (1xx) answer of this many bytes.
    Interim(usize),
    Final(Head),
}

/// Parses an answer's head at the start of `buf`; `None` while it is incomplete.
fn parse_head(buf: &[u8]) -> Result<Option<Parsed>, CallError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(CallError::Malformed("more than 64 header lines")),
        Err(_) => return Err(CallError::Malformed("a head that does not parse")),
    };
    let code = resp.code.unwrap_or(0);
    let status = StatusCode::from_u16(code).map_err(|_| CallError::Malformed("a status outside 100–999"))?;
    if status == StatusCode::SWITCHING_PROTOCOLS {
        return Err(CallError::Malformed("101 Switching Protocols"));
    }
    if status.is_informational() {
        return Ok(Some(Parsed::Interim(len)));
    }
    let http11 = resp.version == Some(1);
    let mut keep_alive = http11;
    let mut length: Option<u64> = None;
    let mut transfer: Option<bool> = None;
    let mut content_type = None;
    for h in resp.headers.iter() {
        let name = h.name;
        if name.eq_ignore_ascii_case("content-length") {
            let n = std::str::from_utf8(h.value)
                .ok()
                .map(str::trim)
                .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or(CallError::Malformed("a Content-Length that is not a number"))?;
            if length.is_some_and(|l| l != n) {
                return Err(CallError::Malformed("two different Content-Lengths"));
            }
            length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            // Only the last coding counts: chunked there frames the body.
            let last = h.value.rsplit(|b| *b == b',').next().unwrap_or_default();
            transfer = Some(last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if name.eq_ignore_ascii_case("connection") {
            for token in h.value.split(|b| *b == b',').map(<[u8]>::trim_ascii) {
                if token.eq_ignore_ascii_case(b"close") {
                    keep_alive = false;
                } else if token.eq_ignore_ascii_case(b"keep-alive") && !http11 {
                    keep_alive = true;
                }
            }
        } else if name.eq_ignore_ascii_case("content-type") && content_type.is_none() {
            content_type = HeaderValue::from_bytes(h.value).ok();
        }
    }
    let framing = if status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        Framing::Empty
    } else {
        match (transfer, length) {
            (Some(true), _) => Framing::Chunked,
            // A transfer coding other than chunked last: the connection's end frames the body.
            (Some(false), _) => Framing::Close,
            (None, Some(0)) => Framing::Empty,
            (None, Some(n)) => Framing::Length(n),
            (None, None) => Framing::Close,
        }
    };
    // Both a length and a transfer coding: the message is read as chunked (RFC 9112 §6.3) and
    // the connection is not used again.
    if transfer.is_some() && length.is_some() {
        keep_alive = false;
    }
    Ok(Some(Parsed::Final(Head { len, status, content_type, framing, keep_alive })))
}

/// Appends a request's head line and `Host` to `out`.
pub fn start_request(out: &mut Vec<u8>, method: &http::Method, target: &str, host: &HeaderValue) {
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\nhost: ");
    out.extend_from_slice(host.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Appends a header line. A value holding anything but visible ASCII, spaces and tabs (a
/// control character could split it into lines) is written empty, as `http::HeaderValue`'s
/// `from_str` would refuse it.
pub fn push_header(out: &mut Vec<u8>, name: &http::HeaderName, value: &[u8]) {
    out.extend_from_slice(name.as_str().as_bytes());
    out.extend_from_slice(b": ");
    if value.iter().all(|&b| b == b'\t' || (0x20..=0x7e).contains(&b)) {
        out.extend_from_slice(value);
    }
    out.extend_from_slice(b"\r\n");
}

/// Ends a request's head with its body's length (none for an empty body of GET or HEAD) and
/// appends the body.
pub fn end_request(out: &mut Vec<u8>, method: &http::Method, body: &[u8]) {
    if !body.is_empty() || !matches!(*method, http::Method::GET | http::Method::HEAD) {
        // Writing into a vector cannot fail.
        let _ = write!(out, "content-length: {}\r\n", body.len());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use tokio::io::AsyncWriteExt as _;
    use tokio::net::TcpListener;

    use super::*;

    /// A source on a real socket that answers each request of a connection with the next of
    /// `answers` (written as given), then keeps the connection open; returns its address and
    /// the requests it read.
    async fn source(
        answers: Vec<&'static [u8]>,
    ) -> (std::net::SocketAddr, tokio::sync::mpsc::UnboundedReceiver<Vec<u8>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            let (mut tcp, _) = listener.accept().await.unwrap();
            for answer in answers {
                let mut got = Vec::new();
                let mut buf = [0u8; 4096];
                while !ends_request(&got) {
                    let n = tcp.read(&mut buf).await.unwrap();
                    if n == 0 {
                        return;
                    }
                    got.extend_from_slice(&buf[..n]);
                }
                tx.send(got).unwrap();
                tcp.write_all(answer).await.unwrap();
            }
            // Kept open until the client goes.
            let _ = tcp.read(&mut [0u8; 1]).await;
        });
        (addr, rx)
    }

    /// Whether `got` holds a whole request (its head, and as many bytes as its length says).
    fn ends_request(got: &[u8]) -> bool {
        let mut headers = [httparse::EMPTY_HEADER; 16];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(got) {
            Ok(httparse::Status::Complete(n)) => {
                let len = req
                    .headers
                    .iter()
                    .find(|h| h.name == "content-length")
                    .map_or(0, |h| std::str::from_utf8(h.value).unwrap().parse::<usize>().unwrap());
                got.len() >= n + len
            }
            _ => false,
        }
    }

    async fn conn(addr: std::net::SocketAddr) -> Conn {
        Conn::new(Either::Left(TcpStream::connect(addr).await.unwrap()))
    }

    fn request(body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let method = if body.is_empty() { http::Method::GET } else { http::Method::POST };
        start_request(&mut out, &method, "/answer?x=1", &HeaderValue::from_static("source.test:8080"));
        push_header(&mut out, &http::HeaderName::from_static("x-request-id"), b"r-1");
        push_header(&mut out, &http::HeaderName::from_static("x-purpose"), b"bad\r\nx-injected: 1");
        end_request(&mut out, &method, body);
        out
    }

    #[tokio::test]
    async fn requests_are_written_as_http_1_1_with_their_length() {
        let (addr, mut seen) = source(vec![b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"; 2]).await;
        let mut c = conn(addr).await;
        c.call(&request(b""), false, 100).await.unwrap();
        assert_eq!(
            seen.recv().await.unwrap(),
            b"GET /answer?x=1 HTTP/1.1\r\nhost: source.test:8080\r\nx-request-id: r-1\r\nx-purpose: \r\n\r\n"
        );
        c.call(&request(b"{\"a\":1}"), false, 100).await.unwrap();
        let post = String::from_utf8(seen.recv().await.unwrap()).unwrap();
        assert!(post.starts_with("POST /answer?x=1 HTTP/1.1\r\n"), "{post}");
        assert!(post.ends_with("\r\ncontent-length: 7\r\n\r\n{\"a\":1}"), "{post}");
    }

    #[tokio::test]
    async fn answers_framed_by_length_chunks_or_the_end_are_read_whole() {
        let (addr, _seen) = source(vec![
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 9\r\n\r\n{\"a\":[1]}",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n4;ext=1\r\nWiki\r\n5\r\npedia\r\n0\r\nx-trailer: 1\r\n\r\n",
            b"HTTP/1.1 204 No Content\r\n\r\n",
            b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n",
        ])
        .await;
        let mut c = conn(addr).await;
        let (a, reusable) = c.call(&request(b""), false, 100).await.unwrap();
        assert_eq!(
            (a.status, a.content_type.unwrap(), &a.body[..], reusable),
            (StatusCode::OK, HeaderValue::from_static("application/json"), &b"{\"a\":[1]}"[..], true)
        );
        let (a, reusable) = c.call(&request(b""), false, 100).await.unwrap();
        assert_eq!((&a.body[..], reusable, a.content_type), (&b"Wikipedia"[..], true, None));
        let (a, reusable) = c.call(&request(b""), false, 100).await.unwrap();
        assert_eq!((a.status, a.body.len(), reusable), (StatusCode::NO_CONTENT, 0, true));
        let (a, reusable) = c.call(&request(b""), false, 100).await.unwrap();
        assert_eq!((a.status, a.body.len(), reusable), (StatusCode::NOT_FOUND, 0, true));
        assert!(c.is_open());
    }

    #[tokio::test]
    async fn an_answer_framed_by_the_end_or_saying_close_is_read_and_the_connection_not_kept() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            for answer in [&b"HTTP/1.1 200 OK\r\n\r\nto the end"[..], b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nok"]
            {
                let (mut tcp, _) = listener.accept().await.unwrap();
                let _ = tcp.read(&mut [0u8; 4096]).await.unwrap();
                tcp.write_all(answer).await.unwrap();
                drop(tcp);
            }
        });
        let (a, reusable) = conn(addr).await.call(&request(b""), false, 100).await.unwrap();
        assert_eq!((&a.body[..], reusable), (&b"to the end"[..], false));
        let (a, reusable) = conn(addr).await.call(&request(b""), false, 100).await.unwrap();
        assert_eq!((&a.body[..], reusable), (&b"ok"[..], false), "HTTP/1.0 without keep-alive");
    }

    #[tokio::test]
    async fn answers_too_large_malformed_or_cut_short_are_errors() {
        type Expected = fn(&CallError) -> bool;
        let cases: [(&[u8], Expected); 7] = [
            (b"HTTP/1.1 200 OK\r\ncontent-length: 11\r\n\r\n01234567890", |e| matches!(e, CallError::TooLarge(10))),
            (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n6\r\n012345\r\n6\r\n012345\r\n0\r\n\r\n", |e| {
                matches!(e, CallError::TooLarge(10))
            }),
            (
                b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\nabc",
                |e| matches!(e, CallError::Malformed(m) if m.contains("two different")),
            ),
            (b"HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n", |e| matches!(e, CallError::Malformed(_))),
            (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n", |e| matches!(e, CallError::Malformed(_))),
            (b"SSH-2.0-OpenSSH\r\n\r\n", |e| matches!(e, CallError::Malformed(_))),
            (b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nab", |e| matches!(e, CallError::Incomplete)),
        ];
        for (answer, expected) in cases {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            tokio::spawn(async move {
                let (mut tcp, _) = listener.accept().await.unwrap();
                let _ = tcp.read(&mut [0u8; 4096]).await.unwrap();
                tcp.write_all(answer).await.unwrap();
            });
            let e = conn(addr).await.call(&request(b""), false, 10).await.unwrap_err();
            assert!(expected(&e), "{}: {e:?}", String::from_utf8_lossy(answer));
        }
    }

    #[tokio::test]
    async fn a_connection_the_source_closed_or_wrote_on_is_not_open() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
        tokio::spawn(async move {
            let (first, _) = listener.accept().await.unwrap();
            let (mut second, _) = listener.accept().await.unwrap();
            let _ = rx.recv().await;
            drop(first);
            second.write_all(b"HTTP/1.1 200 OK\r\n").await.unwrap();
            let _ = rx.recv().await;
        });
        let (mut a, mut b) = (conn(addr).await, conn(addr).await);
        assert!(a.is_open() && b.is_open());
        tx.send(()).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while (a.is_open() || b.is_open()) && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        assert!(!a.is_open(), "closed by the source");
        assert!(!b.is_open(), "written on by the source unasked");
    }
}
