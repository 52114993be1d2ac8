//! Property tests: generated valid definitions survive `to_toml` and JSON,
//! arbitrary text never panics the parser, and sizes and durations read back
//! what they write.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use mcp_types::duration::format_duration;
use mcp_types::{
    parse_definition, parse_duration, Arch, ByteSize, Component, Driver, Resources, RestartPolicy,
    Route, RouteMode, ServiceDef, Tier, Volume,
};
use proptest::prelude::*;
use proptest::sample::subsequence;

fn label() -> impl Strategy<Value = String> {
    "[a-z]([a-z0-9-]{0,10}[a-z0-9])?"
}

fn hostname() -> impl Strategy<Value = String> {
    prop::collection::vec(label(), 2..4).prop_map(|labels| labels.join("."))
}

fn text_without_nul() -> impl Strategy<Value = String> {
    any::<String>().prop_map(|s| s.replace('\0', ""))
}

fn size() -> impl Strategy<Value = ByteSize> {
    prop_oneof![
        (64u64..=u64::MAX).prop_map(ByteSize),
        (1u64..4096).prop_map(ByteSize::mib),
    ]
}

fn resources() -> impl Strategy<Value = Resources> {
    (
        prop::option::of(prop_oneof![1e-6f64..1e6, (1u32..64).prop_map(f64::from)]),
        prop::option::of(size()),
        prop::option::of(size()),
        subsequence(Arch::ALL.to_vec(), 0..=2).prop_shuffle(),
    )
        .prop_map(|(cpu, memory, disk, arch)| Resources {
            cpu,
            memory,
            disk,
            arch,
        })
}

fn routes() -> impl Strategy<Value = Vec<Route>> {
    (
        prop::collection::btree_set(label(), 0..4),
        prop::collection::btree_set(1u16..=u16::MAX, 4),
    )
        .prop_flat_map(|(names, ports)| {
            let n = names.len();
            let shapes = prop::collection::vec(
                (
                    prop_oneof![Just(RouteMode::L7), Just(RouteMode::L4)],
                    any::<bool>(),
                    hostname(),
                    any::<bool>(),
                ),
                n,
            );
            (Just(names), Just(ports), shapes)
        })
        .prop_map(|(names, ports, shapes)| {
            names
                .into_iter()
                .zip(ports)
                .zip(shapes)
                .map(|((name, port), (mode, public, host, tls))| Route {
                    name,
                    port,
                    mode,
                    public,
                    hostname: public.then_some(host),
                    backend_tls: mode == RouteMode::L4 || tls,
                    proxy_protocol: public && tls,
                })
                .collect()
        })
}

fn volumes(service: String) -> impl Strategy<Value = Vec<Volume>> {
    prop::collection::vec(
        (
            prop::collection::vec("[a-zA-Z0-9_.-]{0,3}[a-zA-Z0-9_]", 0..3),
            prop::collection::vec("[a-z0-9]{1,5}", 0..3),
            any::<bool>(),
        ),
        0..3,
    )
    .prop_map(move |vols| {
        vols.into_iter()
            .map(|(host, container, read_only)| {
                let mut h = format!("/srv/{service}");
                for seg in host {
                    h.push('/');
                    h.push_str(&seg);
                }
                Volume {
                    host: h,
                    container: format!("/{}", container.join("/")),
                    read_only,
                }
            })
            .collect()
    })
}

fn component(service: String, name: String) -> impl Strategy<Value = Component> {
    let env = prop::collection::btree_map("[A-Za-z_][A-Za-z0-9_]{0,8}", text_without_nul(), 0..4)
        .prop_map(|env: BTreeMap<String, String>| {
            env.into_iter()
                .filter(|(k, _)| !k.starts_with("MCP_"))
                .collect()
        });
    (
        any::<bool>(),
        "[a-z0-9][a-z0-9./:@-]{0,30}",
        prop::collection::vec(text_without_nul(), 0..3),
        "/[a-z/]{1,10}",
        env,
        volumes(service),
        prop::sample::select(RestartPolicy::ALL.to_vec()),
        routes(),
        prop::option::of((1u64..4096).prop_map(ByteSize::mib)),
        prop::option::of(prop_oneof![0.01f64..4.0, (1u32..4).prop_map(f64::from)]),
    )
        .prop_map(
            move |(
                exec,
                image,
                mut command,
                program,
                env,
                volumes,
                restart,
                routes,
                memory,
                cpu,
            )| {
                let (driver, image) = if exec {
                    command.insert(0, program);
                    (Driver::Exec, None)
                } else {
                    (Driver::Container, Some(image))
                };
                Component {
                    name: name.clone(),
                    driver,
                    image,
                    command,
                    env,
                    volumes,
                    restart,
                    routes,
                    memory,
                    cpu,
                }
            },
        )
}

fn service_def() -> impl Strategy<Value = ServiceDef> {
    (
        label(),
        prop_oneof![Just(Tier::Worker), Just(Tier::Core)],
        prop::option::of(label()),
        prop::collection::btree_set(label(), 0..4),
        resources(),
        prop::collection::btree_set(label(), 1..4),
    )
        .prop_flat_map(|(name, tier, node, deps, resources, component_names)| {
            let components: Vec<_> = component_names
                .into_iter()
                .map(|c| component(name.clone(), c))
                .collect();
            let depends_on: Vec<String> = deps.into_iter().filter(|d| *d != name).collect();
            (
                Just(name),
                Just(tier),
                Just(node),
                Just(depends_on),
                Just(resources),
                components,
            )
        })
        .prop_map(
            |(name, tier, node, depends_on, mut resources, components)| {
                // The service's values hold the components' own and leave some for the rest.
                let unset = |f: fn(&Component) -> bool| components.iter().filter(|c| !f(c)).count();
                if let Some(total) = resources.memory {
                    let own: u64 = components
                        .iter()
                        .filter_map(|c| c.memory)
                        .map(|m| m.0)
                        .sum();
                    let rest = unset(|c| c.memory.is_some()) as u64;
                    if own.saturating_add(rest) > total.0 {
                        resources.memory = Some(ByteSize(own + rest * (1 << 20)));
                    }
                }
                if let Some(total) = resources.cpu {
                    let own: f64 = components.iter().filter_map(|c| c.cpu).sum();
                    let rest = unset(|c| c.cpu.is_some()) as f64;
                    if own + rest * 0.01 > total {
                        resources.cpu = Some(own + rest * 0.5 + 0.5);
                    }
                }
                ServiceDef {
                    name,
                    tier,
                    node,
                    depends_on,
                    resources,
                    components,
                }
            },
        )
}

proptest! {
    #[test]
    fn generated_definitions_are_valid(def in service_def()) {
        prop_assert_eq!(def.validate(), Ok(()));
    }

    #[test]
    fn to_toml_round_trips(def in service_def()) {
        let text = def.to_toml();
        let back = parse_definition("gen.toml", &text);
        prop_assert!(back.is_ok(), "{}\n{}", text, back.unwrap_err());
        prop_assert_eq!(back.unwrap(), def);
    }

    #[test]
    fn json_round_trips_with_the_same_digest(def in service_def()) {
        let json = serde_json::to_string(&def).unwrap();
        let back: ServiceDef = serde_json::from_str(&json).unwrap();
        prop_assert_eq!(back.digest(), def.digest());
        prop_assert_eq!(back, def);
    }

    #[test]
    fn arbitrary_text_never_panics(text in any::<String>()) {
        let _ = parse_definition("any.toml", &text);
    }

    #[test]
    fn toml_like_text_never_panics(text in r#"[a-z_\[\]={}," .0-9\n#:/-]{0,200}"#) {
        let _ = parse_definition("like.toml", &text);
    }

    #[test]
    fn mangled_definitions_never_panic(
        def in service_def(),
        cut in any::<prop::sample::Index>(),
        insert in r#"[\[\]={}",\n.0-9a-z]{0,8}"#,
    ) {
        let text = def.to_toml();
        let at = cut.index(text.len() + 1);
        let at = (0..=at).rev().find(|i| text.is_char_boundary(*i)).unwrap_or(0);
        let mangled = format!("{}{}{}", &text[..at], insert, &text[at..]);
        if let Err(e) = parse_definition("m.toml", &mangled) {
            prop_assert!(!e.problems.is_empty());
            let lines = mangled.lines().count().max(1);
            for p in &e.problems {
                prop_assert!(p.line >= 1 && p.line <= lines + 1, "line {} of {}", p.line, lines);
            }
        }
    }

    #[test]
    fn byte_size_display_round_trips(n in any::<u64>()) {
        let shown = ByteSize(n).to_string();
        prop_assert_eq!(shown.parse::<ByteSize>(), Ok(ByteSize(n)));
    }

    #[test]
    fn byte_size_parse_then_display_is_stable(text in "[0-9]{1,6}(\\.[0-9]{1,2})?(B|KiB|MiB|GiB|TiB|KB|MB|GB|TB)?") {
        if let Ok(size) = text.parse::<ByteSize>() {
            prop_assert_eq!(size.to_string().parse::<ByteSize>(), Ok(size));
        }
    }

    #[test]
    fn duration_format_round_trips(secs in 0u64..(u64::MAX / 1_000_000_000), nanos in 0u32..1_000_000_000) {
        let d = Duration::new(secs, nanos);
        prop_assert_eq!(parse_duration(&format_duration(d)), Ok(d));
    }

    #[test]
    fn duration_parse_never_panics(text in "[0-9.a-zµ]{0,20}") {
        let _ = parse_duration(&text);
    }

    /// Huge numbers (up to 45 digits, past u128) with fractions, in every unit and
    /// in compounds: never a panic, and Ok exactly when the exact total fits a
    /// `Duration`, with that total.
    #[test]
    fn huge_durations_are_exact_or_too_long(
        parts in prop::collection::vec(
            (
                "[0-9]{1,45}",
                prop::option::of(0u8..3),
                prop::option::of("[0-9]{1,12}"),
                prop::sample::select(HUGE_UNITS),
            ),
            1..4,
        )
    ) {
        // Half the parts sit just below the largest whole number of their unit that
        // fits in u128, where only the fraction or the next part overflows.
        let parts: Vec<(String, Option<String>, (&str, u128))> = parts
            .into_iter()
            .map(|(whole, near, frac, unit)| {
                let whole = near.map_or(whole, |k| (u128::MAX / unit.1 - u128::from(k)).to_string());
                (whole, frac, unit)
            })
            .collect();
        let text: String = parts
            .iter()
            .map(|(whole, frac, unit)| match frac {
                Some(frac) => format!("{whole}.{frac}{}", unit.0),
                None => format!("{whole}{}", unit.0),
            })
            .collect();
        let exact = parts.iter().try_fold(0u128, |total, (whole, frac, unit)| {
            let mut nanos = whole.parse::<u128>().ok()?.checked_mul(unit.1)?;
            if let Some(frac) = frac {
                let digits = &frac[..frac.len().min(9)];
                let value: u128 = digits.parse().ok()?;
                nanos = nanos.checked_add(value * unit.1 / 10u128.pow(digits.len() as u32))?;
            }
            total.checked_add(nanos)
        });
        let want = exact.and_then(|nanos| {
            let secs = u64::try_from(nanos / 1_000_000_000).ok()?;
            Some(Duration::new(secs, (nanos % 1_000_000_000) as u32))
        });
        match (parse_duration(&text), want) {
            (Ok(got), Some(want)) => prop_assert_eq!(got, want, "{}", text),
            (Err(e), None) => prop_assert!(e.contains("too long"), "{}: {}", text, e),
            (got, want) => prop_assert!(false, "{}: got {:?}, want {:?}", text, got, want),
        }
    }
}

/// Units and their nanoseconds, for `huge_durations_are_exact_or_too_long`.
const HUGE_UNITS: &[(&str, u128)] = &[
    ("d", 86_400_000_000_000),
    ("h", 3_600_000_000_000),
    ("m", 60_000_000_000),
    ("s", 1_000_000_000),
    ("ms", 1_000_000),
    ("us", 1_000),
    ("µs", 1_000),
    ("ns", 1),
];
