//! An RFC 7662-style token introspection client, so the master can accept
//! tokens issued by an external identity service (MCIAS) as well as its own.
//! It speaks plain HTTP/1.1 (`http://` only for now) by hand on a tokio
//! `TcpStream`: one POST per token, `Connection: close`, the response bounded
//! to 64 KiB and the whole exchange to a timeout. The response parser is a
//! pure function over the bytes read so far, tested apart from the socket.

use std::fmt::Write as _;
use std::net::Ipv6Addr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::token::{Claims, Role, MAX_TOKEN_LEN};

/// The largest introspection response read, headers included.
pub const MAX_RESPONSE: usize = 64 * 1024;

/// Asks an introspection endpoint whether a token is active and whose it is.
#[derive(Debug, Clone)]
pub struct Introspector {
    url: String,
    /// The host to connect to (an IPv6 address without its brackets).
    host: String,
    port: u16,
    /// `host[:port]` as written in the URL, for the `Host` header.
    authority: String,
    /// The request target: the path, with its query if any.
    path: String,
    timeout: Duration,
}

/// Why a token could not be introspected. Never carries the token.
#[derive(Debug, thiserror::Error)]
pub enum IntrospectError {
    #[error("invalid introspection URL {url:?}: {why}")]
    InvalidUrl { url: String, why: String },
    #[error("the token is longer than 4096 bytes")]
    TokenTooLong,
    #[error("talk to the introspection endpoint {url}: {source}")]
    Io {
        url: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the introspection endpoint {url} did not answer within {after:?}")]
    Timeout { url: String, after: Duration },
    #[error("the introspection response is larger than 64 KiB")]
    TooLarge,
    #[error("malformed HTTP response from the introspection endpoint: {0}")]
    BadResponse(String),
    #[error("the introspection endpoint answered HTTP {0}")]
    Status(u16),
    #[error("malformed introspection response: {0}")]
    BadJson(String),
    #[error("the token is not active (expired, revoked or unknown); run `mcp login`")]
    Inactive,
    #[error("the introspection response names no user")]
    MissingUsername,
    #[error("the introspection response has role {0:?}; expected \"admin\" or \"viewer\"")]
    UnknownRole(String),
}

/// The fields of an RFC 7662 response that MCP reads; others are ignored.
#[derive(serde::Deserialize)]
struct Answer {
    active: bool,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    role: Option<String>,
    #[serde(default)]
    exp: Option<u64>,
    #[serde(default)]
    iat: Option<u64>,
}

impl Introspector {
    /// Checks `url` is `http://host[:port][/path]` (port 80 if left out, path
    /// `/`); `host` is a name, an IPv4 address or a bracketed IPv6 address.
    pub fn new(url: &str, timeout: Duration) -> Result<Introspector, IntrospectError> {
        let invalid = |why: &str| IntrospectError::InvalidUrl {
            url: url.to_string(),
            why: why.to_string(),
        };
        if !url.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(invalid("spaces, control or non-ASCII characters"));
        }
        let scheme_end = url.find("://").unwrap_or(0);
        let scheme = &url[..scheme_end];
        if !scheme.eq_ignore_ascii_case("http") {
            return Err(if scheme.eq_ignore_ascii_case("https") {
                invalid("https is not supported yet; use http://")
            } else {
                invalid("it must start with http://")
            });
        }
        let rest = &url[scheme_end + 3..];
        if rest.contains('#') {
            return Err(invalid("a URL fragment (#) is not allowed"));
        }
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) if rest[i..].starts_with('/') => (&rest[..i], rest[i..].to_string()),
            Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
            None => (rest, "/".to_string()),
        };
        if authority.is_empty() {
            return Err(invalid("no host"));
        }
        if authority.contains('@') {
            return Err(invalid("credentials in the URL are not supported"));
        }
        let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
            let Some((ip, after)) = bracketed.split_once(']') else {
                return Err(invalid("an IPv6 address needs a closing ]"));
            };
            if ip.parse::<Ipv6Addr>().is_err() {
                return Err(invalid("not an IPv6 address inside [ ]"));
            }
            let port = match after {
                "" => None,
                p => Some(
                    p.strip_prefix(':')
                        .ok_or_else(|| invalid("expected :port after ]"))?,
                ),
            };
            (ip, port)
        } else {
            let (host, port) = match authority.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            };
            let host_char = |c: char| c.is_ascii_alphanumeric() || c == '.' || c == '-';
            if host.is_empty() || !host.chars().all(host_char) {
                return Err(invalid("the host must be a name or an IP address"));
            }
            (host, port)
        };
        let port = match port {
            None => 80,
            Some(p) => match p.parse::<u16>() {
                Ok(n) if n != 0 && p.bytes().all(|b| b.is_ascii_digit()) => n,
                _ => return Err(invalid("the port must be a number from 1 to 65535")),
            },
        };
        Ok(Introspector {
            url: url.to_string(),
            host: host.to_string(),
            port,
            authority: authority.to_string(),
            path,
            timeout,
        })
    }

    /// POSTs `token=<urlencoded token>` (Content-Type application/x-www-form-urlencoded); response JSON
    /// {"active": bool, "username": "...", "role": "admin"|"viewer", "exp": unix?}. Inactive -> Err(Inactive).
    /// Missing role -> viewer. Bounded: response size <= 64 KiB, whole exchange within timeout.
    ///
    /// An active answer whose `exp` has passed counts as inactive; one with no
    /// `exp` gets `expires_at = u64::MAX` (the endpoint vouches for it now only:
    /// do not cache it). `issued_at` is `iat`, or now.
    pub async fn introspect(&self, token: &str) -> Result<Claims, IntrospectError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(IntrospectError::TokenTooLong);
        }
        let body = format!("token={}", form_urlencode(token));
        let request = format!(
            "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/x-www-form-urlencoded\r\n\
             Content-Length: {}\r\nAccept: application/json\r\nConnection: close\r\n\
             User-Agent: mcp-master\r\n\r\n{body}",
            self.path,
            self.authority,
            body.len(),
        );
        let response = tokio::time::timeout(self.timeout, self.exchange(request.as_bytes()))
            .await
            .map_err(|_| IntrospectError::Timeout {
                url: self.url.clone(),
                after: self.timeout,
            })??;
        if response.status != 200 {
            return Err(IntrospectError::Status(response.status));
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        claims_from_json(&response.body, now)
    }

    async fn exchange(&self, request: &[u8]) -> Result<HttpResponse, IntrospectError> {
        let io = |source| IntrospectError::Io {
            url: self.url.clone(),
            source,
        };
        let mut stream = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(io)?;
        stream.write_all(request).await.map_err(io)?;
        let mut buf = Vec::with_capacity(4096);
        let mut chunk = [0u8; 4096];
        loop {
            let n = stream.read(&mut chunk).await.map_err(io)?;
            if n == 0 {
                return parse_response(&buf, true)?.ok_or_else(|| {
                    IntrospectError::BadResponse("the connection closed mid-response".into())
                });
            }
            buf.extend_from_slice(&chunk[..n]);
            if buf.len() > MAX_RESPONSE {
                return Err(IntrospectError::TooLarge);
            }
            if let Some(response) = parse_response(&buf, false)? {
                return Ok(response);
            }
        }
    }
}

/// Reads the introspection JSON into claims, `now` in unix seconds.
fn claims_from_json(body: &[u8], now: u64) -> Result<Claims, IntrospectError> {
    let answer: Answer =
        serde_json::from_slice(body).map_err(|e| IntrospectError::BadJson(e.to_string()))?;
    if !answer.active {
        return Err(IntrospectError::Inactive);
    }
    if answer.exp.is_some_and(|exp| now >= exp) {
        return Err(IntrospectError::Inactive);
    }
    let user = answer.username.unwrap_or_default();
    if user.is_empty() {
        return Err(IntrospectError::MissingUsername);
    }
    let role = match answer.role.as_deref() {
        None => Role::Viewer,
        Some(name) => name
            .parse()
            .map_err(|_| IntrospectError::UnknownRole(name.chars().take(32).collect()))?,
    };
    Ok(Claims {
        user,
        role,
        expires_at: answer.exp.unwrap_or(u64::MAX),
        issued_at: answer.iat.unwrap_or(now),
    })
}

/// `application/x-www-form-urlencoded`: unreserved bytes as they are, space
/// as `+`, everything else `%XX`.
fn form_urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'*' | b'-' | b'.' | b'_' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => {
                let _ = write!(out, "%{b:02X}");
            }
        }
    }
    out
}

#[derive(Debug, PartialEq)]
struct HttpResponse {
    status: u16,
    /// Empty unless the status is 200: other answers are not read further.
    body: Vec<u8>,
}

/// The response in `buf` if it is complete, `None` if more bytes are needed;
/// `eof` says the peer has closed (so a body without a length ends here).
fn parse_response(buf: &[u8], eof: bool) -> Result<Option<HttpResponse>, IntrospectError> {
    let bad = |why: &str| IntrospectError::BadResponse(why.to_string());
    let mut buf = buf;
    loop {
        let Some(head_end) = find(buf, b"\r\n\r\n") else {
            return if eof {
                Err(bad("the connection closed before the headers ended"))
            } else {
                Ok(None)
            };
        };
        let head =
            std::str::from_utf8(&buf[..head_end]).map_err(|_| bad("the headers are not text"))?;
        let body = &buf[head_end + 4..];
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or("");
        let mut words = status_line.splitn(3, ' ');
        let version = words.next().unwrap_or("");
        let code = words.next().unwrap_or("");
        if !version.starts_with("HTTP/1.") {
            return Err(bad("the status line does not start with HTTP/1.x"));
        }
        let status = match code.parse::<u16>() {
            Ok(n) if code.len() == 3 && (100..=599).contains(&n) => n,
            _ => return Err(bad("the status code is not three digits")),
        };
        if (100..200).contains(&status) {
            // An interim answer (100 Continue); the real one follows.
            buf = body;
            continue;
        }
        if status != 200 {
            return Ok(Some(HttpResponse {
                status,
                body: Vec::new(),
            }));
        }
        let mut content_length: Option<usize> = None;
        let mut chunked = false;
        for line in lines {
            let Some((name, value)) = line.split_once(':') else {
                return Err(bad("a header line without a colon"));
            };
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                let n = value
                    .parse::<usize>()
                    .ok()
                    .filter(|_| value.bytes().all(|b| b.is_ascii_digit()))
                    .ok_or_else(|| bad("Content-Length is not a number"))?;
                if content_length.is_some_and(|m| m != n) {
                    return Err(bad("two different Content-Length headers"));
                }
                content_length = Some(n);
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                let last = value.rsplit(',').next().unwrap_or("").trim();
                if !last.eq_ignore_ascii_case("chunked") {
                    return Err(bad("an unsupported Transfer-Encoding"));
                }
                chunked = true;
            }
        }
        let body = if chunked {
            decode_chunked(body)?
        } else if let Some(n) = content_length {
            if n > MAX_RESPONSE {
                return Err(IntrospectError::TooLarge);
            }
            (body.len() >= n).then(|| body[..n].to_vec())
        } else {
            eof.then(|| body.to_vec())
        };
        return match body {
            Some(body) => Ok(Some(HttpResponse { status, body })),
            None if eof => Err(bad("the connection closed mid-body")),
            None => Ok(None),
        };
    }
}

/// A chunked body decoded, or `None` if it has not all arrived.
fn decode_chunked(mut rest: &[u8]) -> Result<Option<Vec<u8>>, IntrospectError> {
    let bad = |why: &str| IntrospectError::BadResponse(why.to_string());
    let mut body = Vec::new();
    loop {
        let Some(line_end) = find(rest, b"\r\n") else {
            return Ok(None);
        };
        let line =
            std::str::from_utf8(&rest[..line_end]).map_err(|_| bad("a chunk size is not text"))?;
        let size_hex = line.split(';').next().unwrap_or("").trim();
        if size_hex.is_empty()
            || size_hex.len() > 8
            || !size_hex.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return Err(bad("a chunk size is not hex"));
        }
        let size =
            usize::from_str_radix(size_hex, 16).map_err(|_| bad("a chunk size is not hex"))?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            // Trailers, if any, end with an empty line.
            if rest.starts_with(b"\r\n") || find(rest, b"\r\n\r\n").is_some() {
                return Ok(Some(body));
            }
            return Ok(None);
        }
        if body.len() + size > MAX_RESPONSE {
            return Err(IntrospectError::TooLarge);
        }
        if rest.len() < size + 2 {
            return Ok(None);
        }
        if &rest[size..size + 2] != b"\r\n" {
            return Err(bad("a chunk does not end with CRLF"));
        }
        body.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use tokio::net::TcpListener;
    use tokio::task::JoinHandle;

    /// A server on 127.0.0.1:0 that reads one request and answers `response`
    /// (or nothing, if `None`); the handle yields the request it read.
    async fn serve_once(response: Option<Vec<u8>>) -> (String, JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let handle = tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut buf = Vec::new();
            let mut chunk = [0u8; 1024];
            loop {
                let n = conn.read(&mut chunk).await.unwrap();
                assert!(n > 0, "the client closed before sending its request");
                buf.extend_from_slice(&chunk[..n]);
                if let Some(end) = find(&buf, b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
                    let len: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length: "))
                        .map(|v| v.trim().parse().unwrap())
                        .unwrap_or(0);
                    if buf.len() >= end + 4 + len {
                        break;
                    }
                }
            }
            match response {
                // The client may hang up early (too large, not 200): not the test's failure.
                Some(r) => {
                    let _ = conn.write_all(&r).await;
                }
                None => tokio::time::sleep(Duration::from_secs(30)).await,
            }
            String::from_utf8(buf).unwrap()
        });
        (format!("http://{addr}/oauth2/introspect"), handle)
    }

    fn ok_json(json: &str) -> Vec<u8> {
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{json}",
            json.len()
        )
        .into_bytes()
    }

    async fn introspect(
        response: Vec<u8>,
        token: &str,
    ) -> (Result<Claims, IntrospectError>, String) {
        let (url, server) = serve_once(Some(response)).await;
        let client = Introspector::new(&url, Duration::from_secs(5)).unwrap();
        let result = client.introspect(token).await;
        (result, server.await.unwrap())
    }

    #[tokio::test]
    async fn active_admin_and_the_request_sent() {
        let (result, request) = introspect(
            ok_json(r#"{"active":true,"username":"kyle","role":"admin","exp":99999999999,"iat":5,"scope":"x"}"#),
            "a b+c/d=é",
        )
        .await;
        assert_eq!(
            result.unwrap(),
            Claims {
                user: "kyle".into(),
                role: Role::Admin,
                expires_at: 99_999_999_999,
                issued_at: 5
            }
        );
        let (head, body) = request.split_once("\r\n\r\n").unwrap();
        let mut lines = head.split("\r\n");
        assert_eq!(lines.next(), Some("POST /oauth2/introspect HTTP/1.1"));
        let headers: Vec<&str> = lines.collect();
        let port = head
            .split("Host: 127.0.0.1:")
            .nth(1)
            .unwrap()
            .lines()
            .next()
            .unwrap();
        assert!(
            headers.contains(&format!("Host: 127.0.0.1:{port}").as_str()),
            "{headers:?}"
        );
        assert!(
            headers.contains(&"Content-Type: application/x-www-form-urlencoded"),
            "{headers:?}"
        );
        assert!(
            headers.contains(&format!("Content-Length: {}", body.len()).as_str()),
            "{headers:?}"
        );
        assert!(headers.contains(&"Connection: close"), "{headers:?}");
        assert_eq!(body, "token=a+b%2Bc%2Fd%3D%C3%A9");
    }

    #[tokio::test]
    async fn active_without_role_is_a_viewer() {
        let (result, _) = introspect(ok_json(r#"{"active":true,"username":"ana"}"#), "t").await;
        let claims = result.unwrap();
        assert_eq!(claims.role, Role::Viewer);
        assert_eq!(claims.user, "ana");
        assert_eq!(claims.expires_at, u64::MAX);
        let (result, _) = introspect(
            ok_json(r#"{"active":true,"username":"ana","role":null}"#),
            "t",
        )
        .await;
        assert_eq!(result.unwrap().role, Role::Viewer);
    }

    #[tokio::test]
    async fn inactive_is_refused() {
        let (result, _) = introspect(ok_json(r#"{"active":false}"#), "t").await;
        assert!(
            matches!(result, Err(IntrospectError::Inactive)),
            "{result:?}"
        );
        // Active, but its exp has passed.
        let (result, _) =
            introspect(ok_json(r#"{"active":true,"username":"a","exp":1}"#), "t").await;
        assert!(
            matches!(result, Err(IntrospectError::Inactive)),
            "{result:?}"
        );
    }

    #[tokio::test]
    async fn malformed_json_is_refused() {
        for json in [
            "not json",
            "{}",
            r#"{"active":"yes"}"#,
            r#"{"active":true,"username":"a","exp":-1}"#,
        ] {
            let (result, _) = introspect(ok_json(json), "t").await;
            assert!(
                matches!(result, Err(IntrospectError::BadJson(_))),
                "{json}: {result:?}"
            );
        }
        let (result, _) = introspect(ok_json(r#"{"active":true}"#), "t").await;
        assert!(
            matches!(result, Err(IntrospectError::MissingUsername)),
            "{result:?}"
        );
        let (result, _) = introspect(
            ok_json(r#"{"active":true,"username":"a","role":"root"}"#),
            "t",
        )
        .await;
        assert!(matches!(result, Err(IntrospectError::UnknownRole(r)) if r == "root"));
    }

    #[tokio::test]
    async fn non_200_status_is_refused() {
        for (response, code) in [
            (
                b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n".to_vec(),
                401,
            ),
            (
                b"HTTP/1.1 500 Internal Server Error\r\n\r\n{\"active\":true}".to_vec(),
                500,
            ),
            (
                b"HTTP/1.0 404 Not Found\r\nContent-Length: 99999999\r\n\r\n".to_vec(),
                404,
            ),
        ] {
            let (result, _) = introspect(response, "t").await;
            assert!(
                matches!(result, Err(IntrospectError::Status(c)) if c == code),
                "{result:?}"
            );
        }
    }

    #[tokio::test]
    async fn chunked_and_close_delimited_bodies() {
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
            10\r\n{\"active\":true,\"\r\n11;x=y\r\nusername\":\"kyle\"}\r\n0\r\n\r\n"
            .to_vec();
        let (result, _) = introspect(chunked, "t").await;
        assert_eq!(result.unwrap().user, "kyle");
        let close = b"HTTP/1.1 200 OK\r\n\r\n{\"active\":true,\"username\":\"eve\"}".to_vec();
        let (result, _) = introspect(close, "t").await;
        assert_eq!(result.unwrap().user, "eve");
    }

    #[tokio::test]
    async fn oversized_and_truncated_responses_are_refused() {
        let big = format!("HTTP/1.1 200 OK\r\n\r\n{}", " ".repeat(MAX_RESPONSE)).into_bytes();
        let (result, _) = introspect(big, "t").await;
        assert!(
            matches!(result, Err(IntrospectError::TooLarge)),
            "{result:?}"
        );
        let short = b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n{\"active\":".to_vec();
        let (result, _) = introspect(short, "t").await;
        assert!(
            matches!(result, Err(IntrospectError::BadResponse(_))),
            "{result:?}"
        );
    }

    #[tokio::test]
    async fn a_server_that_never_answers_times_out() {
        let (url, _server) = serve_once(None).await;
        let client = Introspector::new(&url, Duration::from_millis(200)).unwrap();
        let started = std::time::Instant::now();
        let result = client.introspect("t").await;
        assert!(
            matches!(result, Err(IntrospectError::Timeout { .. })),
            "{result:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(3));
    }

    #[tokio::test]
    async fn a_closed_port_is_an_io_error() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let client = Introspector::new(&format!("http://{addr}/"), Duration::from_secs(5)).unwrap();
        let result = client.introspect("t").await;
        assert!(
            matches!(result, Err(IntrospectError::Io { .. })),
            "{result:?}"
        );
        let long = "a".repeat(MAX_TOKEN_LEN + 1);
        assert!(matches!(
            client.introspect(&long).await,
            Err(IntrospectError::TokenTooLong)
        ));
    }

    #[test]
    fn urls() {
        let good = [
            (
                "http://127.0.0.1:8080/introspect",
                "127.0.0.1",
                8080,
                "127.0.0.1:8080",
                "/introspect",
            ),
            (
                "http://mcias.internal",
                "mcias.internal",
                80,
                "mcias.internal",
                "/",
            ),
            ("HTTP://mcias:9000", "mcias", 9000, "mcias:9000", "/"),
            (
                "http://mcias:9000?x=1",
                "mcias",
                9000,
                "mcias:9000",
                "/?x=1",
            ),
            (
                "http://[::1]:7000/a/b?c=d",
                "::1",
                7000,
                "[::1]:7000",
                "/a/b?c=d",
            ),
            ("http://[fe80::1]/", "fe80::1", 80, "[fe80::1]", "/"),
        ];
        for (url, host, port, authority, path) in good {
            let i =
                Introspector::new(url, Duration::from_secs(1)).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(
                (
                    i.host.as_str(),
                    i.port,
                    i.authority.as_str(),
                    i.path.as_str()
                ),
                (host, port, authority, path)
            );
        }
        let bad = [
            ("", "http://"),
            ("mcias:9000", "http://"),
            ("https://mcias/introspect", "https is not supported"),
            ("ftp://mcias/", "http://"),
            ("http://", "no host"),
            ("http:///path", "no host"),
            ("http://user:pw@mcias/", "credentials"),
            ("http://mcias:/", "port"),
            ("http://mcias:0/", "port"),
            ("http://mcias:65536/", "port"),
            ("http://mcias:+80/", "port"),
            ("http://mc_ias/", "host"),
            ("http://mcias/a b", "spaces"),
            ("http://mcias/\r\nX: y", "spaces"),
            ("http://mcias/é", "non-ASCII"),
            ("http://mcias/#frag", "fragment"),
            ("http://[::1/", "closing ]"),
            ("http://[nothost]:80/", "IPv6"),
            ("http://[::1]x/", ":port"),
        ];
        for (url, want) in bad {
            match Introspector::new(url, Duration::from_secs(1)) {
                Err(IntrospectError::InvalidUrl { why, .. }) => {
                    assert!(why.contains(want), "{url:?}: {why}")
                }
                other => panic!("{url:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn form_urlencoding() {
        assert_eq!(form_urlencode("AZaz09*-._"), "AZaz09*-._");
        assert_eq!(form_urlencode("a b&c=d%~"), "a+b%26c%3Dd%25%7E");
        assert_eq!(form_urlencode(""), "");
    }

    #[test]
    fn response_parser_table() {
        let ok = |status, body: &[u8]| {
            Ok(Some(HttpResponse {
                status,
                body: body.to_vec(),
            }))
        };
        type Case = (&'static [u8], bool, Result<Option<HttpResponse>, ()>);
        let cases: Vec<Case> = vec![
            (b"", false, Ok(None)),
            (b"HTTP/1.1 200 OK\r\n", false, Ok(None)),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{",
                false,
                Ok(None),
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}",
                false,
                ok(200, b"{}"),
            ),
            (
                b"HTTP/1.1 200 OK\r\ncontent-length:2\r\n\r\n{}junk",
                false,
                ok(200, b"{}"),
            ),
            (b"HTTP/1.1 200 OK\r\n\r\n{}", false, Ok(None)),
            (b"HTTP/1.1 200 OK\r\n\r\n{}", true, ok(200, b"{}")),
            (
                b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx",
                false,
                ok(200, b"x"),
            ),
            (b"HTTP/1.1 100 Continue\r\n\r\n", false, Ok(None)),
            (b"HTTP/1.1 503 Busy\r\n\r\n", false, ok(503, b"")),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n",
                false,
                Ok(None),
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n0\r\n\r\n",
                false,
                ok(200, b"ab"),
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX-T: 1\r\n\r\n",
                false,
                ok(200, b""),
            ),
            (b"HTTP/1.1 200 OK\r\n", true, Err(())),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n{}",
                true,
                Err(()),
            ),
            (b"HTTP/2 200\r\n\r\n", false, Err(())),
            (b"HTTP/1.1 20 OK\r\n\r\n", false, Err(())),
            (b"HTTP/1.1 2000 OK\r\n\r\n", false, Err(())),
            (b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n", false, Err(())),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
                false,
                Err(()),
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nxx",
                false,
                Err(()),
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 999999\r\n\r\n",
                false,
                Err(()),
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
                false,
                Err(()),
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                false,
                Err(()),
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n",
                false,
                Err(()),
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffff\r\n",
                false,
                Err(()),
            ),
            (b"HTTP/1.1 200 \xff\r\n\r\n", false, Err(())),
        ];
        for (input, eof, want) in cases {
            let got = parse_response(input, eof).map_err(|_| ());
            assert_eq!(got, want, "{:?} eof={eof}", String::from_utf8_lossy(input));
        }
    }

    #[test]
    fn claims_from_json_uses_now() {
        let c = claims_from_json(br#"{"active":true,"username":"a","exp":100}"#, 99).unwrap();
        assert_eq!((c.expires_at, c.issued_at), (100, 99));
        assert!(matches!(
            claims_from_json(br#"{"active":true,"username":"a","exp":100}"#, 100),
            Err(IntrospectError::Inactive)
        ));
    }

    proptest! {
        #[test]
        fn response_parser_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512), eof in any::<bool>()) {
            let _ = parse_response(&bytes, eof);
        }

        #[test]
        fn response_parser_never_panics_near_http(
            s in "HTTP/1\\.1 [0-9]{3} OK\r\n(Content-Length: [0-9]{1,3}\r\n|Transfer-Encoding: chunked\r\n)?\r\n[0-9a-f;\r\n]{0,40}",
            eof in any::<bool>(),
        ) {
            let _ = parse_response(s.as_bytes(), eof);
        }

        #[test]
        fn new_never_panics(s in any::<String>()) {
            let _ = Introspector::new(&s, Duration::from_secs(1));
        }
    }
}
