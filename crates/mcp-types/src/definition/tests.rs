//! Table tests for reading definition files: each rule's line, key and message.
#![allow(clippy::unwrap_used)]

use super::*;
use crate::service::{Resources, MAX_COMPONENTS};

const BASE: &str = r#"name = "app"

[[components]]
name = "api"
image = "mcr.example.net/app:v1"
"#;

/// The problems of `text` as `line: key: message` strings.
fn problems(text: &str) -> Vec<String> {
    match parse_definition("t.toml", text) {
        Ok(_) => vec![],
        Err(e) => e.problems.iter().map(ToString::to_string).collect(),
    }
}

fn with(extra: &str) -> String {
    format!("{BASE}{extra}")
}

#[test]
fn base_parses() {
    let def = parse_definition("t.toml", BASE).unwrap();
    assert_eq!(def.name, "app");
    assert_eq!(
        def.components[0].image.as_deref(),
        Some("mcr.example.net/app:v1")
    );
    assert_eq!(def.resources, Resources::default());
}

#[test]
fn each_problem_has_its_line_and_key() {
    // (what, text, expected "line: key: message" fragment)
    let cases: Vec<(&str, String, &str)> = vec![
        ("unknown top key", format!("colour = 1\n{BASE}"), "1: colour: unknown key \"colour\""),
        ("unknown component key", with("imagee = \"x\"\n"), "6: components[0].imagee: unknown key"),
        ("did you mean", with("comand = [\"x\"]\n"), "(did you mean \"command\"?)"),
        ("wrong type name", "name = 5\n[[components]]\nname = \"a\"\nimage = \"i\"\n".into(), "1: name: expected a string, found integer"),
        ("wrong type command", with("command = \"serve\"\n"), "6: components[0].command: expected an array of strings, found string"),
        ("wrong type item", with("command = [\"serve\", 1]\n"), "6: components[0].command[1]: expected a string, found integer"),
        ("wrong type public", with("[[components.routes]]\nname = \"r\"\nport = 1\npublic = \"yes\"\n"), "9: components[0].routes[0].public: expected true or false, found string"),
        ("wrong type components", "name = \"a\"\ncomponents = 3\n".into(), "2: components: expected an array of tables ([[components]]), found integer"),
        ("wrong type env", with("env = [\"A=b\"]\n"), "6: components[0].env: expected a table of strings"),
        ("wrong type cpu", format!("{BASE}[resources]\ncpu = \"half\"\n"), "7: resources.cpu: expected a number of cores, found string"),
        ("wrong type memory", format!("{BASE}[resources]\nmemory = true\n"), "7: resources.memory: expected a size"),
        ("negative memory bytes", format!("{BASE}[resources]\nmemory = -5\n"), "7: resources.memory: memory -5 is not a number of bytes"),
        ("bad size", format!("{BASE}[resources]\ndisk = \"2 gigs\"\n"), "7: resources.disk: size \"2 gigs\" has unknown unit \"gigs\""),
        ("cpu negative", format!("{BASE}[resources]\ncpu = -1\n"), "7: resources.cpu: cpu -1 is not a positive number"),
        ("cpu nan", format!("{BASE}[resources]\ncpu = nan\n"), "7: resources.cpu: cpu NaN is not a positive number"),
        ("cpu inf", format!("{BASE}[resources]\ncpu = inf\n"), "7: resources.cpu: cpu inf is not a positive number"),
        ("component memory wrong type", with("memory = 64\ncpu = \"x\"\n"), "7: components[0].cpu: expected a number of cores, found string"),
        ("component memory bad size", with("memory = \"64 megs\"\n"), "6: components[0].memory: size \"64 megs\" has unknown unit"),
        ("component memory over", ("name = \"app\"\n[resources]\nmemory = \"64MiB\"\n\n[[components]]\nname = \"a\"\nimage = \"i\"\nmemory = \"48MiB\"\n\n[[components]]\nname = \"b\"\nimage = \"i\"\nmemory = \"32MiB\"\n").to_string(), "13: components[1].memory: the components' own memory adds up to 80MiB here, more than the service's [resources] memory 64MiB"),
        ("component cpu over", ("name = \"app\"\n[resources]\ncpu = 0.5\n\n[[components]]\nname = \"a\"\nimage = \"i\"\ncpu = 1\n").to_string(), "8: components[0].cpu: the components' own cpu adds up to 1 here, more than the service's [resources] cpu 0.5"),
        ("port negative", with("[[components.routes]]\nname = \"r\"\nport = -1\n"), "8: components[0].routes[0].port: port -1 is out of range 1-65535"),
        ("port 65536", with("[[components.routes]]\nname = \"r\"\nport = 65536\n"), "port 65536 is out of range 1-65535"),
        ("port huge", with("[[components.routes]]\nname = \"r\"\nport = 99999999999999999\n"), "port 99999999999999999 is out of range"),
        ("port missing", with("[[components.routes]]\nname = \"r\"\n"), "6: components[0].routes[0].port: port is required"),
        ("route name missing", with("[[components.routes]]\nport = 80\n"), "6: components[0].routes[0].name: route name is required"),
        ("component name missing", "name = \"a\"\n[[components]]\nimage = \"i\"\n".into(), "2: components[0].name: component name is required"),
        ("l4 backend_tls false", with("[[components.routes]]\nname = \"r\"\nport = 1\nmode = \"l4\"\nbackend_tls = false\n"), "10: components[0].routes[0].backend_tls: backend_tls is only used by l7 routes"),
        ("unknown arch", format!("{BASE}[resources]\narch = [\"riscv64\"]\n"), "7: resources.arch[0]: unknown arch \"riscv64\""),
        ("bad tier", format!("tier = \"gold\"\n{BASE}"), "1: tier: tier \"gold\" is not one of \"worker\", \"core\""),
        ("volume mode", with("volumes = [\"/srv/app:/d:wo\"]\n"), "6: components[0].volumes[0]: volume \"/srv/app:/d:wo\" has mode \"wo\""),
        ("volume dotdot", with("volumes = [\"/srv/app/..:/d\"]\n"), "escapes /srv/app"),
        ("env reserved", with("env = { MCP_X = \"1\" }\n"), "6: components[0].env.MCP_X: environment variable MCP_X starts with MCP_"),
        ("env dotted key", with("env = { \"A.B\" = \"1\" }\n"), "6: components[0].env.\"A.B\": environment variable name \"A.B\""),
        ("syntax error", format!("{BASE}restart = \n"), "6: components[0].restart: "),
        ("syntax error no key", format!("{BASE}[[components\n"), "6: "),
        ("duplicate table", format!("[resources]\ncpu = 1\n[resources]\ncpu = 2\n{BASE}"), "3: resources: "),
        ("hostname on private", with("[[components.routes]]\nname = \"r\"\nport = 1\nhostname = \"a.b\"\n"), "9: components[0].routes[0].hostname: hostname \"a.b\" is only used by public routes"),
        ("self dependency", format!("depends_on = [\"app\"]\n{BASE}"), "1: depends_on[0]: service \"app\" cannot depend on itself"),
    ];
    let mut failures = Vec::new();
    for (what, text, want) in &cases {
        let got = problems(text);
        if !got.iter().any(|p| p.contains(want)) {
            failures.push(format!("{what}: wanted {want:?} in {got:#?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn display_is_file_line_key_message_sorted_by_line() {
    let text = "name = \"A\"\ncolour = 1\n\n[[components]]\nname = \"api\"\nimage = \"a b\"\n";
    let err = parse_definition("svc/app.toml", text).unwrap_err();
    assert_eq!(
        err.to_string(),
        "svc/app.toml:1: name: service name \"A\" contains uppercase 'A'; DNS labels here are lowercase only\n\
         svc/app.toml:2: colour: unknown key \"colour\"; known keys at the top level: name, tier, node, depends_on, resources, components\n\
         svc/app.toml:6: components[0].image: image \"a b\" contains whitespace, which no image reference has"
    );
}

#[test]
fn a_placeholder_does_not_cause_more_errors() {
    // The bad arch is dropped; no duplicate or shifted-index error follows.
    let got = problems(&format!(
        "{BASE}[resources]\narch = [\"x\", \"amd64\", \"arm64\"]\n"
    ));
    assert_eq!(got.len(), 1, "{got:#?}");
    // A bad port is reported once, not again by validation.
    let got = problems(&with("[[components.routes]]\nname = \"r\"\nport = 0\n"));
    assert_eq!(got.len(), 1, "{got:#?}");
    // A misspelt key is reported; the key it meant is not also "missing".
    let got = problems("name = \"a\"\n[[components]]\nname = \"c\"\nimag = \"i\"\n");
    assert_eq!(got.len(), 1, "{got:#?}");
    // ... but a real key next to a misspelt one is still checked.
    let got =
        problems("name = \"a\"\n[[components]]\nname = \"c\"\nimage = \"a b\"\nimag = \"i\"\n");
    assert_eq!(got.len(), 2, "{got:#?}");
}

#[test]
fn oversize_is_one_problem_at_line_one() {
    let text = format!("{BASE}{}", "#\n".repeat(MAX_DEFINITION_BYTES));
    let err = parse_definition("big.toml", &text).unwrap_err();
    assert_eq!(err.problems.len(), 1);
    assert_eq!(err.problems[0].line, 1);
    assert!(err.problems[0]
        .message
        .contains("over the limit of 262144 bytes"));
    // Exactly at the limit is read.
    let padding = MAX_DEFINITION_BYTES - BASE.len();
    let text = format!("{BASE}{}", "#".repeat(padding));
    assert!(parse_definition("edge.toml", &text).is_ok());
}

#[test]
fn accepted_forms() {
    let text = r#"
name = "app"
resources.cpu = 1
resources.memory = 536870912

[[components]]
name = "api"
image = "i"
env.RUST_LOG = "info"
routes = [{ name = "r", port = 0x50 }]
"#;
    let def = parse_definition("t.toml", text).unwrap();
    assert_eq!(def.resources.cpu, Some(1.0));
    assert_eq!(def.resources.memory, Some(ByteSize::mib(512)));
    assert_eq!(def.components[0].env["RUST_LOG"], "info");
    assert_eq!(def.components[0].routes[0].port, 80);
    assert!(def.components[0].routes[0].backend_tls);
}

#[test]
fn to_toml_reads_back_equal() {
    let text = r#"
name = "app"
tier = "core"
node = "rift"
depends_on = ["a", "b"]
[resources]
cpu = 0.25
disk = "1536MiB"
arch = ["arm64"]
[[components]]
name = "api"
image = "i"
command = ["a \"quoted\" arg", "tab\there", "new\nline"]
env = { "LANG" = "en_US.UTF-8", EMPTY = "", MULTI = "a\nb" }
volumes = ["/srv/app:/srv/app:ro", "/srv/app/x:/x"]
restart = "always"
memory = "128MiB"
[[components.routes]]
name = "r"
port = 443
mode = "l4"
public = true
hostname = "app.example.net"
[[components.routes]]
name = "plain"
port = 8080
backend_tls = false
[[components]]
name = "job"
driver = "exec"
command = ["/bin/job"]
cpu = 0.125
"#;
    let def = parse_definition("t.toml", text).unwrap();
    assert_eq!(def.components[0].memory, Some(crate::ByteSize::mib(128)));
    assert_eq!(def.components[1].cpu, Some(0.125));
    let written = def.to_toml();
    let again =
        parse_definition("again.toml", &written).unwrap_or_else(|e| panic!("{written}\n{e}"));
    assert_eq!(again, def);
    assert_eq!(again.to_toml(), written);
}

#[test]
fn edit_distance_counts_edits() {
    assert_eq!(edit_distance("image", "image"), 0);
    assert_eq!(edit_distance("imagee", "image"), 1);
    assert_eq!(edit_distance("imgae", "image"), 2);
    assert_eq!(edit_distance("", "abc"), 3);
    assert_eq!(closest("nmae", &["name", "node"]), Some("name"));
    assert_eq!(closest("zzzzzz", &["name", "node"]), None);
}

#[test]
fn validation_errors_do_not_hide_each_other() {
    // "too many components" is at key `components`; it must not swallow the
    // errors of each component below that key.
    let text = "name = \"a\"\n".to_string() + &"[[components]]\n".repeat(MAX_COMPONENTS + 1);
    let err = parse_definition("t.toml", &text).unwrap_err();
    let keys: Vec<&str> = err.problems.iter().map(|p| p.key.as_str()).collect();
    assert!(keys.contains(&"components"), "{keys:?}");
    assert!(keys.contains(&"components[32].image"), "{keys:?}");
    assert_eq!(err.problems.len(), 1 + 2 * (MAX_COMPONENTS + 1));
}

#[test]
fn syntax_errors_are_capped() {
    let text = "x\n".repeat(1000);
    let err = parse_definition("t.toml", &text).unwrap_err();
    assert_eq!(err.problems.len(), MAX_SYNTAX_PROBLEMS + 1);
    let last = err.problems.last().unwrap();
    assert_eq!(
        last.message,
        "980 more syntax errors not shown; fix the first ones and try again"
    );
    assert_eq!(last.line, err.problems[MAX_SYNTAX_PROBLEMS - 1].line);
}

#[test]
fn hostile_input_is_rejected_quickly_and_without_overflow() {
    let half = MAX_DEFINITION_BYTES / 2;
    let inputs = [
        format!("a = {}", "[".repeat(half)),
        format!("a = {}1{}", "[".repeat(half / 2), "]".repeat(half / 2)),
        format!("a = {}", "{b=".repeat(half / 3)),
        format!("{}= 1", "a.".repeat(half / 2)),
        format!("[{}]", "a.".repeat(half / 2)),
        "= = =\n".repeat(half / 6),
        "[a]\n[a]\n".repeat(half / 8),
        "[[components]]\n".repeat(half / 15),
    ];
    for text in inputs {
        let start = std::time::Instant::now();
        let err = parse_definition("t.toml", &text).unwrap_err();
        assert!(!err.problems.is_empty());
        assert!(
            start.elapsed() < std::time::Duration::from_secs(10),
            "{:?}... took {:?}",
            &text[..20],
            start.elapsed()
        );
    }
}

#[test]
fn lines_index_offsets() {
    let text = "a\nbc\n\nd";
    let lines = Lines::new(text);
    let cases = [
        (0, 1),
        (1, 1),
        (2, 2),
        (4, 2),
        (5, 3),
        (6, 4),
        (7, 4),
        (100, 4),
    ];
    for (offset, line) in cases {
        assert_eq!(lines.line(offset), line, "offset {offset}");
    }
    assert_eq!(lines.text(text, 2), "bc");
    assert_eq!(lines.text(text, 3), "");
    assert_eq!(lines.text(text, 4), "d");
    assert_eq!(lines.text(text, 9), "");
}

#[test]
fn parents_of_a_key() {
    let all: Vec<&str> = key_and_parents("components[0].routes[1].port").collect();
    assert_eq!(
        all,
        [
            "components[0].routes[1].port",
            "components[0].routes[1]",
            "components[0].routes",
            "components[0]",
            "components"
        ]
    );
    assert_eq!(key_and_parents("name").collect::<Vec<_>>(), ["name"]);
}
