//! The `rfc2136` DNS backend against a real BIND (Debian's bind9): `named -g` started
//! here with a temp config (a `tsig-keygen mcp` key, the zone svc.mcp.metacircular.net
//! as a primary with `update-policy { grant mcp zonesub ANY; }` and AXFR allowed for the
//! key), the backend's loop fed by hand through the zone watch as the control loop
//! feeds it, and every answer checked with the real `dig`.
//!
//! named (tests/rfc2136_named) listens on 127.0.0.1 on a free high port. Without
//! bind9 the test says why and passes, unless CI is set. named is killed and its
//! files removed by a guard, whatever happens.

#![allow(clippy::unwrap_used)]

mod rfc2136_named;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mcp_master::dns::rfc2136::{self, Events, Options, Target};
use mcp_master::reconcile::plan::dns::{DnsRecord, RData, Zone};
use mcp_pki::Secret;
use rfc2136_named::{Named, ZONE};
use tokio::sync::watch;

fn a(service: &str, ip: &str) -> DnsRecord {
    DnsRecord {
        name: format!("{service}.{ZONE}"),
        data: RData::Addr(ip.parse().unwrap()),
    }
}

fn srv(route: &str, service: &str, port: u16) -> DnsRecord {
    let target = format!("{service}.{ZONE}");
    DnsRecord {
        name: format!("_{route}._tcp.{target}"),
        data: RData::Srv { port, target },
    }
}

fn name(service: &str) -> String {
    format!("{service}.{ZONE}")
}

/// Waits (at most 10 s) until `ok`, else fails with what `show` says.
async fn eventually(what: &str, mut ok: impl FnMut() -> bool, show: impl Fn() -> String) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ok() {
        if Instant::now() > deadline {
            panic!("{what}: not within 10 s; now:\n{}", show());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One backend loop (what `start()` spawns), stopped on drop.
struct Backend {
    zone: watch::Sender<Option<Arc<Zone>>>,
    shutdown: watch::Sender<bool>,
    events: Arc<Mutex<Vec<String>>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Backend {
    fn start(server: SocketAddr, zone: &str, key: &str, secret: &Secret) -> Backend {
        let target = Target::new(server, zone, key, secret, Duration::from_secs(30)).unwrap();
        let options = Options {
            resync: Duration::from_secs(1),
            debounce: Duration::from_millis(50),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(1),
            timeout: Duration::from_secs(2),
        };
        let (zone_tx, zone_rx) = watch::channel(None);
        let (shutdown, shutdown_rx) = watch::channel(false);
        let events = Arc::new(Mutex::new(Vec::new()));
        let sink: Events = {
            let events = events.clone();
            Arc::new(move |m| events.lock().unwrap().push(m))
        };
        let task = tokio::spawn(rfc2136::run(target, options, zone_rx, sink, shutdown_rx));
        Backend {
            zone: zone_tx,
            shutdown,
            events,
            task: Some(task),
        }
    }

    fn publish(&self, records: Vec<DnsRecord>) {
        self.zone
            .send_replace(Some(Arc::new(records.into_iter().collect())));
    }

    fn events(&self) -> Vec<String> {
        self.events.lock().unwrap().clone()
    }

    async fn stop(mut self) {
        let _ = self.shutdown.send(true);
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(5), task)
                .await
                .expect("the backend stops within 5 s")
                .unwrap();
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keeps_a_real_bind_zone_in_line_and_leaves_hand_made_records_alone() {
    let named = match Named::start() {
        Ok(n) => n,
        Err(why) if std::env::var_os("CI").is_some() => panic!("CI must run this test: {why}"),
        Err(why) => {
            eprintln!("rfc2136 test skipped: {why}");
            return;
        }
    };
    let secret = rfc2136::read_secret(&named.key_file("mcp")).unwrap();
    // Records made by hand before MCP comes: one at a name of its own, one at a name
    // MCP will want.
    named.nsupdate(&format!(
        "update add {} 60 A 10.9.9.9\nupdate add {} 60 A 10.8.8.8",
        name("hand"),
        name("taken")
    ));
    let untouched = named.zone();

    let backend = Backend::start(named.server(), ZONE, "mcp", &secret);
    // The fleet has not settled (zone None): nothing is sent.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        named.zone(),
        untouched,
        "nothing is sent while the zone is None"
    );

    // Deploy: A, SRV and the ownership TXT.
    backend.publish(vec![a("hello", "127.0.0.141"), srv("http", "hello", 8080)]);
    let hello = name("hello");
    let srv_name = format!("_http._tcp.{hello}");
    eventually(
        "hello's A and SRV",
        || {
            named.dig(&hello, "A") == ["127.0.0.141"]
                && named.dig(&srv_name, "SRV") == [format!("0 0 8080 {hello}.")]
        },
        || named.zone().join("\n"),
    )
    .await;
    assert_eq!(named.dig(&hello, "TXT"), ["\"heritage=mcp\""]);
    assert_eq!(named.dig(&srv_name, "TXT"), ["\"heritage=mcp\""]);
    assert_eq!(named.dig(&name("hand"), "A"), ["10.9.9.9"]);

    // Move: the address and the port change, nothing else.
    backend.publish(vec![a("hello", "127.0.0.142"), srv("http", "hello", 9090)]);
    eventually(
        "hello moved",
        || {
            named.dig(&hello, "A") == ["127.0.0.142"]
                && named.dig(&srv_name, "SRV") == [format!("0 0 9090 {hello}.")]
        },
        || named.zone().join("\n"),
    )
    .await;

    // A name someone else holds is left alone, and said so once.
    backend.publish(vec![
        a("hello", "127.0.0.142"),
        srv("http", "hello", 9090),
        a("taken", "127.0.0.143"),
    ]);
    eventually(
        "the event about taken",
        || {
            backend
                .events()
                .iter()
                .any(|e| e.contains(&name("taken")) && e.contains("does not own"))
        },
        || backend.events().join("\n"),
    )
    .await;
    assert_eq!(named.dig(&name("taken"), "A"), ["10.8.8.8"]);
    assert_eq!(named.dig(&name("taken"), "TXT"), Vec::<String>::new());

    // Remove: the names are gone (NXDOMAIN), the hand-made ones stay.
    backend.publish(vec![a("taken", "127.0.0.143")]);
    eventually(
        "hello removed",
        || named.status(&hello) == "NXDOMAIN" && named.status(&srv_name) == "NXDOMAIN",
        || named.zone().join("\n"),
    )
    .await;
    assert_eq!(named.dig(&name("hand"), "A"), ["10.9.9.9"]);
    assert_eq!(named.dig(&name("taken"), "A"), ["10.8.8.8"]);

    // A record made by hand now survives the periodic resyncs (1 s here).
    named.nsupdate(&format!("update add {} 60 A 10.7.7.7", name("later")));
    let before = named.zone();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        named.zone(),
        before,
        "a resync changes nothing that is in line"
    );
    assert_eq!(named.dig(&name("later"), "A"), ["10.7.7.7"]);
    let conflicts = backend
        .events()
        .iter()
        .filter(|e| e.contains(&name("taken")))
        .count();
    assert_eq!(conflicts, 1, "once per name: {:?}", backend.events());

    // Records of a master that then stops...
    backend.publish(vec![a("hello", "127.0.0.141"), a("gone", "127.0.0.144")]);
    eventually(
        "hello and gone",
        || {
            named.dig(&hello, "A") == ["127.0.0.141"]
                && named.dig(&name("gone"), "A") == ["127.0.0.144"]
        },
        || named.zone().join("\n"),
    )
    .await;
    backend.stop().await;

    // ...and a restarted one: nothing sent until its zone is known, then the stale
    // record is removed and nothing is duplicated.
    let backend = Backend::start(named.server(), ZONE, "mcp", &secret);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(
        named.dig(&name("gone"), "A"),
        ["127.0.0.144"],
        "nothing sent while None"
    );
    backend.publish(vec![a("hello", "127.0.0.141"), a("fresh", "127.0.0.142")]);
    eventually(
        "gone removed, fresh added",
        || {
            named.status(&name("gone")) == "NXDOMAIN"
                && named.dig(&name("fresh"), "A") == ["127.0.0.142"]
        },
        || named.zone().join("\n"),
    )
    .await;
    assert_eq!(named.dig(&hello, "A"), ["127.0.0.141"]);
    assert_eq!(named.dig(&hello, "TXT"), ["\"heritage=mcp\""]);
    let markers = named
        .zone()
        .iter()
        .filter(|l| l.contains("heritage=mcp"))
        .count();
    assert_eq!(
        markers,
        2,
        "one TXT per owned name:\n{}",
        named.zone().join("\n")
    );
    for hand in ["hand", "later", "taken"] {
        assert_eq!(named.dig(&name(hand), "TXT"), Vec::<String>::new());
    }
    assert_eq!(named.dig(&name("hand"), "A"), ["10.9.9.9"]);
    assert!(
        backend.events().iter().all(|e| !e.contains("retrying")),
        "no failure: {:?}",
        backend.events()
    );
    backend.stop().await;

    // A wrong key: an event naming the RCODE, once, and no change.
    let before = named.zone();
    let wrong = Secret::new("c2VjcmV0LWJ1dC1ub3QtdGhlLXJpZ2h0LW9uZS0zMmI=");
    let backend = Backend::start(named.server(), ZONE, "mcp", &wrong);
    backend.publish(vec![a("intruder", "127.0.0.144")]);
    eventually(
        "the NOTAUTH event",
        || backend.events().iter().any(|e| e.contains("NOTAUTH")),
        || backend.events().join("\n"),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(2500)).await; // several retries
    let refusals: Vec<String> = backend
        .events()
        .into_iter()
        .filter(|e| e.contains("NOTAUTH"))
        .collect();
    assert_eq!(refusals.len(), 1, "once per reason: {refusals:?}");
    assert!(
        refusals[0].contains(&named.server().to_string()),
        "{}",
        refusals[0]
    );
    assert_eq!(named.zone(), before, "a refused key changes nothing");
    assert_eq!(named.status(&name("intruder")), "NXDOMAIN");
    backend.stop().await;

    // A zone the server does not serve: an event with its RCODE, no change.
    let backend = Backend::start(named.server(), "svc.mcp.example.org", "mcp", &secret);
    backend.publish(vec![DnsRecord {
        name: "x.svc.mcp.example.org".into(),
        data: RData::Addr("127.0.0.144".parse().unwrap()),
    }]);
    eventually(
        "the wrong-zone event",
        || {
            backend
                .events()
                .iter()
                .any(|e| e.contains("refused: NOTAUTH"))
        },
        || backend.events().join("\n"),
    )
    .await;
    assert_eq!(named.zone(), before);
    backend.stop().await;

    // A key that may read the zone but not update it: the update itself is refused.
    let reader = rfc2136::read_secret(&named.key_file("reader")).unwrap();
    let backend = Backend::start(named.server(), ZONE, "reader", &reader);
    backend.publish(vec![a("intruder", "127.0.0.144")]);
    eventually(
        "the REFUSED event",
        || {
            backend
                .events()
                .iter()
                .any(|e| e.contains("update refused: REFUSED"))
        },
        || backend.events().join("\n"),
    )
    .await;
    assert_eq!(named.zone(), before, "a refused update changes nothing");
    assert_eq!(named.status(&name("intruder")), "NXDOMAIN");
    backend.stop().await;
}
