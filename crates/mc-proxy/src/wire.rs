//! Conversions between `mcproxy.admin.v1` messages and the route table's types,
//! validated at the boundary: a wire route becomes a `Route` only if its
//! hostname, backend, mode and L7 material all hold.

use std::net::IpAddr;

use mcp_proto::mcproxy::admin::v1 as wire;

use crate::hostname;
use crate::routes::{L7Tls, Mode, Pattern, Route};

/// Largest PEM field accepted (a long chain fits easily).
pub const MAX_PEM: usize = 64 * 1024;

impl Mode {
    /// `l4` or `l7`, as the wire and the CLI spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::L4 => "l4",
            Mode::L7 => "l7",
        }
    }

    /// `l4` (or empty) and `l7`.
    pub fn parse(text: &str) -> Result<Mode, String> {
        match text {
            "" | "l4" => Ok(Mode::L4),
            "l7" => Ok(Mode::L7),
            other => Err(format!("mode {other:?}: not l4 or l7")),
        }
    }
}

/// Checks a wire route; its pattern and the route to store.
pub fn route_from_wire(w: &wire::Route) -> Result<(Pattern, Route), String> {
    let pattern = Pattern::parse(&w.hostname).map_err(|e| e.to_string())?;
    let backend = w
        .backend
        .parse()
        .map_err(|e: crate::routes::RouteError| e.to_string())?;
    let mode = Mode::parse(&w.mode)?;
    let backend_name = match w.backend_name.as_str() {
        "" => None,
        name if name.parse::<IpAddr>().is_ok() => Some(name.to_string()),
        name => Some(
            hostname::normalize(name)
                .map_err(|reason| format!("backend_name {name:?}: {reason}"))?,
        ),
    };
    for (field, value) in [
        ("cert_pem", &w.cert_pem),
        ("key_pem", &w.key_pem),
        ("backend_ca_pem", &w.backend_ca_pem),
    ] {
        if value.len() > MAX_PEM {
            return Err(format!("{field}: longer than {MAX_PEM} bytes"));
        }
    }
    let tls = match mode {
        Mode::L4 => {
            for (field, empty) in [
                ("cert_pem", w.cert_pem.is_empty()),
                ("key_pem", w.key_pem.is_empty()),
                ("backend_ca_pem", w.backend_ca_pem.is_empty()),
                ("backend_name", backend_name.is_none()),
            ] {
                if !empty {
                    return Err(format!(
                        "{field}: only for l7 routes (l4 keeps TLS end to end)"
                    ));
                }
            }
            None
        }
        Mode::L7 => {
            check_pem("cert_pem", &w.cert_pem, "CERTIFICATE")?;
            check_pem("key_pem", &w.key_pem, "PRIVATE KEY")?;
            let backend_ca_pem = match w.backend_ca_pem.as_str() {
                "" => None,
                ca => {
                    check_pem("backend_ca_pem", ca, "CERTIFICATE")?;
                    Some(ca.to_string())
                }
            };
            Some(L7Tls {
                cert_pem: w.cert_pem.clone(),
                key_pem: w.key_pem.clone(),
                backend_ca_pem,
            })
        }
    };
    Ok((
        pattern,
        Route {
            backend,
            mode,
            // An l4 backend always holds its own TLS.
            backend_tls: mode == Mode::L4 || w.backend_tls,
            backend_name,
            proxy_protocol: w.proxy_protocol,
            tls,
            unavailable: w.unavailable,
        },
    ))
}

/// A PEM block of `label` (the label's end: `PRIVATE KEY` also takes `EC PRIVATE KEY`).
fn check_pem(field: &str, text: &str, label: &str) -> Result<(), String> {
    if text.is_empty() {
        return Err(format!("{field}: required for l7 routes"));
    }
    let begins = text.lines().any(|l| {
        l.trim_end()
            .strip_prefix("-----BEGIN ")
            .and_then(|r| r.strip_suffix("-----"))
            .is_some_and(|l| l.ends_with(label))
    });
    if !begins {
        return Err(format!("{field}: no PEM {label} block"));
    }
    Ok(())
}

/// A stored route on the wire; certificates and keys are left out unless `secrets`.
pub fn route_to_wire(pattern: &Pattern, route: &Route, secrets: bool) -> wire::Route {
    let tls = route.tls.as_ref().filter(|_| secrets);
    wire::Route {
        hostname: pattern.to_string(),
        backend: route.backend.to_string(),
        mode: route.mode.as_str().to_string(),
        backend_tls: route.backend_tls,
        backend_name: route.backend_name.clone().unwrap_or_default(),
        proxy_protocol: route.proxy_protocol,
        cert_pem: tls.map(|t| t.cert_pem.clone()).unwrap_or_default(),
        key_pem: tls.map(|t| t.key_pem.clone()).unwrap_or_default(),
        backend_ca_pem: tls
            .and_then(|t| t.backend_ca_pem.clone())
            .unwrap_or_default(),
        unavailable: route.unavailable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CERT: &str = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
    const KEY: &str = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";

    fn l4(hostname: &str, backend: &str) -> wire::Route {
        wire::Route {
            hostname: hostname.into(),
            backend: backend.into(),
            ..Default::default()
        }
    }

    #[test]
    fn accepts_and_round_trips() {
        let (p, r) = route_from_wire(&l4("A.Example.com", "127.0.0.1:443")).expect("l4");
        assert_eq!(p.to_string(), "a.example.com");
        assert_eq!(r.mode, Mode::L4);
        assert!(r.backend_tls);
        let back = route_to_wire(&p, &r, true);
        assert_eq!(back.mode, "l4");
        assert_eq!(route_from_wire(&back).expect("again"), (p, r));

        let w = wire::Route {
            mode: "l7".into(),
            backend_name: "Svc.Internal".into(),
            cert_pem: CERT.into(),
            key_pem: KEY.replace("PRIVATE", "EC PRIVATE"),
            proxy_protocol: true,
            unavailable: true,
            ..l4("*.example.com", "svc.internal:8443")
        };
        let (p, r) = route_from_wire(&w).expect("l7");
        assert_eq!(r.backend_name.as_deref(), Some("svc.internal"));
        assert!(!r.backend_tls);
        assert!(r.unavailable);
        assert!(!format!("{r:?}").contains("AAAA"), "{r:?}");
        assert_eq!(route_to_wire(&p, &r, false).key_pem, "");
        assert_eq!(
            route_from_wire(&route_to_wire(&p, &r, true)).expect("again"),
            (p, r)
        );
    }

    #[test]
    fn refuses() {
        let l7 = |f: &dyn Fn(&mut wire::Route)| {
            let mut w = wire::Route {
                mode: "l7".into(),
                cert_pem: CERT.into(),
                key_pem: KEY.into(),
                ..l4("a.example.com", "127.0.0.1:443")
            };
            f(&mut w);
            w
        };
        let cases: Vec<(wire::Route, &str)> = vec![
            (l4("bad name", "127.0.0.1:1"), "character outside"),
            (l4("", "127.0.0.1:1"), "empty hostname"),
            (l4("a.example.com", "nowhere"), "no :port"),
            (l4("a.example.com", "h.example:0"), "port"),
            (l7(&|w| w.mode = "l5".into()), "not l4 or l7"),
            (l7(&|w| w.mode = "l4".into()), "cert_pem: only for l7"),
            (l7(&|w| w.cert_pem.clear()), "cert_pem: required"),
            (
                l7(&|w| w.key_pem = CERT.into()),
                "key_pem: no PEM PRIVATE KEY",
            ),
            (l7(&|w| w.backend_name = "x_y.z".into()), "backend_name"),
            (l7(&|w| w.backend_ca_pem = "junk".into()), "backend_ca_pem"),
            (l7(&|w| w.cert_pem = "x".repeat(MAX_PEM + 1)), "longer than"),
        ];
        for (w, want) in cases {
            let e = route_from_wire(&w).expect_err(want);
            assert!(e.contains(want), "{e} lacks {want}");
        }
    }
}
