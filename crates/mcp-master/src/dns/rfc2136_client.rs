//! The wire side of the `rfc2136` backend: one TCP connection to the primary, a
//! TSIG-signed zone transfer (AXFR) to read back what it holds, and TSIG-signed
//! UPDATE messages (RFC 2136). hickory-proto builds, signs, parses and verifies every
//! message; hickory-net frames them on TCP. Nothing here writes the wire format.
//!
//! Every answer is read with a deadline, a refusal comes back with the server's RCODE
//! (and the TSIG error, when the server could not verify us), and a NOERROR answer
//! counts only once its TSIG signature verifies with our key.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use hickory_net::runtime::{RuntimeProvider, TokioRuntimeProvider};
use hickory_net::tcp::TcpClientStream;
use hickory_net::{BufDnsStreamHandle, DnsStreamHandle};
use hickory_proto::op::{
    update_message, Message, MessageType, OpCode, Query, ResponseCode, SerialMessage, UpdateMessage,
};
use hickory_proto::rr::rdata::tsig::{TsigAlgorithm, TsigError};
use hickory_proto::rr::rdata::{A, AAAA, SRV, TXT};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType, TSigner};

/// The TXT string MCP puts at every name it owns (as external-dns does): only names
/// carrying it are ever changed or emptied.
pub const OWNER_TXT: &str = "heritage=mcp";

/// Allowed clock difference with the server for TSIG (RFC 8945 recommends 300 s).
const FUDGE: u16 = 300;

/// A zone transfer longer than this many messages is refused (a bound, not a limit
/// any real zone of MCP's reaches: BIND packs hundreds of records per message).
const MAX_TRANSFER_MESSAGES: usize = 100_000;

/// One record of a kind MCP manages, at some name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Rr {
    A(Ipv4Addr),
    Aaaa(Ipv6Addr),
    Srv {
        priority: u16,
        weight: u16,
        port: u16,
        /// Lowercase, absolute, without the trailing dot.
        target: String,
    },
    /// The ownership marker, TXT [`OWNER_TXT`].
    Owner,
}

/// What the server holds at one name, as far as MCP cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Held {
    /// A record of a kind MCP manages, with its TTL.
    Rr(Rr, u32),
    /// Anything else (SOA, NS, MX, another TXT...): the name is in use.
    Other,
}

/// Why an exchange with the server failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The server answered with an error RCODE.
    Refused {
        what: &'static str,
        rcode: ResponseCode,
        tsig: Option<TsigError>,
    },
    /// No connection, a closed connection or no answer in time.
    Transport(String),
    /// An answer we cannot accept (unsigned, a bad signature, malformed).
    Protocol(String),
}

impl Failure {
    /// The RCODE of a refusal, as its mnemonic.
    pub fn rcode(&self) -> Option<String> {
        match self {
            Failure::Refused { rcode, .. } => Some(rcode_name(*rcode)),
            _ => None,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Refused { what, rcode, tsig } => {
                write!(f, "{what} refused: {}", rcode_name(*rcode))?;
                if let Some(t) = tsig {
                    write!(f, " (TSIG {})", tsig_error_name(t))?;
                }
                match rcode {
                    ResponseCode::NotAuth if tsig.is_some() => {
                        f.write_str(": the server does not know the key, or its secret differs")
                    }
                    ResponseCode::NotAuth => {
                        f.write_str(": the server is not authoritative for the zone")
                    }
                    ResponseCode::NotZone => f.write_str(": a name outside the zone"),
                    ResponseCode::Refused if *what == "zone transfer" => f.write_str(
                        ": the server must allow it for the key (allow-transfer { key ...; })",
                    ),
                    ResponseCode::Refused => {
                        f.write_str(": the key may not update the zone (update-policy)")
                    }
                    _ => Ok(()),
                }
            }
            Failure::Transport(e) => f.write_str(e),
            Failure::Protocol(e) => f.write_str(e),
        }
    }
}

/// "NOTAUTH", "REFUSED", ... as dig prints them.
pub fn rcode_name(rcode: ResponseCode) -> String {
    let code = u16::from(rcode);
    match code {
        0 => "NOERROR".into(),
        1 => "FORMERR".into(),
        2 => "SERVFAIL".into(),
        3 => "NXDOMAIN".into(),
        4 => "NOTIMP".into(),
        5 => "REFUSED".into(),
        6 => "YXDOMAIN".into(),
        7 => "YXRRSET".into(),
        8 => "NXRRSET".into(),
        9 => "NOTAUTH".into(),
        10 => "NOTZONE".into(),
        n => format!("RCODE {n}"),
    }
}

fn tsig_error_name(e: &TsigError) -> String {
    match e {
        TsigError::BadSig => "BADSIG".into(),
        TsigError::BadKey => "BADKEY".into(),
        TsigError::BadTime => "BADTIME".into(),
        TsigError::BadTrunc => "BADTRUNC".into(),
        TsigError::Unknown(n) => format!("error {n}"),
    }
}

/// A TSIG hmac-sha256 signer for `key_name` with the decoded secret.
pub fn signer(key_name: &str, key: Vec<u8>) -> anyhow::Result<TSigner> {
    let name = Name::from_ascii(key_name)
        .map_err(|e| anyhow::anyhow!("TSIG key name {key_name:?}: {e}"))?;
    TSigner::new(key, TsigAlgorithm::HmacSha256, name, FUDGE)
        .map_err(|e| anyhow::anyhow!("TSIG hmac-sha256: {e}"))
}

/// An absolute hickory name for `name` (written without the trailing dot).
pub fn fqdn(name: &str) -> Result<Name, Failure> {
    let mut n =
        Name::from_ascii(name).map_err(|e| Failure::Protocol(format!("name {name:?}: {e}")))?;
    n.set_fqdn(true);
    Ok(n)
}

/// `name` lowercase and without its trailing dot, as the zone projection writes it.
fn plain(name: &Name) -> String {
    let s = name.to_lowercase().to_ascii();
    s.strip_suffix('.').unwrap_or(&s).to_string()
}

/// What `record` says, for the kinds MCP manages.
pub fn held(record: &Record) -> Held {
    match &record.data {
        RData::A(a) => Held::Rr(Rr::A(a.0), record.ttl),
        RData::AAAA(a) => Held::Rr(Rr::Aaaa(a.0), record.ttl),
        RData::SRV(s) => Held::Rr(
            Rr::Srv {
                priority: s.priority,
                weight: s.weight,
                port: s.port,
                target: plain(&s.target),
            },
            record.ttl,
        ),
        RData::TXT(t) if t.txt_data.len() == 1 && &*t.txt_data[0] == OWNER_TXT.as_bytes() => {
            Held::Rr(Rr::Owner, record.ttl)
        }
        _ => Held::Other,
    }
}

/// The owner name of `record`, lowercase and without the trailing dot.
pub fn owner(record: &Record) -> String {
    plain(&record.name)
}

fn rdata(rr: &Rr) -> Result<RData, Failure> {
    Ok(match rr {
        Rr::A(ip) => RData::A(A(*ip)),
        Rr::Aaaa(ip) => RData::AAAA(AAAA(*ip)),
        Rr::Srv {
            priority,
            weight,
            port,
            target,
        } => RData::SRV(SRV::new(*priority, *weight, *port, fqdn(target)?)),
        Rr::Owner => RData::TXT(TXT::new(vec![OWNER_TXT.to_string()])),
    })
}

/// Changes at one name: the prerequisite, then what to delete and what to add.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub name: String,
    /// The name must not be in use (MCP claims a new name), else it must carry
    /// MCP's TXT (MCP changes a name it owns).
    pub fresh: bool,
    pub delete: Vec<Rr>,
    pub add: Vec<Rr>,
}

/// One UPDATE message for `changes` in `zone`, adds with `ttl`.
pub fn update(zone: &Name, changes: &[Change], ttl: u32) -> Result<Message, Failure> {
    let mut message = Message::query();
    message.metadata.op_code = OpCode::Update;
    message.metadata.recursion_desired = false;
    let mut query = Query::new();
    query
        .set_name(zone.clone())
        .set_query_class(DNSClass::IN)
        .set_query_type(RecordType::SOA);
    message.add_zone(query);
    for change in changes {
        let name = fqdn(&change.name)?;
        if !zone.zone_of(&name) {
            return Err(Failure::Protocol(format!(
                "{} is outside the zone {zone}",
                change.name
            )));
        }
        // RFC 2136 2.4.5 "Name Is Not In Use" (class NONE, type ANY), or 2.4.1
        // "RRset Exists" (class ANY) for the TXT: MCP's marker is there.
        let mut pre = if change.fresh {
            Record::update0(name.clone(), 0, RecordType::ANY)
        } else {
            Record::update0(name.clone(), 0, RecordType::TXT)
        };
        pre.dns_class = if change.fresh {
            DNSClass::NONE
        } else {
            DNSClass::ANY
        };
        message.add_pre_requisite(pre);
        // 2.5.4 "Delete An RR From An RRset": class NONE, TTL 0.
        for rr in &change.delete {
            let mut r = Record::from_rdata(name.clone(), 0, rdata(rr)?);
            r.dns_class = DNSClass::NONE;
            message.add_update(r);
        }
        // 2.5.1 "Add To An RRset" (a known record with another TTL takes the new one).
        for rr in &change.add {
            message.add_update(Record::from_rdata(name.clone(), ttl, rdata(rr)?));
        }
    }
    Ok(message)
}

type Stream = TcpClientStream<<TokioRuntimeProvider as RuntimeProvider>::Tcp>;

/// One TCP connection to the primary.
pub struct Conn {
    stream: Stream,
    handle: BufDnsStreamHandle,
    server: SocketAddr,
    timeout: Duration,
}

impl Conn {
    pub async fn connect(server: SocketAddr, timeout: Duration) -> Result<Conn, Failure> {
        let (connect, handle) =
            TcpClientStream::new(server, None, Some(timeout), TokioRuntimeProvider::new());
        let stream = match tokio::time::timeout(timeout, connect).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(Failure::Transport(format!("connect: {e}"))),
            Err(_) => {
                return Err(Failure::Transport(format!(
                    "connect: no answer within {timeout:?}"
                )))
            }
        };
        Ok(Conn {
            stream,
            handle,
            server,
            timeout,
        })
    }

    async fn send(&mut self, message: &Message) -> Result<(), Failure> {
        let bytes = message
            .to_vec()
            .map_err(|e| Failure::Protocol(format!("encode: {e}")))?;
        self.handle
            .send(SerialMessage::new(bytes, self.server))
            .map_err(|e| Failure::Transport(format!("send: {e}")))
    }

    async fn recv(&mut self) -> Result<Vec<u8>, Failure> {
        match tokio::time::timeout(self.timeout, self.stream.next()).await {
            Ok(Some(Ok(m))) => Ok(m.into_parts().0),
            Ok(Some(Err(e))) => Err(Failure::Transport(format!("receive: {e}"))),
            Ok(None) => Err(Failure::Transport(
                "the server closed the connection".into(),
            )),
            Err(_) => Err(Failure::Transport(format!(
                "no answer within {:?}",
                self.timeout
            ))),
        }
    }

    /// Signs `message`, sends it, and reads answers until `done` says the exchange is
    /// over; each answer is checked (id, RCODE, TSIG) before `done` sees it.
    async fn exchange(
        &mut self,
        mut message: Message,
        signer: &TSigner,
        what: &'static str,
        mut done: impl FnMut(Message) -> Result<bool, Failure>,
    ) -> Result<(), Failure> {
        let id = message.metadata.id;
        let mut verifier = message
            .finalize(signer, unix_now())
            .map_err(|e| Failure::Protocol(format!("sign the {what}: {e}")))?
            .ok_or_else(|| Failure::Protocol(format!("sign the {what}: no verifier")))?;
        self.send(&message).await?;
        for _ in 0..MAX_TRANSFER_MESSAGES {
            let bytes = self.recv().await?;
            let answer = Message::from_vec(&bytes)
                .map_err(|e| Failure::Protocol(format!("{what}: a malformed answer: {e}")))?;
            if answer.metadata.id != id || answer.metadata.message_type != MessageType::Response {
                return Err(Failure::Protocol(format!(
                    "{what}: an answer to another message (id {})",
                    answer.metadata.id
                )));
            }
            if answer.metadata.response_code != ResponseCode::NoError {
                // Refusals of an unverifiable request come unsigned (RFC 8945 5.2):
                // the RCODE and TSIG error are all there is to report.
                return Err(Failure::Refused {
                    what,
                    rcode: answer.metadata.response_code,
                    tsig: answer.signature().and_then(|s| s.data.error),
                });
            }
            let verified = verifier.verify(&bytes).map_err(|e| {
                Failure::Protocol(format!("{what}: the answer's TSIG does not verify: {e}"))
            })?;
            if done(verified.into_message())? {
                return Ok(());
            }
        }
        Err(Failure::Protocol(format!(
            "{what}: more than {MAX_TRANSFER_MESSAGES} messages"
        )))
    }

    /// Every record of `zone` (AXFR), the closing SOA left out.
    pub async fn transfer(
        &mut self,
        zone: &Name,
        signer: &TSigner,
    ) -> Result<Vec<Record>, Failure> {
        let message = update_message::zone_transfer(zone.clone(), None);
        let mut records = Vec::new();
        let mut soas = 0;
        self.exchange(message, signer, "zone transfer", |answer| {
            for record in answer.answers {
                if record.record_type() == RecordType::SOA {
                    soas += 1;
                    if soas == 2 {
                        return Ok(true);
                    }
                } else if soas == 0 {
                    return Err(Failure::Protocol(
                        "zone transfer: the first record is not the SOA".into(),
                    ));
                }
                records.push(record);
            }
            Ok(false)
        })
        .await?;
        Ok(records)
    }

    /// Sends one UPDATE and waits for its NOERROR.
    pub async fn update(&mut self, message: Message, signer: &TSigner) -> Result<(), Failure> {
        self.exchange(message, signer, "update", |_| Ok(true)).await
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn managed_kinds_round_trip_and_others_are_in_use() {
        let zone = fqdn("svc.mcp.example.net").unwrap();
        let rrs = [
            Rr::A("10.0.0.1".parse().unwrap()),
            Rr::Aaaa("fd00::1".parse().unwrap()),
            Rr::Srv {
                priority: 0,
                weight: 0,
                port: 8443,
                target: "hello.svc.mcp.example.net".into(),
            },
            Rr::Owner,
        ];
        for rr in rrs {
            let r = Record::from_rdata(
                fqdn("Hello.svc.mcp.example.net").unwrap(),
                30,
                rdata(&rr).unwrap(),
            );
            assert_eq!(held(&r), Held::Rr(rr, 30));
            assert_eq!(owner(&r), "hello.svc.mcp.example.net");
        }
        let other = Record::from_rdata(
            fqdn("hello.svc.mcp.example.net").unwrap(),
            30,
            RData::TXT(TXT::new(vec!["heritage=someone-else".into()])),
        );
        assert_eq!(held(&other), Held::Other);
        let change = Change {
            name: "elsewhere.example.org".into(),
            fresh: true,
            delete: vec![],
            add: vec![Rr::Owner],
        };
        assert!(matches!(
            update(&zone, &[change], 30),
            Err(Failure::Protocol(_))
        ));
    }

    #[test]
    fn refusals_name_the_rcode() {
        let f = Failure::Refused {
            what: "update",
            rcode: ResponseCode::NotAuth,
            tsig: Some(TsigError::BadSig),
        };
        assert!(f
            .to_string()
            .starts_with("update refused: NOTAUTH (TSIG BADSIG)"));
        assert_eq!(f.rcode().as_deref(), Some("NOTAUTH"));
        assert_eq!(rcode_name(ResponseCode::NotZone), "NOTZONE");
    }
}
