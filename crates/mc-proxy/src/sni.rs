//! The pure ClientHello parser: from the first bytes a client sends, the
//! hostname it asks for (`Found`), that it asks for none (`NoSni`), that more
//! bytes are needed (`NeedMore`) or why the bytes are not a ClientHello
//! (`Invalid`). No I/O, never panics, and bounded: a ClientHello above
//! `MAX_HELLO` bytes, or spread over more than `MAX_RECORDS` records or
//! `MAX_INPUT` bytes of them, is refused, so the caller's buffer never needs to
//! grow past `MAX_INPUT`.

use crate::hostname;

/// Largest ClientHello message accepted (handshake header included). Hellos
/// with post-quantum key shares are about 1.8 KiB; 16 KiB leaves room for
/// large session tickets and many extensions.
pub const MAX_HELLO: usize = 16 * 1024;
/// Most record-layer bytes read to assemble one ClientHello (headers included).
pub const MAX_INPUT: usize = 2 * MAX_HELLO;
/// Most records one ClientHello may span. Real clients use one or two (a few
/// split it on purpose to get past SNI filters); the cap bounds the parsing a
/// client can cause, since the proxy parses once per record.
pub const MAX_RECORDS: usize = 64;

const CONTENT_HANDSHAKE: u8 = 22;
const HANDSHAKE_CLIENT_HELLO: u8 = 1;
const EXT_SERVER_NAME: u16 = 0;
const EXT_ALPN: u16 = 16;
const NAME_TYPE_HOST_NAME: u8 = 0;
/// Largest record payload TLS allows (2^14).
const MAX_RECORD: usize = 16 * 1024;

/// What the first bytes of a connection say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Parsed {
    /// The server_name the client asks for, validated and lowercased.
    Found(String),
    /// A complete ClientHello without a server_name extension.
    NoSni,
    /// The bytes so far are a valid beginning; read more.
    NeedMore,
    /// Not a ClientHello, or one this proxy refuses; the reason says which part.
    Invalid(&'static str),
}

/// Parses the start of a TLS connection. `input` is every byte received so far;
/// bytes after the ClientHello are ignored.
pub fn parse(input: &[u8]) -> Parsed {
    match assemble(input) {
        Ok(message) => match client_hello(&message) {
            Ok(Some(name)) => Parsed::Found(name),
            Ok(None) => Parsed::NoSni,
            Err(reason) => Parsed::Invalid(reason),
        },
        Err(Assembly::NeedMore) => Parsed::NeedMore,
        Err(Assembly::Invalid(reason)) => Parsed::Invalid(reason),
    }
}

enum Assembly {
    NeedMore,
    Invalid(&'static str),
}

/// Joins the handshake records until the ClientHello message is complete and
/// returns it (header included).
fn assemble(input: &[u8]) -> Result<Vec<u8>, Assembly> {
    let mut message: Vec<u8> = Vec::new();
    let mut at = 0;
    let mut count = 0;
    loop {
        if let Some(total) = message_len(&message) {
            if message.len() >= total {
                message.truncate(total);
                return Ok(message);
            }
        }
        if at >= MAX_INPUT {
            return Err(Assembly::Invalid(
                "ClientHello spread over more than 32 KiB",
            ));
        }
        if count == MAX_RECORDS {
            return Err(Assembly::Invalid(
                "ClientHello spread over more than 64 records",
            ));
        }
        count += 1;
        let header = match input.get(at..at + 5) {
            Some(h) => h,
            None => {
                check_partial_header(&input[at.min(input.len())..])?;
                return Err(Assembly::NeedMore);
            }
        };
        check_record_header(header)?;
        let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
        let payload = match input.get(at + 5..at + 5 + len) {
            Some(p) => p,
            None => {
                // Check what the partial payload already shows (type, length).
                let partial = &input[at + 5..];
                let mut peek = message.clone();
                peek.extend_from_slice(partial);
                check_message_start(&peek)?;
                return Err(Assembly::NeedMore);
            }
        };
        message.extend_from_slice(payload);
        check_message_start(&message)?;
        at += 5 + len;
    }
}

/// The full length of the handshake message once its 4-byte header is in.
fn message_len(message: &[u8]) -> Option<usize> {
    let h = message.get(..4)?;
    Some(4 + (usize::from(h[1]) << 16 | usize::from(h[2]) << 8 | usize::from(h[3])))
}

fn check_partial_header(partial: &[u8]) -> Result<(), Assembly> {
    if let Some(&t) = partial.first() {
        if t != CONTENT_HANDSHAKE {
            return Err(Assembly::Invalid("not a TLS handshake record"));
        }
    }
    if let Some(&major) = partial.get(1) {
        if major != 3 {
            return Err(Assembly::Invalid("record version is not TLS"));
        }
    }
    Ok(())
}

fn check_record_header(header: &[u8]) -> Result<(), Assembly> {
    check_partial_header(header)?;
    if header[2] > 4 {
        return Err(Assembly::Invalid("record version is not TLS"));
    }
    let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
    if len == 0 {
        return Err(Assembly::Invalid("empty handshake record"));
    }
    if len > MAX_RECORD {
        return Err(Assembly::Invalid("record longer than 16 KiB"));
    }
    Ok(())
}

fn check_message_start(message: &[u8]) -> Result<(), Assembly> {
    if let Some(&t) = message.first() {
        if t != HANDSHAKE_CLIENT_HELLO {
            return Err(Assembly::Invalid(
                "first handshake message is not a ClientHello",
            ));
        }
    }
    if let Some(total) = message_len(message) {
        if total > MAX_HELLO {
            return Err(Assembly::Invalid("ClientHello larger than 16 KiB"));
        }
        if total < 4 + 2 + 32 + 1 + 2 + 1 {
            return Err(Assembly::Invalid("ClientHello too short"));
        }
    }
    Ok(())
}

/// A bounds-checked reader over a complete message.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], &'static str> {
        if n > self.bytes.len() {
            return Err(what);
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }
    fn u8(&mut self, what: &'static str) -> Result<u8, &'static str> {
        Ok(self.take(1, what)?[0])
    }
    fn u16(&mut self, what: &'static str) -> Result<u16, &'static str> {
        let b = self.take(2, what)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn vec8(&mut self, what: &'static str) -> Result<&'a [u8], &'static str> {
        let n = usize::from(self.u8(what)?);
        self.take(n, what)
    }
    fn vec16(&mut self, what: &'static str) -> Result<&'a [u8], &'static str> {
        let n = usize::from(self.u16(what)?);
        self.take(n, what)
    }
    fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

/// Reads a complete ClientHello message (header included): the server name, if
/// any.
fn client_hello(message: &[u8]) -> Result<Option<String>, &'static str> {
    let mut name = None;
    for_each_extension(message, |kind, body| {
        if kind == EXT_SERVER_NAME {
            name = Some(server_name(body)?);
        }
        Ok(())
    })?;
    Ok(name)
}

/// Whether the ClientHello in `input` (as `parse` takes it, complete) offers
/// the ALPN protocol `protocol` (RFC 7301). False for anything `parse` would
/// not call `Found` or `NoSni`.
pub fn offers_alpn(input: &[u8], protocol: &[u8]) -> bool {
    let Ok(message) = assemble(input) else {
        return false;
    };
    let mut offered = false;
    let walked = for_each_extension(&message, |kind, body| {
        if kind == EXT_ALPN {
            let mut outer = Reader { bytes: body };
            let mut list = Reader {
                bytes: outer.vec16("ALPN extension truncated")?,
            };
            while !list.is_empty() {
                if list.vec8("ALPN protocol truncated")? == protocol {
                    offered = true;
                }
            }
        }
        Ok(())
    });
    walked.is_ok() && offered
}

/// Checks a complete ClientHello message (header included) and calls `each`
/// with every extension's type and body, in order.
fn for_each_extension<'a>(
    message: &'a [u8],
    mut each: impl FnMut(u16, &'a [u8]) -> Result<(), &'static str>,
) -> Result<(), &'static str> {
    let mut r = Reader {
        bytes: message.get(4..).ok_or("ClientHello too short")?,
    };
    let version = r.u16("ClientHello truncated in its version")?;
    if version >> 8 != 3 {
        return Err("ClientHello version is not TLS");
    }
    r.take(32, "ClientHello truncated in its random")?;
    let session_id = r.vec8("ClientHello truncated in its session id")?;
    if session_id.len() > 32 {
        return Err("session id longer than 32 bytes");
    }
    let suites = r.vec16("ClientHello truncated in its cipher suites")?;
    if suites.is_empty() || suites.len() % 2 != 0 {
        return Err("cipher suites list is empty or odd");
    }
    let compression = r.vec8("ClientHello truncated in its compression methods")?;
    if compression.is_empty() {
        return Err("compression methods list is empty");
    }
    if r.is_empty() {
        return Ok(()); // no extensions at all (SSL 3.0-style hello)
    }
    let extensions = r.vec16("ClientHello truncated in its extensions")?;
    if !r.is_empty() {
        return Err("bytes after the ClientHello extensions");
    }
    let mut r = Reader { bytes: extensions };
    let mut seen = Vec::new();
    while !r.is_empty() {
        let kind = r.u16("extension truncated in its type")?;
        let body = r.vec16("extension truncated in its body")?;
        if seen.contains(&kind) {
            return Err("extension repeated");
        }
        seen.push(kind);
        each(kind, body)?;
    }
    Ok(())
}

/// The server_name extension (RFC 6066 §3): a list holding one host_name.
fn server_name(body: &[u8]) -> Result<String, &'static str> {
    let mut outer = Reader { bytes: body };
    let list = outer.vec16("server_name extension truncated")?;
    if !outer.is_empty() {
        return Err("bytes after the server_name list");
    }
    let mut r = Reader { bytes: list };
    let mut host = None;
    while !r.is_empty() {
        let kind = r.u8("server_name entry truncated")?;
        let name = r.vec16("server_name entry truncated")?;
        if kind == NAME_TYPE_HOST_NAME {
            if host.is_some() {
                return Err("server_name has two host_name entries");
            }
            host = Some(name);
        }
    }
    let host = host.ok_or("server_name has no host_name entry")?;
    let text = std::str::from_utf8(host).map_err(|_| "server name is not ASCII")?;
    hostname::normalize(text)
}

/// The input length at which `parse` can next give a different answer than
/// `NeedMore`: the end of the first incomplete record, the end of the next
/// record header, or `input.len()` itself when the input ends on a record
/// boundary (parse now). Lets a reader that gets bytes a few at a time parse
/// once per record instead of once per read.
pub fn wanted(input: &[u8]) -> usize {
    let mut at = 0;
    while let Some(h) = input.get(at..at + 5) {
        let next = at + 5 + usize::from(u16::from_be_bytes([h[3], h[4]]));
        if next > input.len() {
            return next;
        }
        at = next;
    }
    if at == input.len() {
        at
    } else {
        at + 5
    }
}

/// A TLS alert record (TLS 1.2 record version, as TLS 1.3 also sends before
/// encryption starts): fatal (level 2) with `description`.
pub fn alert(description: u8) -> [u8; 7] {
    [21, 3, 3, 0, 2, 2, description]
}

/// `unrecognized_name` (RFC 6066): no route for the name, or no name.
pub const ALERT_UNRECOGNIZED_NAME: u8 = 112;
/// `decode_error`: the ClientHello could not be parsed.
pub const ALERT_DECODE_ERROR: u8 = 50;
/// `internal_error`: the route exists but cannot be served.
pub const ALERT_INTERNAL_ERROR: u8 = 80;

#[cfg(test)]
mod tests;
