//! The opening handshake, server side, sans-IO (RFC 6455 §4.2): reads the
//! client's HTTP request from a buffer and decides — switch to WebSocket, or
//! answer with an HTTP status and a short body. A request that is not a
//! WebSocket upgrade never gets silence.
//!
//! | request | answer |
//! |---|---|
//! | a valid upgrade on the served path | `101 Switching Protocols` |
//! | not HTTP, HTTP/1.0, a method other than GET, no `Host`, a bad `Sec-WebSocket-Key` | `400 Bad Request` |
//! | another path | `404 Not Found` |
//! | an `Origin` the server does not allow | `403 Forbidden` |
//! | not an upgrade (a plain GET, `Upgrade: h2c`), or `Sec-WebSocket-Version` other than 13 | `426 Upgrade Required` with `Sec-WebSocket-Version: 13` |
//! | headers over the size limit | `431 Request Header Fields Too Large` |

use std::fmt;
use std::sync::Arc;

/// The most headers a handshake request may carry.
const MAX_HEADERS: usize = 64;

/// Which browser origins may open a connection (the `Origin` header), the
/// guard against cross-site WebSocket hijacking.
///
/// The default is [`AllowedOrigins::Any`]: RTM authenticates with a token
/// the page sends, not with a cookie the browser attaches by itself, so a
/// foreign page gains nothing by connecting. Restrict it when your
/// authentication relies on cookies. A request without an `Origin` header
/// (a non-browser client) is always allowed.
///
/// ```
/// use rtm_driver::AllowedOrigins;
/// let only = AllowedOrigins::list(["https://chat.example.com"]);
/// assert!(only.allows("https://chat.example.com"));
/// assert!(!only.allows("https://evil.example"));
/// let subdomains = AllowedOrigins::predicate(|origin| origin.ends_with(".example.com"));
/// assert!(subdomains.allows("https://a.example.com"));
/// ```
#[derive(Clone, Default)]
pub enum AllowedOrigins {
    /// Every origin (the default).
    #[default]
    Any,
    /// Exactly these origins (`scheme://host[:port]`, compared without case).
    List(Vec<String>),
    /// Those the function accepts.
    Predicate(Arc<dyn Fn(&str) -> bool + Send + Sync>),
}

impl AllowedOrigins {
    /// Exactly these origins.
    pub fn list<I, S>(origins: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        AllowedOrigins::List(origins.into_iter().map(Into::into).collect())
    }

    /// The origins `allow` accepts.
    pub fn predicate(allow: impl Fn(&str) -> bool + Send + Sync + 'static) -> Self {
        AllowedOrigins::Predicate(Arc::new(allow))
    }

    /// Whether a request with this `Origin` may connect.
    pub fn allows(&self, origin: &str) -> bool {
        match self {
            AllowedOrigins::Any => true,
            AllowedOrigins::List(list) => list.iter().any(|o| o.eq_ignore_ascii_case(origin)),
            AllowedOrigins::Predicate(allow) => allow(origin),
        }
    }
}

impl fmt::Debug for AllowedOrigins {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AllowedOrigins::Any => f.write_str("Any"),
            AllowedOrigins::List(list) => f.debug_tuple("List").field(list).finish(),
            AllowedOrigins::Predicate(_) => f.write_str("Predicate(..)"),
        }
    }
}

/// What the handshake checks the request against.
#[derive(Debug, Clone)]
pub struct HandshakePolicy {
    /// The path served (`/` by default); the query string is not compared.
    pub path: String,
    /// Which `Origin`s may connect.
    pub origins: AllowedOrigins,
    /// The largest request (line and headers) read, in bytes (default 8 KiB).
    pub max_request_bytes: usize,
}

impl Default for HandshakePolicy {
    fn default() -> Self {
        HandshakePolicy {
            path: "/".into(),
            origins: AllowedOrigins::Any,
            max_request_bytes: 8 * 1024,
        }
    }
}

/// A valid upgrade request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpgradeRequest {
    /// The request target: path and query (`/rtm?room=1`).
    pub target: String,
    /// The `Origin` header, if any.
    pub origin: Option<String>,
    key: String,
}

impl UpgradeRequest {
    /// The `Sec-WebSocket-Accept` value of the `101` answer.
    pub fn accept_key(&self) -> String {
        tungstenite::handshake::derive_accept_key(self.key.as_bytes())
    }

    /// The `101 Switching Protocols` response that completes the handshake.
    pub fn accept(&self) -> Vec<u8> {
        let accept = self.accept_key();
        format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
        )
        .into_bytes()
    }
}

/// Why a request was refused, and the HTTP answer it gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// The HTTP status: 400, 403, 404, 426, 429 or 431.
    pub status: u16,
    /// One line for the body and the log.
    pub reason: &'static str,
}

impl Rejection {
    fn new(status: u16, reason: &'static str) -> Self {
        Rejection { status, reason }
    }

    /// The complete HTTP response: status, `Connection: close`, a plain-text
    /// body; for 426, the `Upgrade` and `Sec-WebSocket-Version: 13` the
    /// client needs.
    pub fn response(&self) -> Vec<u8> {
        let phrase = match self.status {
            400 => "Bad Request",
            403 => "Forbidden",
            404 => "Not Found",
            426 => "Upgrade Required",
            429 => "Too Many Requests",
            431 => "Request Header Fields Too Large",
            _ => "Error",
        };
        let extra = if self.status == 426 {
            "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
        } else {
            ""
        };
        let body = format!("{}\n", self.reason);
        format!(
            "HTTP/1.1 {} {phrase}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n{extra}\r\n{body}",
            self.status,
            body.len()
        )
        .into_bytes()
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.status, self.reason)
    }
}

/// The outcome of reading the buffer so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Handshake {
    /// The request is not complete yet: read more.
    Incomplete,
    /// A valid upgrade; the request took this many bytes of the buffer.
    /// Whatever follows them is the start of the WebSocket stream.
    Upgrade(UpgradeRequest, usize),
    /// Refused: write [`Rejection::response`], then close.
    Reject(Rejection),
}

/// Reads the request at the front of `buf` and decides.
///
pub(crate) fn read_request(buf: &[u8], policy: &HandshakePolicy) -> Handshake {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let used = match request.parse(buf) {
        Ok(httparse::Status::Complete(used)) => used,
        Ok(httparse::Status::Partial) if buf.len() >= policy.max_request_bytes => {
            return reject(431, "the request headers are too large")
        }
        Ok(httparse::Status::Partial) => return Handshake::Incomplete,
        Err(httparse::Error::TooManyHeaders) => {
            return reject(431, "the request has too many headers")
        }
        Err(_) => return reject(400, "not an HTTP request"),
    };
    if used > policy.max_request_bytes {
        return reject(431, "the request headers are too large");
    }
    match check(&request, policy) {
        Ok(upgrade) => Handshake::Upgrade(upgrade, used),
        Err(rejection) => Handshake::Reject(rejection),
    }
}

fn reject(status: u16, reason: &'static str) -> Handshake {
    Handshake::Reject(Rejection::new(status, reason))
}

fn check(
    request: &httparse::Request,
    policy: &HandshakePolicy,
) -> Result<UpgradeRequest, Rejection> {
    let headers: Vec<(&str, &[u8])> = request.headers.iter().map(|h| (h.name, h.value)).collect();
    check_request(
        request.method.unwrap_or(""),
        request.version == Some(1),
        request.path.unwrap_or("/"),
        &headers,
        policy,
    )
}

/// Checks a request that an HTTP server already parsed (an axum route, for
/// one): its method, whether it is HTTP/1.1, its target (path and query)
/// and its headers as (name, value) pairs. The same rules and answers as
/// the server's own handshake.
pub fn check_request(
    method: &str,
    http_1_1: bool,
    target: &str,
    headers: &[(&str, &[u8])],
    policy: &HandshakePolicy,
) -> Result<UpgradeRequest, Rejection> {
    if !http_1_1 {
        return Err(Rejection::new(400, "a WebSocket handshake needs HTTP/1.1"));
    }
    if method != "GET" {
        return Err(Rejection::new(
            400,
            "a WebSocket handshake is a GET request",
        ));
    }
    let path = target.split('?').next().unwrap_or(target);
    if path != policy.path {
        return Err(Rejection::new(404, "not found"));
    }
    let header = |name: &str| -> Result<Option<&str>, Rejection> {
        let mut found = headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case(name));
        let Some((_, value)) = found.next() else {
            return Ok(None);
        };
        let value = std::str::from_utf8(value)
            .map_err(|_| Rejection::new(400, "a header value is not text"))?;
        Ok(Some(value.trim()))
    };
    let has_token = |value: Option<&str>, token: &str| {
        value.is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    };
    if !has_token(header("upgrade")?, "websocket") {
        return Err(Rejection::new(426, "this endpoint only speaks WebSocket"));
    }
    if !has_token(header("connection")?, "upgrade") {
        return Err(Rejection::new(
            426,
            "a WebSocket upgrade needs 'Connection: Upgrade'",
        ));
    }
    if header("sec-websocket-version")? != Some("13") {
        return Err(Rejection::new(
            426,
            "only WebSocket version 13 is supported",
        ));
    }
    if header("host")?.is_none() {
        return Err(Rejection::new(400, "no Host header"));
    }
    let keys = headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("sec-websocket-key"))
        .count();
    let key = match header("sec-websocket-key")? {
        Some(key) if keys == 1 && valid_key(key) => key.to_owned(),
        _ => return Err(Rejection::new(400, "a bad or missing Sec-WebSocket-Key")),
    };
    let origin = header("origin")?.map(str::to_owned);
    if let Some(origin) = &origin {
        if !policy.origins.allows(origin) {
            return Err(Rejection::new(403, "this origin may not connect"));
        }
    }
    Ok(UpgradeRequest {
        target: target.to_owned(),
        origin,
        key,
    })
}

/// A `Sec-WebSocket-Key` is 16 bytes in base64: 22 characters and `==`.
fn valid_key(key: &str) -> bool {
    let bytes = key.as_bytes();
    bytes.len() == 24
        && bytes.ends_with(b"==")
        && bytes[..22]
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'+' || *b == b'/')
}

#[cfg(test)]
mod tests {
    use super::*;

    const UPGRADE: &str = "GET /rtm?x=1 HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n";

    fn policy() -> HandshakePolicy {
        HandshakePolicy {
            path: "/rtm".into(),
            ..HandshakePolicy::default()
        }
    }

    fn status(request: &str, policy: &HandshakePolicy) -> u16 {
        match read_request(request.as_bytes(), policy) {
            Handshake::Upgrade(..) => 101,
            Handshake::Reject(r) => r.status,
            Handshake::Incomplete => 0,
        }
    }

    fn with(extra: &str) -> String {
        format!("{UPGRADE}{extra}\r\n")
    }

    #[test]
    fn a_valid_upgrade_switches_and_leaves_what_follows() {
        let mut bytes = with("").into_bytes();
        let used = bytes.len();
        bytes.extend_from_slice(&[0x81, 0x80, 0, 0, 0, 0]);
        let Handshake::Upgrade(upgrade, n) = read_request(&bytes, &policy()) else {
            panic!("not an upgrade")
        };
        assert_eq!(n, used);
        assert_eq!(upgrade.target, "/rtm?x=1");
    }

    #[test]
    fn an_incomplete_request_waits_for_more() {
        let full = with("");
        for cut in 0..full.len() - 1 {
            assert_eq!(status(&full[..cut], &policy()), 0, "cut {cut}");
        }
    }

    #[test]
    fn each_bad_request_gets_its_status() {
        let p = policy();
        let cases = [
            ("GET /rtm HTTP/1.1\r\nHost: x\r\n\r\n".to_owned(), 426),
            (UPGRADE.replace("websocket", "h2c") + "\r\n", 426),
            (
                UPGRADE.replace("keep-alive, Upgrade", "keep-alive") + "\r\n",
                426,
            ),
            (UPGRADE.replace("Version: 13", "Version: 8") + "\r\n", 426),
            (UPGRADE.replace("GET", "POST") + "\r\n", 400),
            (UPGRADE.replace("HTTP/1.1", "HTTP/1.0") + "\r\n", 400),
            (UPGRADE.replace("Host: a\r\n", "") + "\r\n", 400),
            (
                UPGRADE.replace("dGhlIHNhbXBsZSBub25jZQ==", "short") + "\r\n",
                400,
            ),
            (with("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"), 400),
            (UPGRADE.replace("/rtm?x=1", "/other") + "\r\n", 404),
            ("\x16\x03\x01garbage\r\n\r\n".to_owned(), 400),
            ("hello\r\n\r\n".to_owned(), 400),
        ];
        for (request, expected) in cases {
            assert_eq!(status(&request, &p), expected, "{request:?}");
        }
    }

    #[test]
    fn the_426_answer_names_the_version_and_every_answer_has_a_body() {
        let Handshake::Reject(r) = read_request(b"GET /rtm HTTP/1.1\r\nHost: x\r\n\r\n", &policy())
        else {
            panic!()
        };
        let text = String::from_utf8(r.response()).unwrap();
        assert!(
            text.starts_with("HTTP/1.1 426 Upgrade Required\r\n"),
            "{text}"
        );
        assert!(text.contains("\r\nSec-WebSocket-Version: 13\r\n"), "{text}");
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("Content-Length: {}", body.len())));
        assert!(!body.is_empty());
    }

    #[test]
    fn headers_over_the_limit_get_431() {
        let p = HandshakePolicy {
            max_request_bytes: 256,
            ..policy()
        };
        let big = with(&format!("X-Pad: {}\r\n", "a".repeat(300)));
        assert_eq!(status(&big, &p), 431);
        // An endless request line is refused once the limit is reached.
        assert_eq!(status(&"G".repeat(256), &p), 431);
        assert_eq!(status(&"G".repeat(255), &p), 0);
        let many: String = (0..70).map(|i| format!("X-{i}: 1\r\n")).collect();
        assert_eq!(status(&with(&many), &policy()), 431);
    }

    #[test]
    fn origins_are_checked_when_restricted() {
        let p = HandshakePolicy {
            origins: AllowedOrigins::list(["https://good.example"]),
            ..policy()
        };
        assert_eq!(status(&with("Origin: https://good.example\r\n"), &p), 101);
        assert_eq!(status(&with("Origin: HTTPS://GOOD.example\r\n"), &p), 101);
        assert_eq!(status(&with("Origin: https://evil.example\r\n"), &p), 403);
        assert_eq!(status(&with(""), &p), 101, "no Origin: not a browser");
        assert_eq!(
            status(&with("Origin: https://evil.example\r\n"), &policy()),
            101
        );
    }
}

/// The examples of this module's items (private: rustdoc cannot run them).
#[cfg(test)]
mod doc_examples {
    #[test]
    fn an_upgrade_is_accepted_and_a_health_check_told_426() {
        use crate::websocket::handshake::{read_request, Handshake, HandshakePolicy};

        let policy = HandshakePolicy::default();
        let request = b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
            Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
        let Handshake::Upgrade(upgrade, used) = read_request(request, &policy) else {
            panic!()
        };
        assert_eq!(used, request.len());
        assert!(String::from_utf8(upgrade.accept())
            .unwrap()
            .contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo="));

        // A load balancer's health check is told what this endpoint is.
        let Handshake::Reject(refused) =
            read_request(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", &policy)
        else {
            panic!()
        };
        assert_eq!(refused.status, 426);
    }
}
