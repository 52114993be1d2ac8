//! The `embedded` DNS backend (SPEC §8): the master answers the internal zone
//! itself, authoritatively, over UDP and TCP on `[dns] listen`.
//!
//! The control loop publishes the zone in `MasterState.zone` after each settled
//! pass. One task here turns each new zone into a [`ZoneView`] (indexed by name,
//! with the next SOA serial) off the async workers and publishes it in a watch of
//! its own; the UDP workers and TCP connections keep the current `Arc<ZoneView>`
//! and look at that watch's version (an atomic) before each query, so a query never
//! waits on a deploy, the registry or a lock the loop holds. The answers themselves
//! are the pure [`answer::answer`].

#[path = "embedded_answer.rs"]
pub mod answer;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{watch, Semaphore};
use tokio::task::{JoinHandle, JoinSet};

use crate::config::DnsConfig;
use crate::reconcile::plan::dns::Zone;
use crate::state::MasterState;

pub use answer::{answer, Transport, ZoneView};

/// TCP connections served at once; more are closed at accept.
const MAX_TCP_CONNECTIONS: usize = 256;

/// A TCP connection with no complete query for this long is closed.
const TCP_IDLE: Duration = Duration::from_secs(10);

/// What the server answers.
#[derive(Debug, Clone)]
pub struct Settings {
    /// UDP and TCP (port 0: any free port, the same for both).
    pub listen: SocketAddr,
    /// The zone's origin, without the trailing dot (`svc.mcp.<domain>`).
    pub origin: String,
    /// Every record's TTL (and the negative answers').
    pub ttl: Duration,
    /// Where the last SOA serial is kept, so a restarted master never serves an
    /// older one (serials run ahead of the clock when the zone changes more than
    /// once a second). None: kept in memory only.
    pub serial_file: Option<std::path::PathBuf>,
}

/// Starts the backend; Err when it cannot (before the master serves anything).
pub async fn start(
    state: Arc<MasterState>,
    dns: &DnsConfig,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<JoinHandle<()>> {
    let listen = dns
        .listen
        .context("dns.listen: required for backend = \"embedded\"")?;
    let settings = Settings {
        listen,
        origin: state.config.internal_zone(),
        ttl: dns.ttl,
        serial_file: Some(state.config.data_dir.join("dns-serial")),
    };
    let (addr, handle) = serve(settings.clone(), state.zone.subscribe(), shutdown).await?;
    tracing::info!(
        zone = %settings.origin,
        %addr,
        "[dns] embedded server answering over UDP and TCP"
    );
    Ok(handle)
}

/// Binds UDP and TCP on `settings.listen` and answers from `zone` until `shutdown`;
/// returns the address bound (the port chosen when it was 0) and the server's task.
pub async fn serve(
    settings: Settings,
    zone: watch::Receiver<Option<Arc<Zone>>>,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<(SocketAddr, JoinHandle<()>)> {
    let listen = settings.listen;
    let udp = UdpSocket::bind(listen)
        .await
        .with_context(|| format!("[dns] listen {listen}: UDP"))?;
    let addr = udp
        .local_addr()
        .with_context(|| format!("[dns] listen {listen}: UDP"))?;
    let tcp = TcpListener::bind(addr)
        .await
        .with_context(|| format!("[dns] listen {addr}: TCP"))?;
    let pending = Arc::new(ZoneView::pending(&settings.origin)?);
    let (views_tx, views) = watch::channel(pending);
    let mut tasks = JoinSet::new();
    tasks.spawn(follow(settings, addr, zone, views_tx));
    let udp = Arc::new(udp);
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 4);
    for _ in 0..workers {
        tasks.spawn(serve_udp(udp.clone(), views.clone()));
    }
    tasks.spawn(serve_tcp(tcp, views));
    let handle = tokio::spawn(async move {
        tokio::select! {
            _ = shutdown.wait_for(|s| *s) => {}
            // A task ends only when the zone's sender is gone (the master is going).
            _ = tasks.join_next() => {}
        }
        tasks.shutdown().await;
    });
    Ok((addr, handle))
}

/// Turns each new zone into the view the queries read, with the next serial.
async fn follow(
    settings: Settings,
    addr: SocketAddr,
    mut zone: watch::Receiver<Option<Arc<Zone>>>,
    views: watch::Sender<Arc<ZoneView>>,
) {
    let mut last: Option<(Arc<Zone>, u32)> = None;
    // The serial a previous master served last, if it left one.
    let mut last_serial: Option<u32> = settings
        .serial_file
        .as_ref()
        .and_then(|f| std::fs::read_to_string(f).ok())
        .and_then(|t| t.trim().parse().ok());
    loop {
        let current = zone.borrow_and_update().clone();
        if let Some(current) = current {
            let unchanged = last
                .as_ref()
                .is_some_and(|(z, _)| Arc::ptr_eq(z, &current) || **z == *current);
            if !unchanged {
                let serial = answer::next_serial(last_serial, unix_now());
                let (origin, ttl, zone_arc) =
                    (settings.origin.clone(), settings.ttl, current.clone());
                let built = tokio::task::spawn_blocking(move || {
                    ZoneView::new(&zone_arc, &origin, ttl, serial, Some(addr.ip()))
                })
                .await;
                match built {
                    Ok(Ok(view)) => {
                        tracing::debug!(serial, records = view.len(), "[dns] zone updated");
                        views.send_replace(Arc::new(view));
                        last = Some((current, serial));
                        last_serial = Some(serial);
                        if let Some(file) = &settings.serial_file {
                            // Best effort: without it a restart within the same
                            // second may serve a serial one or two lower.
                            if let Err(e) = mcp_pki::ca::write_file(
                                file,
                                format!("{serial}\n").as_bytes(),
                                0o644,
                            ) {
                                tracing::warn!("[dns] keep the serial in {}: {e}", file.display());
                            }
                        }
                    }
                    Ok(Err(e)) => tracing::error!("[dns] zone not served: {e:#}"),
                    Err(e) => tracing::error!("[dns] zone not served: {e}"),
                }
            }
        }
        if zone.changed().await.is_err() {
            return;
        }
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The view to answer with: the one held, or the newest when it changed.
fn current(held: &mut Arc<ZoneView>, views: &mut watch::Receiver<Arc<ZoneView>>) {
    if views.has_changed().unwrap_or(false) {
        *held = views.borrow_and_update().clone();
    }
}

async fn serve_udp(socket: Arc<UdpSocket>, mut views: watch::Receiver<Arc<ZoneView>>) {
    let mut view = views.borrow_and_update().clone();
    let mut buf = vec![0u8; 65535];
    loop {
        let (len, peer) = match socket.recv_from(&mut buf).await {
            Ok(got) => got,
            Err(e) => {
                tracing::debug!("[dns] UDP receive: {e}");
                tokio::time::sleep(Duration::from_millis(1)).await;
                continue;
            }
        };
        current(&mut view, &mut views);
        let Some(query) = buf.get(..len) else {
            continue;
        };
        if let Some(reply) = answer(query, &view, Transport::Udp) {
            if let Err(e) = socket.send_to(&reply, peer).await {
                tracing::debug!(%peer, "[dns] UDP send: {e}");
            }
        }
    }
}

async fn serve_tcp(listener: TcpListener, views: watch::Receiver<Arc<ZoneView>>) {
    let permits = Arc::new(Semaphore::new(MAX_TCP_CONNECTIONS));
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::debug!("[dns] TCP accept: {e}");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                let Ok(permit) = permits.clone().try_acquire_owned() else {
                    tracing::debug!(%peer, "[dns] too many TCP connections: closed");
                    continue;
                };
                let views = views.clone();
                connections.spawn(async move {
                    if let Err(e) = serve_connection(stream, views).await {
                        tracing::debug!(%peer, "[dns] TCP: {e}");
                    }
                    drop(permit);
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// Length-prefixed queries (RFC 1035 §4.2.2, RFC 7766), answered in order until the
/// client closes, sends garbage, or stays idle for [`TCP_IDLE`].
async fn serve_connection(
    mut stream: TcpStream,
    mut views: watch::Receiver<Arc<ZoneView>>,
) -> std::io::Result<()> {
    let mut view = views.borrow_and_update().clone();
    let mut buf = vec![0u8; 65535];
    loop {
        let mut len = [0u8; 2];
        match tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut len)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Ok(Err(e)) => return Err(e),
            Err(_) => return Ok(()),
        }
        let len = usize::from(u16::from_be_bytes(len));
        let Some(query) = buf.get_mut(..len) else {
            return Ok(());
        };
        match tokio::time::timeout(TCP_IDLE, stream.read_exact(query)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => return Ok(()),
        }
        current(&mut view, &mut views);
        let Some(reply) = answer(query, &view, Transport::Tcp) else {
            return Ok(());
        };
        let Ok(reply_len) = u16::try_from(reply.len()) else {
            return Ok(());
        };
        let mut out = Vec::with_capacity(reply.len() + 2);
        out.extend_from_slice(&reply_len.to_be_bytes());
        out.extend_from_slice(&reply);
        match tokio::time::timeout(TCP_IDLE, stream.write_all(&out)).await {
            Ok(written) => written?,
            Err(_) => return Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::reconcile::plan::dns::{DnsRecord, RData};
    use hickory_proto::op::{Edns, Message, Query, ResponseCode};
    use hickory_proto::rr::{Name, RData as WireData, RecordType};
    use std::net::IpAddr;

    const ORIGIN: &str = "svc.mcp.example.net";

    fn a(service: &str, ip: &str) -> DnsRecord {
        DnsRecord {
            name: format!("{service}.{ORIGIN}"),
            data: RData::Addr(ip.parse::<IpAddr>().unwrap()),
        }
    }

    fn srv(route: &str, service: &str, port: u16) -> DnsRecord {
        let target = format!("{service}.{ORIGIN}");
        DnsRecord {
            name: format!("_{route}._tcp.{target}"),
            data: RData::Srv { port, target },
        }
    }

    fn zone() -> Zone {
        [
            a("hello", "10.0.0.2"),
            srv("http", "hello", 41000),
            a("six", "fd00::7"),
        ]
        .into()
    }

    /// A server on `ip` fed by the returned sender; dropped with the runtime.
    async fn server(
        ip: &str,
        ttl: u64,
    ) -> (
        SocketAddr,
        watch::Sender<Option<Arc<Zone>>>,
        watch::Sender<bool>,
    ) {
        let (zone_tx, zone_rx) = watch::channel(None);
        let (stop_tx, stop_rx) = watch::channel(false);
        let settings = Settings {
            listen: format!("{ip}:0").parse().unwrap(),
            origin: ORIGIN.into(),
            ttl: Duration::from_secs(ttl),
            serial_file: None,
        };
        let (addr, _handle) = serve(settings, zone_rx, stop_rx).await.unwrap();
        (addr, zone_tx, stop_tx)
    }

    fn query(name: &str, kind: RecordType, edns: Option<u16>) -> Vec<u8> {
        let mut m = Message::query();
        m.metadata.recursion_desired = true;
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), kind));
        if let Some(size) = edns {
            let mut e = Edns::new();
            e.set_max_payload(size);
            m.set_edns(e);
        }
        m.to_vec().unwrap()
    }

    async fn udp(addr: SocketAddr, q: &[u8]) -> (Message, usize) {
        let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        sock.send_to(q, addr).await.unwrap();
        let mut buf = vec![0u8; 65535];
        let (len, _) = tokio::time::timeout(Duration::from_secs(5), sock.recv_from(&mut buf))
            .await
            .expect("a UDP answer within 5 s")
            .unwrap();
        let m = Message::from_vec(&buf[..len]).unwrap();
        assert_eq!(m.id, u16::from_be_bytes([q[0], q[1]]));
        (m, len)
    }

    async fn tcp(addr: SocketAddr, queries: &[Vec<u8>]) -> Vec<Message> {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let mut out = Vec::new();
        for q in queries {
            let mut framed = (q.len() as u16).to_be_bytes().to_vec();
            framed.extend_from_slice(q);
            stream.write_all(&framed).await.unwrap();
        }
        for _ in queries {
            let mut len = [0u8; 2];
            tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut len))
                .await
                .expect("a TCP answer within 5 s")
                .unwrap();
            let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
            stream.read_exact(&mut buf).await.unwrap();
            out.push(Message::from_vec(&buf).unwrap());
        }
        out
    }

    fn soa_serial(m: &Message) -> u32 {
        let soa = m
            .answers
            .iter()
            .chain(&m.authorities)
            .find_map(|r| match &r.data {
                WireData::SOA(s) => Some(s.serial),
                _ => None,
            });
        soa.expect("an SOA")
    }

    async fn wait_known(addr: SocketAddr) {
        for _ in 0..500 {
            let (m, _) = udp(addr, &query(&format!("{ORIGIN}."), RecordType::SOA, None)).await;
            if m.response_code == ResponseCode::NoError {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the zone was never served");
    }

    #[tokio::test]
    async fn answers_nxdomain_nodata_refused_and_the_apex() {
        let (addr, zone_tx, _stop) = server("127.0.0.111", 7).await;
        zone_tx.send_replace(Some(Arc::new(zone())));
        wait_known(addr).await;

        // A, case-insensitive, the owner name as asked, TTL from [dns] ttl.
        let (m, _) = udp(
            addr,
            &query("HeLLo.svc.mcp.example.net.", RecordType::A, None),
        )
        .await;
        assert_eq!(m.response_code, ResponseCode::NoError);
        assert!(m.authoritative);
        assert!(!m.recursion_available);
        assert_eq!(m.answers.len(), 1);
        assert_eq!(m.answers[0].name.to_ascii(), "HeLLo.svc.mcp.example.net.");
        assert_eq!(m.answers[0].ttl, 7);
        assert_eq!(
            m.answers[0].data,
            WireData::A("10.0.0.2".parse::<std::net::Ipv4Addr>().unwrap().into())
        );
        assert!(m.edns.is_none(), "no OPT unless asked");

        // AAAA of an IPv6 node.
        let (m, _) = udp(
            addr,
            &query("six.svc.mcp.example.net.", RecordType::AAAA, None),
        )
        .await;
        assert_eq!(m.answers.len(), 1);
        assert_eq!(m.answers[0].record_type(), RecordType::AAAA);

        // SRV with the target's address as additional data.
        let (m, _) = udp(
            addr,
            &query(
                "_http._tcp.hello.svc.mcp.example.net.",
                RecordType::SRV,
                None,
            ),
        )
        .await;
        assert_eq!(m.answers.len(), 1);
        let WireData::SRV(s) = &m.answers[0].data else {
            panic!("not an SRV: {m:?}");
        };
        assert_eq!((s.priority, s.weight, s.port), (0, 0, 41000));
        assert_eq!(s.target.to_ascii(), "hello.svc.mcp.example.net.");
        assert_eq!(m.additionals.len(), 1);
        assert_eq!(m.additionals[0].record_type(), RecordType::A);

        // NODATA: a known name, another type; an empty non-terminal.
        for (name, kind) in [
            ("hello.svc.mcp.example.net.", RecordType::AAAA),
            ("hello.svc.mcp.example.net.", RecordType::TXT),
            ("_tcp.hello.svc.mcp.example.net.", RecordType::A),
        ] {
            let (m, _) = udp(addr, &query(name, kind, None)).await;
            assert_eq!(m.response_code, ResponseCode::NoError, "{name} {kind}");
            assert!(m.answers.is_empty());
            assert_eq!(m.authorities.len(), 1);
            assert_eq!(m.authorities[0].record_type(), RecordType::SOA);
        }

        // NXDOMAIN with the SOA (negative TTL = the TTL).
        let (m, _) = udp(
            addr,
            &query("nope.svc.mcp.example.net.", RecordType::A, None),
        )
        .await;
        assert_eq!(m.response_code, ResponseCode::NXDomain);
        assert!(m.authoritative);
        assert_eq!(m.authorities.len(), 1);
        let WireData::SOA(soa) = &m.authorities[0].data else {
            panic!("not an SOA: {m:?}");
        };
        assert_eq!(soa.minimum, 7);
        assert_eq!(soa.mname.to_ascii(), "svc.mcp.example.net.");

        // REFUSED outside the zone (and for a zone transfer).
        for (name, kind) in [
            ("example.net.", RecordType::A),
            ("hello.example.org.", RecordType::A),
            ("mcp.example.net.", RecordType::SOA),
            ("svc.mcp.example.net.", RecordType::AXFR),
        ] {
            let (m, _) = udp(addr, &query(name, kind, None)).await;
            assert_eq!(m.response_code, ResponseCode::Refused, "{name}");
            assert!(m.answers.is_empty());
        }

        // The apex: SOA, NS (the apex itself, with the listen address as glue), A.
        let (m, _) = udp(addr, &query("svc.mcp.example.net.", RecordType::NS, None)).await;
        assert_eq!(m.answers.len(), 1);
        assert_eq!(
            m.answers[0].data,
            WireData::NS(hickory_proto::rr::rdata::NS(
                Name::from_ascii("svc.mcp.example.net.").unwrap()
            ))
        );
        assert_eq!(m.additionals.len(), 1);
        let (m, _) = udp(addr, &query("svc.mcp.example.net.", RecordType::A, None)).await;
        assert_eq!(
            m.answers[0].data,
            WireData::A("127.0.0.111".parse::<std::net::Ipv4Addr>().unwrap().into())
        );

        // TCP answers the same.
        let got = tcp(
            addr,
            &[
                query("hello.svc.mcp.example.net.", RecordType::A, None),
                query("nope.svc.mcp.example.net.", RecordType::A, None),
            ],
        )
        .await;
        assert_eq!(got[0].answers.len(), 1);
        assert_eq!(got[1].response_code, ResponseCode::NXDomain);
    }

    #[tokio::test]
    async fn servfail_until_the_zone_is_known_then_a_serial_that_grows_with_changes() {
        let (addr, zone_tx, _stop) = server("127.0.0.112", 30).await;
        let (m, _) = udp(
            addr,
            &query("hello.svc.mcp.example.net.", RecordType::A, None),
        )
        .await;
        assert_eq!(m.response_code, ResponseCode::ServFail);
        let (m, _) = udp(addr, &query("hello.example.org.", RecordType::A, None)).await;
        assert_eq!(
            m.response_code,
            ResponseCode::Refused,
            "outside: still refused"
        );

        zone_tx.send_replace(Some(Arc::new(zone())));
        wait_known(addr).await;
        let soa = query(&format!("{ORIGIN}."), RecordType::SOA, None);
        let first = soa_serial(&udp(addr, &soa).await.0);
        // The same records again: the same serial.
        zone_tx.send_replace(Some(Arc::new(zone())));
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(soa_serial(&udp(addr, &soa).await.0), first);
        // A change (a move): a larger serial, the new address.
        let mut moved = zone();
        moved.remove(&a("hello", "10.0.0.2"));
        moved.insert(a("hello", "10.0.0.3"));
        zone_tx.send_replace(Some(Arc::new(moved)));
        let mut serial = first;
        for _ in 0..500 {
            serial = soa_serial(&udp(addr, &soa).await.0);
            if serial != first {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(serial > first, "{serial} after {first}");
        let (m, _) = udp(
            addr,
            &query("hello.svc.mcp.example.net.", RecordType::A, None),
        )
        .await;
        assert_eq!(
            m.answers[0].data,
            WireData::A("10.0.0.3".parse::<std::net::Ipv4Addr>().unwrap().into())
        );
        // A removal: NXDOMAIN.
        zone_tx.send_replace(Some(Arc::new([a("six", "fd00::7")].into())));
        let mut code = ResponseCode::NoError;
        for _ in 0..500 {
            code = udp(
                addr,
                &query("hello.svc.mcp.example.net.", RecordType::A, None),
            )
            .await
            .0
            .response_code;
            if code == ResponseCode::NXDomain {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(code, ResponseCode::NXDomain);
    }

    #[tokio::test]
    async fn a_large_answer_is_truncated_over_udp_and_whole_over_tcp_with_edns() {
        let (addr, zone_tx, _stop) = server("127.0.0.113", 30).await;
        let mut big = zone();
        for port in 0..200 {
            big.insert(srv("http", "hello", 42000 + port));
        }
        zone_tx.send_replace(Some(Arc::new(big)));
        wait_known(addr).await;
        let name = "_http._tcp.hello.svc.mcp.example.net.";

        // Without EDNS: 512 bytes at most, so TC and nothing in the answer.
        let (m, len) = udp(addr, &query(name, RecordType::SRV, None)).await;
        assert!(m.truncation);
        assert!(len <= 512);
        assert!(m.answers.is_empty());
        assert_eq!(m.queries.len(), 1);
        assert!(m.edns.is_none());

        // With EDNS and a large buffer: capped at 1232, still TC, and an OPT back.
        let (m, len) = udp(addr, &query(name, RecordType::SRV, Some(4096))).await;
        assert!(m.truncation);
        assert!(len <= usize::from(answer::MAX_UDP_PAYLOAD));
        let opt = m.edns.as_ref().expect("an OPT in the answer");
        assert_eq!(opt.max_payload(), answer::MAX_UDP_PAYLOAD);
        assert_eq!(opt.version(), 0);

        // Over TCP: all 201 records.
        let got = tcp(addr, &[query(name, RecordType::SRV, Some(4096))]).await;
        assert!(!got[0].truncation);
        assert_eq!(got[0].answers.len(), 201);
        assert!(got[0].edns.is_some());

        // A small answer over UDP with EDNS: not truncated, OPT back.
        let (m, _) = udp(
            addr,
            &query("hello.svc.mcp.example.net.", RecordType::A, Some(1232)),
        )
        .await;
        assert!(!m.truncation);
        assert_eq!(m.answers.len(), 1);
        assert!(m.edns.is_some());

        // An EDNS version we do not speak: BADVERS.
        let mut q = Message::from_vec(&query(
            "hello.svc.mcp.example.net.",
            RecordType::A,
            Some(1232),
        ))
        .unwrap();
        q.edns.as_mut().unwrap().set_version(1);
        let (m, _) = udp(addr, &q.to_vec().unwrap()).await;
        // 16: BADVERS with an OPT (hickory reads it back as BADSIG, the same code).
        assert_eq!(u16::from(m.response_code), 16);
        assert!(m.edns.is_some());
        assert!(m.answers.is_empty());
    }

    #[tokio::test]
    async fn a_bound_address_is_an_error_and_stop_frees_it() {
        let (addr, _zone_tx, stop) = server("127.0.0.114", 30).await;
        let (_z, zone_rx) = watch::channel(None);
        let (_s, stop_rx) = watch::channel(false);
        let settings = Settings {
            listen: addr,
            origin: ORIGIN.into(),
            ttl: Duration::from_secs(30),
            serial_file: None,
        };
        let err = serve(settings.clone(), zone_rx.clone(), stop_rx.clone())
            .await
            .unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("[dns] listen 127.0.0.114:"), "{msg}");
        stop.send_replace(true);
        let mut freed = false;
        for _ in 0..200 {
            if let Ok((_, handle)) = serve(settings.clone(), zone_rx.clone(), stop_rx.clone()).await
            {
                handle.abort();
                freed = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(freed, "the address is free again after stop");
    }
}
