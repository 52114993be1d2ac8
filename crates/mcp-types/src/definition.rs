//! Reads a service definition file (TOML) into a `ServiceDef`, reporting every
//! problem with its file, line and key, and writes one back (`to_toml`).
//!
//! The TOML is parsed into toml's spanned document tree and walked by hand
//! rather than deserialized with serde: a walk can report every unknown key
//! and wrongly typed value at once, each with its key path and line, where
//! serde stops at the first.

use std::collections::{HashMap, HashSet};
use std::fmt::{self, Write as _};
use std::ops::Range;

use toml::de::{DeTable, DeValue};
use toml::Spanned;

use crate::service::{
    Arch, Component, Driver, RestartPolicy, Route, RouteMode, ServiceDef, Tier, Volume,
    MAX_DEFINITION_BYTES,
};
use crate::size::ByteSize;

/// Everything wrong with one definition file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", render(.file, .problems))]
pub struct DefinitionError {
    /// The file name as given to `parse_definition`.
    pub file: String,
    /// Sorted by line.
    pub problems: Vec<Problem>,
}

/// One problem in a definition file.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Problem {
    /// 1-based line.
    pub line: usize,
    /// The key path, e.g. `components[0].routes[1].port`; empty when the
    /// problem belongs to no key (a file too large, a syntax error outside any key).
    pub key: String,
    /// What is wrong and why.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}: {}", self.line, self.message)
        } else {
            write!(f, "{}: {}: {}", self.line, self.key, self.message)
        }
    }
}

/// `{file}:{line}: {key}: {message}`, one line per problem.
fn render(file: &str, problems: &[Problem]) -> String {
    let lines: Vec<String> = problems.iter().map(|p| format!("{file}:{p}")).collect();
    lines.join("\n")
}

/// Parses and validates one definition. `file` names it in errors.
pub fn parse_definition(file: &str, text: &str) -> Result<ServiceDef, DefinitionError> {
    let fail = |problems: Vec<Problem>| DefinitionError {
        file: file.to_string(),
        problems,
    };
    if text.len() > MAX_DEFINITION_BYTES {
        return Err(fail(vec![Problem {
            line: 1,
            key: String::new(),
            message: format!(
                "the definition is {} bytes, over the limit of {MAX_DEFINITION_BYTES} bytes",
                text.len()
            ),
        }]));
    }
    let (doc, syntax_errors) = DeTable::parse_recoverable(text);
    let mut reader = Reader {
        lines: Lines::new(text),
        spans: HashMap::new(),
        found: Vec::new(),
    };
    if !syntax_errors.is_empty() {
        let entries = entries_of(text, &reader.lines, doc.get_ref());
        for err in syntax_errors.iter().take(MAX_SYNTAX_PROBLEMS) {
            let at = err.span().unwrap_or(0..0);
            let key = syntax_key(text, &reader.lines, &entries, &at);
            reader.report(at.start, key, err.message().to_string());
        }
        let mut problems = reader.into_problems();
        if syntax_errors.len() > MAX_SYNTAX_PROBLEMS {
            let last = problems.last().map_or(1, |p| p.line);
            problems.push(Problem {
                line: last,
                key: String::new(),
                message: format!(
                    "{} more syntax errors not shown; fix the first ones and try again",
                    syntax_errors.len() - MAX_SYNTAX_PROBLEMS
                ),
            });
        }
        return Err(fail(problems));
    }
    let def = reader.service(doc.get_ref());
    if let Err(errors) = def.validate() {
        // Only problems found while reading suppress validation errors.
        let suppress: HashSet<String> = reader
            .found
            .iter()
            .flat_map(|f| f.suppress.iter().cloned())
            .collect();
        for e in errors {
            if !key_and_parents(&e.key).any(|k| suppress.contains(k)) {
                let offset = reader.offset_of(&e.key);
                reader.report(offset, e.key, e.message);
            }
        }
    }
    if reader.found.is_empty() {
        Ok(def)
    } else {
        Err(fail(reader.into_problems()))
    }
}

/// `a.b[0].c`, `a.b[0]`, `a.b`, `a`: the key and each key above it.
fn key_and_parents(key: &str) -> impl Iterator<Item = &str> {
    std::iter::successors(Some(key), |k| k.rfind(['.', '[']).map(|cut| &k[..cut]))
}

/// A key as it appears in a key path: bare when TOML allows, else quoted.
pub(crate) fn key_segment(key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if bare {
        key.to_string()
    } else {
        toml_string(key)
    }
}

fn join(parent: &str, key: &str) -> String {
    let key = key_segment(key);
    if parent.is_empty() {
        key
    } else {
        format!("{parent}.{key}")
    }
}

/// A syntax error tends to cause more after it; past this many, the rest are
/// counted rather than listed.
const MAX_SYNTAX_PROBLEMS: usize = 20;

/// Where each line starts, to turn byte offsets into line numbers quickly.
struct Lines {
    starts: Vec<usize>,
}

impl Lines {
    fn new(text: &str) -> Self {
        let mut starts = vec![0];
        starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        Lines { starts }
    }

    /// The 1-based line holding byte `offset`.
    fn line(&self, offset: usize) -> usize {
        self.starts.partition_point(|start| *start <= offset).max(1)
    }

    /// The text of 1-based `line`, without its newline.
    fn text<'t>(&self, text: &'t str, line: usize) -> &'t str {
        let start = self.starts.get(line - 1).copied().unwrap_or(text.len());
        let end = self.starts.get(line).map_or(text.len(), |next| next - 1);
        text.get(start..end.max(start)).unwrap_or("")
    }
}

/// A problem found while reading, before lines are computed.
struct Found {
    offset: usize,
    key: String,
    message: String,
    /// Validation errors at or below these keys are not reported: they would
    /// repeat this problem or come from the placeholder put in its place.
    suppress: Vec<String>,
}

type Value<'i> = Spanned<DeValue<'i>>;

struct Reader {
    lines: Lines,
    /// Byte offset of each key path seen in the document.
    spans: HashMap<String, usize>,
    found: Vec<Found>,
}

impl Reader {
    fn report(&mut self, offset: usize, key: String, message: String) {
        self.found.push(Found {
            offset,
            suppress: vec![key.clone()],
            key,
            message,
        });
    }

    fn report_suppressing(
        &mut self,
        offset: usize,
        key: String,
        message: String,
        suppress: Vec<String>,
    ) {
        self.found.push(Found {
            offset,
            key,
            message,
            suppress,
        });
    }

    fn into_problems(mut self) -> Vec<Problem> {
        self.found.sort_by_key(|f| f.offset);
        let mut seen = HashSet::new();
        let mut problems: Vec<Problem> = Vec::new();
        for f in self.found {
            let p = Problem {
                line: self.lines.line(f.offset),
                key: f.key,
                message: f.message,
            };
            if seen.insert(p.clone()) {
                problems.push(p);
            }
        }
        problems
    }

    /// The offset of `key`, or of its nearest recorded parent, or 0.
    fn offset_of(&self, key: &str) -> usize {
        key_and_parents(key)
            .find_map(|k| self.spans.get(k).copied())
            .unwrap_or(0)
    }

    /// Records every key of `table` and reports those not in `known`.
    fn keys(&mut self, table: &DeTable<'_>, parent: &str, known: &[&str]) {
        for (k, _) in table.iter() {
            let path = join(parent, k.get_ref());
            self.spans.insert(path.clone(), k.span().start);
            if !known.contains(&k.get_ref().as_ref()) {
                let suggestion = closest(k.get_ref(), known);
                let hint = suggestion
                    .map(|c| format!(" (did you mean {c:?}?)"))
                    .unwrap_or_default();
                // A misspelt key leaves the key it meant missing; the
                // misspelling is the problem to report, not the absence.
                let mut suppress = vec![path.clone()];
                if let Some(meant) = suggestion.filter(|m| get(table, m).is_none()) {
                    suppress.push(join(parent, meant));
                }
                let where_ = if parent.is_empty() {
                    "at the top level".to_string()
                } else {
                    format!("in {parent}")
                };
                let message = format!(
                    "unknown key {:?}{hint}; known keys {where_}: {}",
                    k.get_ref(),
                    known.join(", ")
                );
                self.report_suppressing(k.span().start, path, message, suppress);
            }
        }
    }

    fn wrong_type(&mut self, value: &Value<'_>, path: String, expected: &str) {
        let message = format!("expected {expected}, found {}", value.get_ref().type_str());
        self.report(value.span().start, path, message);
    }

    fn string(&mut self, table: &DeTable<'_>, parent: &str, key: &str) -> Option<String> {
        let value = get(table, key)?;
        match value.get_ref() {
            DeValue::String(s) => Some(s.to_string()),
            _ => {
                self.wrong_type(value, join(parent, key), "a string");
                None
            }
        }
    }

    fn boolean(&mut self, table: &DeTable<'_>, parent: &str, key: &str) -> Option<bool> {
        let value = get(table, key)?;
        match value.get_ref() {
            DeValue::Boolean(b) => Some(*b),
            _ => {
                self.wrong_type(value, join(parent, key), "true or false");
                None
            }
        }
    }

    /// One of `choices` by name; an unknown name is reported with the choices.
    fn choice<T: Copy>(
        &mut self,
        table: &DeTable<'_>,
        parent: &str,
        key: &str,
        choices: &[(&str, T)],
    ) -> Option<T> {
        let text = self.string(table, parent, key)?;
        if let Some((_, v)) = choices.iter().find(|(name, _)| *name == text) {
            return Some(*v);
        }
        let names: Vec<String> = choices.iter().map(|(n, _)| format!("{n:?}")).collect();
        let offset = get(table, key).map_or(0, |v| v.span().start);
        self.report(
            offset,
            join(parent, key),
            format!("{key} {text:?} is not one of {}", names.join(", ")),
        );
        None
    }

    /// An array of strings; a non-string item is reported and read as "".
    fn strings(&mut self, table: &DeTable<'_>, parent: &str, key: &str) -> Option<Vec<String>> {
        let value = get(table, key)?;
        let path = join(parent, key);
        let DeValue::Array(items) = value.get_ref() else {
            self.wrong_type(value, path, "an array of strings");
            return None;
        };
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let item_path = format!("{path}[{i}]");
            self.spans.insert(item_path.clone(), item.span().start);
            match item.get_ref() {
                DeValue::String(s) => out.push(s.to_string()),
                _ => {
                    self.wrong_type(item, item_path, "a string");
                    out.push(String::new());
                }
            }
        }
        Some(out)
    }

    /// The tables of an array of tables (`[[key]]` or `key = [{...}]`); a
    /// non-table item is reported and read as an empty table.
    fn tables<'a, 'i>(
        &mut self,
        table: &'a DeTable<'i>,
        parent: &str,
        key: &str,
    ) -> Vec<(String, Option<&'a DeTable<'i>>)> {
        let Some(value) = get(table, key) else {
            return Vec::new();
        };
        let path = join(parent, key);
        let DeValue::Array(items) = value.get_ref() else {
            let expected = format!("an array of tables ([[{path}]])");
            self.wrong_type(value, path, &expected);
            return Vec::new();
        };
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let item_path = format!("{path}[{i}]");
            self.spans.insert(item_path.clone(), item.span().start);
            match item.get_ref() {
                DeValue::Table(t) => out.push((item_path, Some(t))),
                _ => {
                    self.wrong_type(item, item_path.clone(), "a table");
                    out.push((item_path, None));
                }
            }
        }
        out
    }

    fn service(&mut self, root: &DeTable<'_>) -> ServiceDef {
        self.keys(
            root,
            "",
            &[
                "name",
                "tier",
                "node",
                "depends_on",
                "resources",
                "components",
            ],
        );
        let name = self.string(root, "", "name").unwrap_or_default();
        let tier = self
            .choice(
                root,
                "",
                "tier",
                &[("worker", Tier::Worker), ("core", Tier::Core)],
            )
            .unwrap_or_default();
        let node = self.string(root, "", "node");
        let depends_on = self.strings(root, "", "depends_on").unwrap_or_default();
        let resources = match get(root, "resources") {
            None => Default::default(),
            Some(value) => match value.get_ref() {
                DeValue::Table(t) => self.resources(t),
                _ => {
                    self.wrong_type(value, "resources".into(), "a table ([resources])");
                    Default::default()
                }
            },
        };
        let components = self
            .tables(root, "", "components")
            .into_iter()
            .map(|(path, table)| match table {
                Some(t) => self.component(t, &path),
                None => placeholder_component(),
            })
            .collect();
        ServiceDef {
            name,
            tier,
            node,
            depends_on,
            resources,
            components,
        }
    }

    fn resources(&mut self, t: &DeTable<'_>) -> crate::service::Resources {
        let at = "resources";
        self.keys(t, at, &["cpu", "memory", "disk", "arch"]);
        let cpu = self.cores(t, at);
        let memory = self.size(t, at, "memory");
        let disk = self.size(t, at, "disk");
        let mut arch = Vec::new();
        let names = self.strings(t, at, "arch").unwrap_or_default();
        for (i, name) in names.iter().enumerate() {
            let path = format!("resources.arch[{i}]");
            match name.parse::<Arch>() {
                Ok(a) => arch.push(a),
                Err(why) => {
                    // A dropped entry shifts the indices of the others, so
                    // validation's findings about the list are not reported.
                    let offset = self.offset_of(&path);
                    self.report_suppressing(offset, path, why, vec!["resources.arch".into()]);
                }
            }
        }
        crate::service::Resources {
            cpu,
            memory,
            disk,
            arch,
        }
    }

    /// `cpu`: a number of cores, integer or float.
    fn cores(&mut self, t: &DeTable<'_>, parent: &str) -> Option<f64> {
        let value = get(t, "cpu")?;
        let path = join(parent, "cpu");
        match value.get_ref() {
            DeValue::Float(f) => f.as_str().parse::<f64>().ok().or_else(|| {
                self.report(
                    value.span().start,
                    path,
                    format!("cpu {:?} is not a number", f.as_str()),
                );
                None
            }),
            DeValue::Integer(i) => match i64::from_str_radix(i.as_str(), i.radix()) {
                Ok(n) => Some(n as f64),
                Err(_) => {
                    self.report(value.span().start, path, format!("cpu {i} is out of range"));
                    None
                }
            },
            _ => {
                self.wrong_type(value, path, "a number of cores");
                None
            }
        }
    }

    fn size(&mut self, t: &DeTable<'_>, parent: &str, key: &str) -> Option<ByteSize> {
        let value = get(t, key)?;
        let path = join(parent, key);
        let parsed = match value.get_ref() {
            DeValue::String(s) => s.parse::<ByteSize>(),
            DeValue::Integer(i) => match u64::from_str_radix(i.as_str(), i.radix()) {
                Ok(n) => Ok(ByteSize(n)),
                Err(_) => Err(format!("{key} {i} is not a number of bytes")),
            },
            _ => {
                self.wrong_type(value, path, "a size such as \"512MiB\"");
                return None;
            }
        };
        match parsed {
            Ok(size) => Some(size),
            Err(why) => {
                self.report(value.span().start, path, why);
                None
            }
        }
    }

    fn component(&mut self, t: &DeTable<'_>, at: &str) -> Component {
        self.keys(
            t,
            at,
            &[
                "name", "driver", "image", "command", "env", "volumes", "restart", "routes",
                "memory", "cpu",
            ],
        );
        let name = self.string(t, at, "name").unwrap_or_default();
        let driver = self
            .choice(
                t,
                at,
                "driver",
                &[("container", Driver::Container), ("exec", Driver::Exec)],
            )
            .unwrap_or_default();
        let image = self.string(t, at, "image");
        let command = self.strings(t, at, "command").unwrap_or_default();
        let env = self.env(t, at);
        let mut volumes = Vec::new();
        let texts = self.strings(t, at, "volumes").unwrap_or_default();
        for (i, text) in texts.iter().enumerate() {
            let path = format!("{at}.volumes[{i}]");
            match text.parse::<Volume>() {
                Ok(v) => volumes.push(v),
                Err(why) => {
                    let offset = self.offset_of(&path);
                    self.report(offset, path, why);
                    // Keeps the indices of the later volumes.
                    volumes.push(Volume {
                        host: String::new(),
                        container: String::new(),
                        read_only: false,
                    });
                }
            }
        }
        let choices: Vec<(&str, RestartPolicy)> = RestartPolicy::ALL
            .iter()
            .map(|p| (p.as_str(), *p))
            .collect();
        let restart = self.choice(t, at, "restart", &choices).unwrap_or_default();
        let routes = self
            .tables(t, at, "routes")
            .into_iter()
            .map(|(path, table)| match table {
                Some(rt) => self.route(rt, &path),
                None => placeholder_route(),
            })
            .collect();
        let memory = self.size(t, at, "memory");
        let cpu = self.cores(t, at);
        Component {
            name,
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
    }

    fn env(&mut self, t: &DeTable<'_>, at: &str) -> std::collections::BTreeMap<String, String> {
        let mut env = std::collections::BTreeMap::new();
        let Some(value) = get(t, "env") else {
            return env;
        };
        let path = format!("{at}.env");
        let DeValue::Table(vars) = value.get_ref() else {
            self.wrong_type(
                value,
                path,
                "a table of strings, e.g. env = { RUST_LOG = \"info\" }",
            );
            return env;
        };
        for (k, v) in vars.iter() {
            let var_path = join(&path, k.get_ref());
            self.spans.insert(var_path.clone(), k.span().start);
            match v.get_ref() {
                DeValue::String(s) => {
                    env.insert(k.get_ref().to_string(), s.to_string());
                }
                other => {
                    let message = format!(
                        "environment values are strings; found {}, write it in quotes",
                        other.type_str()
                    );
                    self.report(v.span().start, var_path, message);
                }
            }
        }
        env
    }

    fn route(&mut self, t: &DeTable<'_>, at: &str) -> Route {
        self.keys(
            t,
            at,
            &[
                "name",
                "port",
                "mode",
                "public",
                "hostname",
                "backend_tls",
                "proxy_protocol",
            ],
        );
        let name = self.string(t, at, "name").unwrap_or_default();
        let port_path = format!("{at}.port");
        let port = match get(t, "port") {
            None => {
                let offset = self.offset_of(at);
                self.report(
                    offset,
                    port_path,
                    "port is required: the port the component listens on".into(),
                );
                0
            }
            Some(value) => match value.get_ref() {
                DeValue::Integer(i) => {
                    let n = i64::from_str_radix(i.as_str(), i.radix()).ok();
                    match n.and_then(|n| u16::try_from(n).ok()).filter(|p| *p != 0) {
                        Some(p) => p,
                        None => {
                            self.report(
                                value.span().start,
                                port_path,
                                format!("port {i} is out of range 1-65535"),
                            );
                            0
                        }
                    }
                }
                _ => {
                    self.wrong_type(value, port_path, "a port number");
                    0
                }
            },
        };
        let mode = self
            .choice(
                t,
                at,
                "mode",
                &[("l7", RouteMode::L7), ("l4", RouteMode::L4)],
            )
            .unwrap_or_default();
        let public = self.boolean(t, at, "public").unwrap_or(false);
        let hostname = self.string(t, at, "hostname");
        let backend_tls = self.boolean(t, at, "backend_tls");
        let proxy_protocol = self.boolean(t, at, "proxy_protocol").unwrap_or(false);
        if mode == RouteMode::L4 {
            if let Some((k, _)) = t.iter().find(|(k, _)| k.get_ref() == "backend_tls") {
                self.report(
                    k.span().start,
                    format!("{at}.backend_tls"),
                    "backend_tls is only used by l7 routes; an l4 route passes TLS through to the component".into(),
                );
            }
        }
        Route {
            name,
            port,
            mode,
            public,
            hostname,
            backend_tls: backend_tls.unwrap_or(true),
            proxy_protocol,
        }
    }
}

fn get<'a, 'i>(table: &'a DeTable<'i>, key: &str) -> Option<&'a Value<'i>> {
    table
        .iter()
        .find(|(k, _)| k.get_ref() == key)
        .map(|(_, v)| v)
}

fn placeholder_component() -> Component {
    Component {
        name: String::new(),
        driver: Driver::Container,
        image: None,
        command: Vec::new(),
        env: Default::default(),
        volumes: Vec::new(),
        restart: RestartPolicy::default(),
        routes: Vec::new(),
        memory: None,
        cpu: None,
    }
}

fn placeholder_route() -> Route {
    Route {
        name: String::new(),
        port: 0,
        mode: RouteMode::L7,
        public: false,
        hostname: None,
        backend_tls: true,
        proxy_protocol: false,
    }
}

/// The known key within two edits of `key`, for "did you mean".
fn closest<'k>(key: &str, known: &[&'k str]) -> Option<&'k str> {
    known
        .iter()
        .map(|k| (edit_distance(key, k), *k))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = if ca == *cb {
                prev
            } else {
                1 + prev.min(cur).min(row[j])
            };
            prev = cur;
        }
    }
    row[b.len()]
}

/// A key path in the document with where its key and value are.
struct Entry {
    path: String,
    key_line: usize,
    value: Range<usize>,
    /// A `[table]` or `[[array]]` header: later keys belong to it.
    header: bool,
}

fn entries_of(text: &str, lines: &Lines, root: &DeTable<'_>) -> Vec<Entry> {
    fn walk(text: &str, lines: &Lines, table: &DeTable<'_>, parent: &str, out: &mut Vec<Entry>) {
        for (k, v) in table.iter() {
            let path = join(parent, k.get_ref());
            let header =
                matches!(v.get_ref(), DeValue::Table(_)) && starts_with_bracket(text, v.span());
            out.push(Entry {
                path: path.clone(),
                key_line: lines.line(k.span().start),
                value: v.span(),
                header,
            });
            match v.get_ref() {
                DeValue::Table(t) => walk(text, lines, t, &path, out),
                DeValue::Array(items) => {
                    for (i, item) in items.iter().enumerate() {
                        let item_path = format!("{path}[{i}]");
                        let header = matches!(item.get_ref(), DeValue::Table(_))
                            && starts_with_bracket(text, item.span());
                        out.push(Entry {
                            path: item_path.clone(),
                            key_line: lines.line(item.span().start),
                            value: item.span(),
                            header,
                        });
                        if let DeValue::Table(t) = item.get_ref() {
                            walk(text, lines, t, &item_path, out);
                        }
                    }
                }
                _ => {}
            }
        }
    }
    let mut out = Vec::new();
    walk(text, lines, root, "", &mut out);
    out
}

fn starts_with_bracket(text: &str, span: Range<usize>) -> bool {
    text.as_bytes().get(span.start) == Some(&b'[')
}

/// The key a syntax error at `at` belongs to, as well as the partly parsed
/// document tells: the header on the error's line, else the deepest key on
/// that line, else the key named at the error inside the table header above it.
fn syntax_key(text: &str, lines: &Lines, entries: &[Entry], at: &Range<usize>) -> String {
    let line = lines.line(at.start);
    // On a `[table]` or `[[array]]` header line, the header names the key.
    let line_text = lines.text(text, line).trim();
    if line_text.starts_with('[') {
        let inner = line_text.split('#').next().unwrap_or("");
        return inner
            .trim_matches(|c: char| c == '[' || c == ']' || c.is_whitespace())
            .to_string();
    }
    let on_line = entries
        .iter()
        .filter(|e| {
            !e.header
                && (e.key_line == line || (e.value.start <= at.start && at.start < e.value.end))
        })
        .max_by_key(|e| e.path.len());
    if let Some(e) = on_line {
        return e.path.clone();
    }
    let container = entries
        .iter()
        .filter(|e| e.header && e.value.start <= at.start)
        .max_by_key(|e| e.value.start)
        .map(|e| e.path.as_str())
        .unwrap_or("");
    let named = text.get(at.clone()).unwrap_or("");
    let is_key = !named.is_empty()
        && named
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if is_key {
        join(container, named)
    } else {
        container.to_string()
    }
}

/// A TOML basic string with `s` in it, escaped.
fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

fn toml_strings(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| toml_string(s)).collect();
    format!("[{}]", quoted.join(", "))
}

impl ServiceDef {
    /// A definition file that `parse_definition` reads back equal to `self`
    /// (for a definition that validates).
    pub fn to_toml(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = self.write_toml(&mut out);
        out
    }

    fn write_toml(&self, out: &mut String) -> fmt::Result {
        writeln!(out, "name = {}", toml_string(&self.name))?;
        writeln!(out, "tier = {}", toml_string(self.tier.as_str()))?;
        if let Some(node) = &self.node {
            writeln!(out, "node = {}", toml_string(node))?;
        }
        if !self.depends_on.is_empty() {
            writeln!(out, "depends_on = {}", toml_strings(&self.depends_on))?;
        }
        let r = &self.resources;
        if r.cpu.is_some() || r.memory.is_some() || r.disk.is_some() || !r.arch.is_empty() {
            writeln!(out, "\n[resources]")?;
            if let Some(cpu) = r.cpu {
                writeln!(out, "cpu = {}", toml::Value::Float(cpu))?;
            }
            if let Some(memory) = r.memory {
                writeln!(out, "memory = {}", toml_string(&memory.to_string()))?;
            }
            if let Some(disk) = r.disk {
                writeln!(out, "disk = {}", toml_string(&disk.to_string()))?;
            }
            if !r.arch.is_empty() {
                let names: Vec<String> = r.arch.iter().map(|a| a.as_str().to_string()).collect();
                writeln!(out, "arch = {}", toml_strings(&names))?;
            }
        }
        for c in &self.components {
            writeln!(out, "\n[[components]]")?;
            writeln!(out, "name = {}", toml_string(&c.name))?;
            if c.driver != Driver::Container {
                writeln!(out, "driver = {}", toml_string(c.driver.as_str()))?;
            }
            if let Some(image) = &c.image {
                writeln!(out, "image = {}", toml_string(image))?;
            }
            if !c.command.is_empty() {
                writeln!(out, "command = {}", toml_strings(&c.command))?;
            }
            if !c.env.is_empty() {
                let vars: Vec<String> = c
                    .env
                    .iter()
                    .map(|(k, v)| format!("{} = {}", key_segment(k), toml_string(v)))
                    .collect();
                writeln!(out, "env = {{ {} }}", vars.join(", "))?;
            }
            if !c.volumes.is_empty() {
                let texts: Vec<String> = c.volumes.iter().map(ToString::to_string).collect();
                writeln!(out, "volumes = {}", toml_strings(&texts))?;
            }
            writeln!(out, "restart = {}", toml_string(c.restart.as_str()))?;
            if let Some(memory) = c.memory {
                writeln!(out, "memory = {}", toml_string(&memory.to_string()))?;
            }
            if let Some(cpu) = c.cpu {
                writeln!(out, "cpu = {}", toml::Value::Float(cpu))?;
            }
            for r in &c.routes {
                writeln!(out, "\n[[components.routes]]")?;
                writeln!(out, "name = {}", toml_string(&r.name))?;
                writeln!(out, "port = {}", r.port)?;
                writeln!(out, "mode = {}", toml_string(r.mode.as_str()))?;
                writeln!(out, "public = {}", r.public)?;
                if let Some(hostname) = &r.hostname {
                    writeln!(out, "hostname = {}", toml_string(hostname))?;
                }
                if r.mode == RouteMode::L7 && !r.backend_tls {
                    writeln!(out, "backend_tls = false")?;
                }
                if r.proxy_protocol {
                    writeln!(out, "proxy_protocol = true")?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
