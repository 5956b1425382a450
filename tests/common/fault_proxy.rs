//! A fault-injecting HTTP/1.1 proxy on 127.0.0.1 between backupfs's S3 client and a real S3 server (Garage),
//! for black-box tests of retries and error handling. Faults follow a plan, request by request, so each test is
//! deterministic. Only std: one thread per client connection and a new upstream connection per request, so a
//! fault on one request never leaks into the next. Nothing is printed: requests carry signatures.

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Forward and answer normally.
    Pass,
    /// Answer 503 ServiceUnavailable without forwarding.
    Status503,
    /// Answer 503 SlowDown (what AWS sends when throttling) without forwarding.
    SlowDown,
    /// Close the connection without forwarding or answering.
    Reset,
    /// Forward (the server acts on it, e.g. stores the object), then close without answering: the client
    /// cannot tell whether the request took effect.
    ResetAfterForward,
    /// Forward, send the real head (true Content-Length) but at most half the body, then close.
    TruncateBody,
    /// Forward, wait, then answer normally: trips the client's timeouts.
    Slow(Duration),
}

/// A head (request or response, or a chunk-size line) is refused beyond this size.
const HEAD_CAP: u64 = 64 * 1024;
/// Bounds how long a connection thread can hang on a stuck upstream.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(120);

pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

struct Shared {
    upstream: String,
    /// The plan and the request count when it was set, so a new plan starts at its first entry.
    plan: Mutex<(Vec<Fault>, u64)>,
    requests: AtomicU64,
    faults: AtomicU64,
    stop: AtomicBool,
    /// Answer every DELETE 403 AccessDenied without forwarding: credentials that may add but not delete.
    refuse_deletes: AtomicBool,
    /// DELETEs refused so far.
    refused: AtomicU64,
    /// Open client connections, so that dropping the proxy can close them and end their threads.
    conns: Mutex<HashMap<u64, TcpStream>>,
}

impl FaultProxy {
    /// Listens on 127.0.0.1:<free port> and forwards to `upstream` ("127.0.0.1:PORT"). Request i gets
    /// `plan[i % plan.len()]`; an empty plan means Pass.
    pub fn start(upstream: &str, plan: Vec<Fault>) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("fault proxy: bind");
        let addr = listener.local_addr().expect("fault proxy: local address");
        let shared = Arc::new(Shared {
            upstream: upstream.to_string(),
            plan: Mutex::new((plan, 0)),
            requests: AtomicU64::new(0),
            faults: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            refuse_deletes: AtomicBool::new(false),
            refused: AtomicU64::new(0),
            conns: Mutex::new(HashMap::new()),
        });
        let s = shared.clone();
        let accept = Some(thread::spawn(move || accept_loop(listener, s)));
        FaultProxy {
            addr,
            shared,
            accept,
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests seen (read in full from a client), faulted or not.
    pub fn requests(&self) -> u64 {
        self.shared.requests.load(SeqCst)
    }

    /// Requests that got a fault other than Pass.
    pub fn faults(&self) -> u64 {
        self.shared.faults.load(SeqCst)
    }

    /// From now on, every DELETE is refused with 403 AccessDenied (as an IAM policy without s3:DeleteObject).
    pub fn refuse_deletes(&self) {
        self.shared.refuse_deletes.store(true, SeqCst);
    }

    /// DELETEs refused so far.
    pub fn refused_deletes(&self) -> u64 {
        self.shared.refused.load(SeqCst)
    }

    /// Replaces the plan; the next request gets its first entry.
    pub fn set_plan(&self, plan: Vec<Fault>) {
        *lock(&self.shared.plan) = (plan, self.shared.requests.load(SeqCst));
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, SeqCst);
        // accept() only returns on a connection: make one. If even that fails, joining could hang; don't.
        let woke = TcpStream::connect_timeout(&self.addr, Duration::from_secs(5)).is_ok();
        if let Some(h) = self.accept.take().filter(|_| woke) {
            let _ = h.join();
        }
        for c in lock(&self.shared.conns).values() {
            let _ = c.shutdown(Shutdown::Both);
        }
    }
}

/// Ignores poisoning: the proxy must outlive a panicking connection thread.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    /// Counts a request and picks its fault, under the plan's lock so that set_plan cannot split the two.
    fn next_fault(&self) -> Fault {
        let plan = lock(&self.plan);
        let i = self.requests.fetch_add(1, SeqCst) - plan.1;
        let fault = match plan.0.len() {
            0 => Fault::Pass,
            n => plan.0[(i % n as u64) as usize],
        };
        if fault != Fault::Pass {
            self.faults.fetch_add(1, SeqCst);
        }
        fault
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    for (id, conn) in listener.incoming().enumerate() {
        if shared.stop.load(SeqCst) {
            break;
        }
        let Ok((conn, clone)) = conn.and_then(|c| c.try_clone().map(|k| (c, k))) else {
            thread::sleep(Duration::from_millis(10)); // e.g. out of descriptors: don't spin
            continue;
        };
        lock(&shared.conns).insert(id as u64, clone);
        let s = shared.clone();
        let spawned = thread::Builder::new().spawn(move || {
            let _ = serve(conn, &s); // an error ends this connection only
            lock(&s.conns).remove(&(id as u64));
        });
        if spawned.is_err() {
            lock(&shared.conns).remove(&(id as u64));
        }
    }
}

/// Serves one client connection: requests one at a time (keep-alive, no pipelining), each with its fault.
fn serve(client: TcpStream, shared: &Shared) -> io::Result<()> {
    let mut out = client.try_clone()?;
    let mut input = BufReader::new(client);
    while let Some(req) = read_request(&mut input, &mut out)? {
        let fault = shared.next_fault();
        let close = req.start.ends_with("HTTP/1.0") || req.has("connection", "close");
        let head_only = req.start.starts_with("HEAD ");
        let denied = req.start.starts_with("DELETE ") && shared.refuse_deletes.load(SeqCst);
        if denied {
            shared.refused.fetch_add(1, SeqCst);
        }
        let resp = match fault {
            _ if denied => canned_status("AccessDenied", "HTTP/1.1 403 Forbidden"),
            Fault::Status503 => canned("ServiceUnavailable"),
            Fault::SlowDown => canned("SlowDown"),
            Fault::Reset => return hang_up(&out),
            _ => forward(&shared.upstream, &req, head_only)?,
        };
        let mut bytes = resp.head_bytes(close);
        match fault {
            Fault::ResetAfterForward => return hang_up(&out),
            Fault::TruncateBody if resp.body.is_empty() => return hang_up(&out),
            Fault::TruncateBody => {
                bytes.extend_from_slice(&resp.body[..resp.body.len() / 2]);
                let _ = out.write_all(&bytes);
                return hang_up(&out);
            }
            Fault::Slow(d) => thread::sleep(d),
            _ => {}
        }
        if !head_only {
            bytes.extend_from_slice(&resp.body); // a HEAD answer has no body, whatever its Content-Length
        }
        out.write_all(&bytes)?; // fails if the client gave up meanwhile: ends the connection
        if close {
            return hang_up(&out);
        }
    }
    Ok(())
}

/// Closes both directions: the client reads EOF (or gets a reset on its next write).
fn hang_up(out: &TcpStream) -> io::Result<()> {
    let _ = out.shutdown(Shutdown::Both);
    Ok(())
}

/// An HTTP message; header values are kept verbatim (all after the colon) because the request is signed.
struct Message {
    start: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Message {
    fn new(start: String, headers: Vec<(String, String)>, body: Vec<u8>) -> Message {
        Message {
            start,
            headers,
            body,
        }
    }

    fn header(&self, name: &str) -> Option<&str> {
        let mut found = self
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name));
        found.next().map(|(_, v)| v.trim())
    }

    /// Whether header `name` has `token` in its value, ignoring case.
    fn has(&self, name: &str, token: &str) -> bool {
        self.header(name)
            .is_some_and(|v| v.to_ascii_lowercase().contains(token))
    }

    fn remove(&mut self, name: &str) {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
    }

    /// Start line and headers, with `Connection: close` added when asked (callers removed any other).
    fn head_bytes(&self, close: bool) -> Vec<u8> {
        let mut s = format!("{}\r\n", self.start);
        for (n, v) in &self.headers {
            s.push_str(&format!("{n}:{v}\r\n"));
        }
        if close {
            s.push_str("Connection: close\r\n");
        }
        s.push_str("\r\n");
        s.into_bytes()
    }
}

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

/// Reads a head up to its empty line; None on EOF before the first byte (the peer closed an idle connection).
fn read_head(r: &mut impl BufRead) -> io::Result<Option<Message>> {
    let (mut lines, mut total) = (Vec::<String>::new(), 0);
    loop {
        let mut line = Vec::new();
        let n = r.take(HEAD_CAP - total).read_until(b'\n', &mut line)? as u64;
        if n == 0 && total == 0 {
            return Ok(None);
        }
        total += n;
        if !line.ends_with(b"\n") {
            return Err(bad("head truncated or too long"));
        }
        let text = String::from_utf8(line).map_err(|_| bad("head not UTF-8"))?;
        match text.trim_end_matches(['\r', '\n']) {
            "" if lines.is_empty() => continue, // a stray CRLF between messages is allowed
            "" => break,
            text => lines.push(text.to_string()),
        }
    }
    let start = lines.remove(0);
    let split = |l: &String| {
        l.split_once(':')
            .map(|(n, v)| (n.to_string(), v.to_string()))
    };
    let headers = lines.iter().map(split).collect::<Option<_>>();
    let headers = headers.ok_or_else(|| bad("header without colon"))?;
    Ok(Some(Message::new(start, headers, vec![])))
}

/// Reads a whole request. Answers `100 Continue` itself, so a client that waits for it sends the body at once.
fn read_request(input: &mut impl BufRead, out: &mut TcpStream) -> io::Result<Option<Message>> {
    let Some(mut m) = read_head(input)? else {
        return Ok(None);
    };
    if m.has("expect", "100-continue") {
        out.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
    }
    read_body(input, &mut m, false)?;
    Ok(Some(m))
}

/// Reads the body the headers announce into `m.body`; true if it was not framed by Content-Length.
fn read_body(r: &mut impl BufRead, m: &mut Message, until_eof: bool) -> io::Result<bool> {
    let length = m
        .header("content-length")
        .map(|v| v.parse().map_err(|_| bad("Content-Length")));
    let (body, unframed) = match (m.has("transfer-encoding", "chunked"), length) {
        (true, _) => (read_chunked(r)?, true),
        (false, Some(n)) => (read_exactly(r, n?)?, false),
        (false, None) if until_eof => (read_exactly(r, u64::MAX)?, true),
        (false, None) => (Vec::new(), false),
    };
    m.body = body;
    Ok(unframed)
}

/// Reads `n` bytes, or up to EOF for u64::MAX; reads as it goes rather than trusting `n` to allocate.
fn read_exactly(r: &mut impl BufRead, n: u64) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    r.take(n).read_to_end(&mut body)?;
    if n != u64::MAX && body.len() as u64 != n {
        return Err(bad("body shorter than its Content-Length"));
    }
    Ok(body)
}

fn read_chunked(r: &mut impl BufRead) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let mut line = String::new();
        r.take(HEAD_CAP).read_line(&mut line)?;
        let size = line.split(';').next().unwrap_or("").trim();
        match u64::from_str_radix(size, 16).map_err(|_| bad("chunk size"))? {
            0 => break,
            n => body.extend(read_exactly(r, n)?),
        }
        read_exactly(r, 2)?; // the CRLF after each chunk
    }
    loop {
        let mut trailer = String::new(); // trailers are dropped, up to the final empty line
        if r.take(HEAD_CAP).read_line(&mut trailer)? == 0 || trailer.trim().is_empty() {
            return Ok(body);
        }
    }
}

/// Sends the request upstream over a new connection (`Connection: close`, all else verbatim, including the
/// Host the client signed) and reads the whole final answer, framed by Content-Length for the client.
fn forward(upstream: &str, req: &Message, head_only: bool) -> io::Result<Message> {
    let mut up = TcpStream::connect(upstream)?;
    up.set_read_timeout(Some(UPSTREAM_TIMEOUT))?;
    up.set_write_timeout(Some(UPSTREAM_TIMEOUT))?;
    let mut sent = Message::new(req.start.clone(), req.headers.clone(), vec![]);
    sent.remove("connection");
    sent.remove("keep-alive");
    let mut bytes = sent.head_bytes(true);
    if !req.has("transfer-encoding", "chunked") {
        bytes.extend_from_slice(&req.body);
    } else {
        // Transfer-Encoding may be signed, so it stays: the body goes as one chunk.
        if !req.body.is_empty() {
            bytes.extend(format!("{:x}\r\n", req.body.len()).bytes());
            bytes.extend(req.body.iter().chain(b"\r\n"));
        }
        bytes.extend(b"0\r\n\r\n");
    }
    up.write_all(&bytes)?;
    let mut input = BufReader::new(up);
    loop {
        let mut resp = read_head(&mut input)?.ok_or_else(|| bad("upstream answered nothing"))?;
        let status = resp.start.get(9..12).unwrap_or("").to_string();
        if status.starts_with('1') {
            continue; // an interim answer, e.g. 100 Continue to a forwarded Expect
        }
        let bodiless = head_only || status == "204" || status == "304";
        if !bodiless && read_body(&mut input, &mut resp, true)? {
            resp.remove("transfer-encoding");
            let length = format!(" {}", resp.body.len());
            resp.headers.push(("Content-Length".into(), length));
        }
        // The proxy decides the client connection's fate itself.
        resp.remove("connection");
        resp.remove("keep-alive");
        return Ok(resp);
    }
}

/// An S3 error answer, as an unavailable or throttling server sends it.
fn canned(code: &str) -> Message {
    canned_status(code, "HTTP/1.1 503 Service Unavailable")
}

fn canned_status(code: &str, start: &str) -> Message {
    let body = format!("<Error><Code>{code}</Code><Message>injected</Message></Error>");
    let headers = vec![
        ("Content-Type".to_string(), " application/xml".to_string()),
        ("Content-Length".to_string(), format!(" {}", body.len())),
    ];
    Message::new(start.to_string(), headers, body.into_bytes())
}
