//! Tests of the ClientHello parser: synthetic hellos built field by field,
//! hellos recorded from real TLS stacks (testdata/), and properties (no panic on
//! any bytes; every prefix of a valid hello asks for more).

use super::*;
use proptest::prelude::*;

/// A ClientHello handshake message (header included) with `sni`, a key share of
/// `key_share_len` bytes and GREASE values in suites, extensions and groups.
fn hello(sni: Option<&str>, key_share_len: usize) -> Vec<u8> {
    let mut body = vec![3, 3];
    body.extend_from_slice(&[7; 32]);
    body.push(32);
    body.extend_from_slice(&[9; 32]);
    let suites: [u16; 4] = [0x0a0a, 0x1301, 0x1302, 0xc02f];
    body.extend_from_slice(&((suites.len() * 2) as u16).to_be_bytes());
    for s in suites {
        body.extend_from_slice(&s.to_be_bytes());
    }
    body.extend_from_slice(&[1, 0]);
    let mut ext = Vec::new();
    let mut push = |kind: u16, data: &[u8]| {
        ext.extend_from_slice(&kind.to_be_bytes());
        ext.extend_from_slice(&(data.len() as u16).to_be_bytes());
        ext.extend_from_slice(data);
    };
    push(0x1a1a, &[]); // GREASE
    if let Some(name) = sni {
        let mut entry = vec![NAME_TYPE_HOST_NAME];
        entry.extend_from_slice(&(name.len() as u16).to_be_bytes());
        entry.extend_from_slice(name.as_bytes());
        let mut list = (entry.len() as u16).to_be_bytes().to_vec();
        list.extend_from_slice(&entry);
        push(EXT_SERVER_NAME, &list);
    }
    // key_share: GREASE group then X25519MLKEM768-sized share.
    let mut ks = Vec::new();
    ks.extend_from_slice(&[0x2a, 0x2a, 0, 1, 0]);
    ks.extend_from_slice(&0x11ecu16.to_be_bytes());
    ks.extend_from_slice(&(key_share_len as u16).to_be_bytes());
    ks.extend(std::iter::repeat_n(0x55, key_share_len));
    let mut share = (ks.len() as u16).to_be_bytes().to_vec();
    share.extend_from_slice(&ks);
    push(51, &share);
    push(0x3a3a, &[0]); // GREASE with a body
    body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
    body.extend_from_slice(&ext);
    let mut msg = vec![HANDSHAKE_CLIENT_HELLO];
    msg.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    msg.extend_from_slice(&body);
    msg
}

/// `message` in handshake records of at most `max` payload bytes each.
fn records(message: &[u8], max: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for chunk in message.chunks(max) {
        out.extend_from_slice(&[CONTENT_HANDSHAKE, 3, 1]);
        out.extend_from_slice(&(chunk.len() as u16).to_be_bytes());
        out.extend_from_slice(chunk);
    }
    out
}

fn one(message: &[u8]) -> Vec<u8> {
    records(message, MAX_RECORD)
}

#[test]
fn synthetic_table() {
    let big = hello(Some("pq.example"), 1216);
    let small = hello(Some("a.example"), 32);
    let huge = hello(Some("pq.example"), 16500);
    let mut no_ext = hello(None, 0);
    // Cut the extensions block entirely: header length fixed below.
    let ext_at = 4 + 2 + 32 + 1 + 32 + 2 + 8 + 2;
    no_ext.truncate(ext_at);
    let len = (no_ext.len() - 4) as u32;
    no_ext[1..4].copy_from_slice(&len.to_be_bytes()[1..]);
    let mut trailing = one(&hello(Some("a.example"), 32));
    trailing.extend_from_slice(b"application data after the hello");
    let mut bad_type = one(&hello(Some("a.example"), 32));
    bad_type[5] = 2;
    let mut sslv2 = one(&hello(Some("a.example"), 32));
    sslv2[0] = 0x80;
    let cases: Vec<(&str, Vec<u8>, Parsed)> = vec![
        (
            "plain",
            one(&hello(Some("a.example"), 32)),
            Parsed::Found("a.example".into()),
        ),
        (
            "uppercase",
            one(&hello(Some("A.EXAMPLE"), 32)),
            Parsed::Found("a.example".into()),
        ),
        ("no sni", one(&hello(None, 32)), Parsed::NoSni),
        ("no extensions", one(&no_ext), Parsed::NoSni),
        (
            "pq key share, one record",
            one(&big),
            Parsed::Found("pq.example".into()),
        ),
        (
            "pq key share, 3 records",
            records(&big, 512),
            Parsed::Found("pq.example".into()),
        ),
        (
            "64 records",
            records(&small, small.len().div_ceil(64)),
            Parsed::Found("a.example".into()),
        ),
        (
            "65 records",
            records(&small, small.len() / 65),
            Parsed::Invalid("ClientHello spread over more than 64 records"),
        ),
        (
            "trailing bytes ignored",
            trailing,
            Parsed::Found("a.example".into()),
        ),
        ("empty", vec![], Parsed::NeedMore),
        (
            "http",
            b"GET / HTTP/1.1\r\n".to_vec(),
            Parsed::Invalid("not a TLS handshake record"),
        ),
        (
            "sslv2",
            sslv2,
            Parsed::Invalid("not a TLS handshake record"),
        ),
        (
            "server hello",
            bad_type,
            Parsed::Invalid("first handshake message is not a ClientHello"),
        ),
        (
            "above 16 KiB",
            records(&huge, 4096),
            Parsed::Invalid("ClientHello larger than 16 KiB"),
        ),
        (
            "ip literal",
            one(&hello(Some("10.0.0.1"), 32)),
            Parsed::Invalid("hostname is an IP address or ends in a numeric label"),
        ),
        (
            "underscore",
            one(&hello(Some("a_b.example"), 32)),
            Parsed::Invalid("hostname has a character outside a-z, 0-9 and -"),
        ),
        (
            "trailing dot",
            one(&hello(Some("a.example."), 32)),
            Parsed::Invalid("empty label in hostname"),
        ),
        (
            "empty record",
            vec![22, 3, 1, 0, 0],
            Parsed::Invalid("empty handshake record"),
        ),
        (
            "alert record",
            vec![21, 3, 3, 0, 2, 2, 40],
            Parsed::Invalid("not a TLS handshake record"),
        ),
    ];
    for (name, bytes, want) in cases {
        assert_eq!(parse(&bytes), want, "{name}");
    }
}

#[test]
fn non_utf8_name_is_invalid() {
    let mut msg = hello(Some("ab.example"), 32);
    let at = msg
        .windows(10)
        .position(|w| w == b"ab.example")
        .expect("name in hello");
    msg[at] = 0xff;
    assert_eq!(
        parse(&one(&msg)),
        Parsed::Invalid("server name is not ASCII")
    );
}

#[test]
fn record_split_lengths_are_checked() {
    // A second record that is not a handshake record, mid-ClientHello.
    let msg = hello(Some("a.example"), 32);
    let mut bytes = records(&msg[..20], 20);
    bytes.extend_from_slice(&[23, 3, 3, 0, 5, 1, 2, 3, 4, 5]);
    assert_eq!(parse(&bytes), Parsed::Invalid("not a TLS handshake record"));
}

/// A file of testdata/.
fn recorded(file: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(file);
    std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// The hellos recorded from real clients (see testdata/README.md).
#[test]
fn recorded_hellos() {
    let cases = [
        ("openssl-s_client.bin", Parsed::Found("x.example".into())),
        (
            "openssl-tls12.bin",
            Parsed::Found("mixed.case.example".into()),
        ),
        ("openssl-noservername.bin", Parsed::NoSni),
        ("curl.bin", Parsed::Found("curl.example".into())),
        ("gnutls-cli.bin", Parsed::Found("gnutls.example".into())),
        ("rustls.bin", Parsed::Found("rustls.example".into())),
        ("chromium.bin", Parsed::Found("chromium.example".into())),
        ("chromium-ip.bin", Parsed::NoSni),
    ];
    for (file, want) in cases {
        let bytes = recorded(file);
        assert_eq!(parse(&bytes), want, "{file}");
        for cut in 0..bytes.len() {
            assert_eq!(
                parse(&bytes[..cut]),
                Parsed::NeedMore,
                "{file} cut at {cut}"
            );
        }
    }
}

/// What a test needs to see of a ClientHello, read independently of the parser
/// (panicking on bad input, as only recorded hellos are given to it).
struct Fields {
    /// The handshake message, header included, joined from its records.
    message: Vec<u8>,
    records: usize,
    suites: Vec<u16>,
    /// Extensions in the order sent: type and body.
    extensions: Vec<(u16, Vec<u8>)>,
}

impl Fields {
    fn of(bytes: &[u8]) -> Fields {
        let be16 = |b: &[u8], at: usize| u16::from_be_bytes([b[at], b[at + 1]]);
        let mut message = Vec::new();
        let mut at = 0;
        let mut records = 0;
        while message.len() < 4 || message.len() < message_len(&message).expect("header") {
            assert_eq!(bytes[at], CONTENT_HANDSHAKE, "handshake record");
            let len = usize::from(be16(bytes, at + 3));
            message.extend_from_slice(&bytes[at + 5..at + 5 + len]);
            at += 5 + len;
            records += 1;
        }
        let m = &message;
        let mut p = 4 + 2 + 32;
        p += 1 + usize::from(m[p]);
        let suites_len = usize::from(be16(m, p));
        let suites = (0..suites_len / 2)
            .map(|i| be16(m, p + 2 + 2 * i))
            .collect();
        p += 2 + suites_len;
        p += 1 + usize::from(m[p]);
        let end = p + 2 + usize::from(be16(m, p));
        assert_eq!(end, m.len(), "extensions end the hello");
        p += 2;
        let mut extensions = Vec::new();
        while p < end {
            let len = usize::from(be16(m, p + 2));
            extensions.push((be16(m, p), m[p + 4..p + 4 + len].to_vec()));
            p += 4 + len;
        }
        Fields {
            message,
            records,
            suites,
            extensions,
        }
    }

    fn extension(&self, kind: u16) -> &[u8] {
        self.extensions
            .iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, body)| body.as_slice())
            .unwrap_or_else(|| panic!("no extension {kind:#06x}"))
    }

    /// supported_groups (10): the named groups offered.
    fn groups(&self) -> Vec<u16> {
        let body = self.extension(10);
        body[2..]
            .chunks(2)
            .map(|c| u16::from_be_bytes([c[0], c[1]]))
            .collect()
    }

    /// key_share (51): each share's group and key length.
    fn key_shares(&self) -> Vec<(u16, usize)> {
        let body = self.extension(51);
        let mut shares = Vec::new();
        let mut p = 2;
        while p < body.len() {
            let group = u16::from_be_bytes([body[p], body[p + 1]]);
            let len = usize::from(u16::from_be_bytes([body[p + 2], body[p + 3]]));
            shares.push((group, len));
            p += 4 + len;
        }
        shares
    }
}

/// RFC 8701: GREASE values are 0x0a0a, 0x1a1a, ... 0xfafa.
fn is_grease(v: u16) -> bool {
    v & 0x0f0f == 0x0a0a && v >> 8 == v & 0xff
}

const X25519_MLKEM768: u16 = 0x11ec;
const X25519_KYBER768_DRAFT: u16 = 0x6399;

/// Chromium offers a post-quantum hybrid key share, which makes its hello
/// larger than a typical TCP segment's payload (1,448 bytes at MTU 1500).
#[test]
fn chromium_offers_a_post_quantum_key_share() {
    for file in ["chromium.bin", "chromium-ip.bin"] {
        let bytes = recorded(file);
        let hello = Fields::of(&bytes);
        assert!(
            hello.message.len() > 1500,
            "{file}: {}",
            hello.message.len()
        );
        // In one record: Chromium (BoringSSL) does not split its hello.
        assert_eq!(hello.records, 1, "{file}");
        let pq = [X25519_MLKEM768, X25519_KYBER768_DRAFT];
        assert!(
            hello.groups().iter().any(|g| pq.contains(g)),
            "{file}: groups {:04x?}",
            hello.groups()
        );
        let share = hello
            .key_shares()
            .into_iter()
            .find(|(g, _)| pq.contains(g))
            .unwrap_or_else(|| panic!("{file}: no PQ key share"));
        // ML-KEM-768 encapsulation key (1184) + X25519 (32); Kyber draft 1216 too.
        assert_eq!(share.1, 1216, "{file}");
    }
}

/// Chromium sends GREASE (RFC 8701) in its cipher suites, extensions (an empty
/// one first, a one-byte one last), groups, key shares and versions; the parser
/// skips them as any unknown value.
#[test]
fn chromium_sends_grease() {
    for file in ["chromium.bin", "chromium-ip.bin"] {
        let hello = Fields::of(&recorded(file));
        assert!(
            is_grease(hello.suites[0]),
            "{file}: suites {:04x?}",
            hello.suites
        );
        let kinds: Vec<u16> = hello.extensions.iter().map(|(k, _)| *k).collect();
        assert_eq!(
            kinds.iter().filter(|k| is_grease(**k)).count(),
            2,
            "{file}: {kinds:04x?}"
        );
        assert!(hello.groups().iter().any(|g| is_grease(*g)), "{file}");
        assert!(
            hello.key_shares().iter().any(|(g, _)| is_grease(*g)),
            "{file}"
        );
        let versions = hello.extension(43);
        assert!(
            versions[1..]
                .chunks(2)
                .any(|v| is_grease(u16::from_be_bytes([v[0], v[1]]))),
            "{file}: supported_versions {versions:02x?}"
        );
    }
}

/// The proxy's reader (`proxy::read_hello`) over `chunks` as successive reads:
/// parse after the first read, then only once `wanted` bytes are in. Returns the
/// answer and the number of reads it took.
fn read_in(chunks: &[&[u8]]) -> (Parsed, usize) {
    let mut buf = Vec::new();
    for (i, chunk) in chunks.iter().enumerate() {
        buf.extend_from_slice(chunk);
        if i > 0 && buf.len() < wanted(&buf) {
            continue;
        }
        match parse(&buf) {
            Parsed::NeedMore => {}
            done => return (done, i + 1),
        }
    }
    (Parsed::NeedMore, chunks.len())
}

/// Every recorded hello, cut into two reads at every point, and into reads of
/// common TCP segment payload sizes, is answered on the last read with the
/// answer of the whole; also re-framed into several records, as a client
/// splitting its hello would send it.
#[test]
fn recorded_hellos_split_into_segments() {
    for (file, want) in [
        ("chromium.bin", Parsed::Found("chromium.example".into())),
        ("chromium-ip.bin", Parsed::NoSni),
        ("curl.bin", Parsed::Found("curl.example".into())),
    ] {
        let one_record = recorded(file);
        let message = Fields::of(&one_record).message;
        for bytes in [one_record, records(&message, 1000), records(&message, 100)] {
            for cut in 1..bytes.len() {
                let (head, tail) = bytes.split_at(cut);
                assert_eq!(
                    read_in(&[head, tail]),
                    (want.clone(), 2),
                    "{file} cut at {cut}"
                );
            }
            for segment in [1, 7, 536, 1220, 1448, 8960] {
                let chunks: Vec<&[u8]> = bytes.chunks(segment).collect();
                assert_eq!(
                    read_in(&chunks),
                    (want.clone(), chunks.len()),
                    "{file} in {segment}-byte segments"
                );
            }
        }
    }
}

proptest! {
    /// The chromium hello in random reads (and random record framing) is
    /// answered exactly on its last read.
    #[test]
    fn chromium_hello_in_random_reads(
        cuts in proptest::collection::btree_set(1usize..4000, 0..12),
        record in prop_oneof![Just(MAX_RECORD), 40usize..2000],
    ) {
        let message = Fields::of(&recorded("chromium.bin")).message;
        let bytes = records(&message, record);
        let mut chunks = Vec::new();
        let mut from = 0;
        for cut in cuts.into_iter().filter(|&c| c < bytes.len()) {
            chunks.push(&bytes[from..cut]);
            from = cut;
        }
        chunks.push(&bytes[from..]);
        prop_assert_eq!(read_in(&chunks), (Parsed::Found("chromium.example".into()), chunks.len()));
    }
}

/// A ClientHello from rustls (the stack of MCP's own clients), generated in
/// process; it must parse as the recorded one does.
#[test]
fn rustls_hello() {
    use mcp_pki::rustls::{ClientConfig, ClientConnection, RootCertStore};
    use std::sync::Arc;
    let config = ClientConfig::builder()
        .with_root_certificates(RootCertStore::empty())
        .with_no_client_auth();
    let name = "rustls.example".try_into().expect("server name");
    let mut conn = ClientConnection::new(Arc::new(config), name).expect("client");
    let mut bytes = Vec::new();
    conn.write_tls(&mut bytes).expect("write hello");
    assert_eq!(parse(&bytes), Parsed::Found("rustls.example".into()));
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/rustls.bin");
    if std::env::var_os("MC_PROXY_RECORD").is_some() {
        std::fs::write(&path, &bytes).expect("record rustls hello");
    }
}

#[test]
fn alert_bytes() {
    assert_eq!(alert(ALERT_UNRECOGNIZED_NAME), [0x15, 3, 3, 0, 2, 2, 0x70]);
}

fn name_strategy() -> impl Strategy<Value = String> {
    proptest::string::string_regex("[a-z0-9]{1,10}(\\.[a-z0-9]{1,10}){0,3}\\.[a-z]{2,6}")
        .expect("regex")
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let _ = parse(&bytes);
    }

    #[test]
    fn mutated_hello_never_panics(at in 0usize..400, value in any::<u8>(), name in name_strategy()) {
        let mut bytes = one(&hello(Some(&name), 64));
        let i = at % bytes.len();
        bytes[i] = value;
        let _ = parse(&bytes);
    }

    #[test]
    fn every_prefix_needs_more(name in name_strategy(), share in 0usize..2000, max in 40usize..3000) {
        let bytes = records(&hello(Some(&name), share), max);
        for cut in 0..bytes.len() {
            prop_assert_eq!(parse(&bytes[..cut]), Parsed::NeedMore, "cut at {}", cut);
        }
        prop_assert_eq!(parse(&bytes), Parsed::Found(name));
    }
}

#[test]
fn wanted_is_the_next_record_end() {
    assert_eq!(wanted(&[]), 0);
    assert_eq!(wanted(&[22, 3, 1]), 5);
    assert_eq!(wanted(&[22, 3, 1, 0, 10]), 15);
    assert_eq!(wanted(&[22, 3, 1, 0, 1, 1]), 6);
    assert_eq!(wanted(&[22, 3, 1, 0, 1, 1, 22]), 11);
}

proptest! {
    /// Parsing only where `wanted` says gives the same answers as parsing at
    /// every length: no final answer is missed or delayed past a record end.
    #[test]
    fn wanted_never_skips_an_answer(name in name_strategy(), share in 0usize..600, max in 12usize..200) {
        let bytes = records(&hello(Some(&name), share), max);
        let mut first_final = None;
        for len in 1..=bytes.len() {
            let prefix = &bytes[..len];
            if len >= wanted(prefix) && parse(prefix) != Parsed::NeedMore {
                first_final = Some(len);
                break;
            }
        }
        prop_assert_eq!(first_final, Some(bytes.len()));
    }
}

#[test]
fn alpn_offers_of_recorded_hellos() {
    let cases: [(&str, &[u8], bool); 6] = [
        ("curl.bin", b"h2", true),
        ("curl.bin", b"http/1.1", true),
        ("curl.bin", b"acme-tls/1", false),
        ("chromium.bin", b"h2", true),
        ("openssl-s_client.bin", b"h2", false),
        ("openssl-noservername.bin", b"http/1.1", false),
    ];
    for (file, protocol, want) in cases {
        let bytes = recorded(file);
        assert_eq!(
            offers_alpn(&bytes, protocol),
            want,
            "{file} {}",
            String::from_utf8_lossy(protocol)
        );
    }
    let curl = recorded("curl.bin");
    assert!(!offers_alpn(&curl[..curl.len() - 1], b"h2"), "a cut hello");
    assert!(!offers_alpn(b"GET / HTTP/1.1\r\n\r\n", b"h2"));
}
