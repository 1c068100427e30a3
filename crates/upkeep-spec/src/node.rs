//! A small located document tree shared by the TOML config and the YAML/JSON
//! manifests, and a field walker over it that collects every problem instead
//! of stopping at the first (which `#[derive(Deserialize)]` cannot do).
//!
//! Every node keeps its 1-based line, so diagnostics name file, field and line.

use std::fmt;
use std::path::Path;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

use crate::diag::{Diagnostic, Severity};

/// A value with the line it starts on.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Node {
    pub kind: Kind,
    pub line: Option<usize>,
}

/// The value of a [`Node`].
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Kind {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<Entry>),
    /// A value of a type we never accept (a TOML datetime).
    Other(&'static str),
}

/// One mapping entry.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Entry {
    pub key: String,
    pub value: Node,
}

impl Kind {
    /// A short word for error messages.
    pub fn describe(&self) -> &'static str {
        match self {
            Kind::Null => "null",
            Kind::Bool(_) => "a boolean",
            Kind::Int(_) => "an integer",
            Kind::Float(_) => "a float",
            Kind::Str(_) => "a string",
            Kind::Seq(_) => "a list",
            Kind::Map(_) => "a mapping",
            Kind::Other(what) => what,
        }
    }
}

impl Node {
    /// Converts to JSON (maps with sorted keys), for hashing and display.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value;
        match &self.kind {
            Kind::Null => Value::Null,
            Kind::Bool(b) => Value::Bool(*b),
            Kind::Int(i) => match i64::try_from(*i) {
                Ok(v) => Value::from(v),
                Err(_) => Value::String(i.to_string()),
            },
            Kind::Float(f) => serde_json::Number::from_f64(*f)
                .map(Value::Number)
                .unwrap_or_else(|| Value::String(f.to_string())),
            Kind::Str(s) => Value::String(s.clone()),
            Kind::Seq(items) => Value::Array(items.iter().map(Node::to_json).collect()),
            Kind::Map(entries) => Value::Object(
                entries
                    .iter()
                    .map(|e| (e.key.clone(), e.value.to_json()))
                    .collect(),
            ),
            Kind::Other(what) => Value::String(format!("<{what}>")),
        }
    }
}

// === YAML (serde-saphyr) ===

/// `Node` deserializes through `Spanned` so every node knows its line.
impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let spanned = serde_saphyr::Spanned::<Kind>::deserialize(d)?;
        let line = usize::try_from(spanned.referenced.line())
            .ok()
            .filter(|l| *l > 0);
        Ok(Node {
            kind: spanned.value,
            line,
        })
    }
}

impl<'de> Deserialize<'de> for Kind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(KindVisitor)
    }
}

struct KindVisitor;

impl<'de> Visitor<'de> for KindVisitor {
    type Value = Kind;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Kind, E> {
        Ok(Kind::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Kind, E> {
        Ok(Kind::Int(v.into()))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Kind, E> {
        Ok(Kind::Int(v.into()))
    }
    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Kind, E> {
        Ok(Kind::Int(v))
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Kind, E> {
        Ok(i128::try_from(v)
            .map(Kind::Int)
            .unwrap_or(Kind::Float(v as f64)))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Kind, E> {
        Ok(Kind::Float(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Kind, E> {
        Ok(Kind::Str(v.to_string()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Kind, E> {
        Ok(Kind::Str(v))
    }
    fn visit_bytes<E: de::Error>(self, _v: &[u8]) -> Result<Kind, E> {
        Ok(Kind::Other("binary data"))
    }
    fn visit_none<E: de::Error>(self) -> Result<Kind, E> {
        Ok(Kind::Null)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Kind, E> {
        Ok(Kind::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Kind, D::Error> {
        Kind::deserialize(d)
    }
    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<Kind, D::Error> {
        Kind::deserialize(d)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Kind, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Node>()? {
            items.push(item);
        }
        Ok(Kind::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Kind, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<Node>()? {
            let key = match key.kind {
                Kind::Str(s) => s,
                Kind::Int(i) => i.to_string(),
                Kind::Bool(b) => b.to_string(),
                Kind::Float(f) => f.to_string(),
                Kind::Null => "null".to_string(),
                other => format!("<{} key>", other.describe()),
            };
            let value = map.next_value::<Node>()?;
            entries.push(Entry { key, value });
        }
        Ok(Kind::Map(entries))
    }
}

/// A YAML document that failed to parse.
#[derive(Debug)]
pub(crate) struct ParseError {
    pub message: String,
    pub line: Option<usize>,
}

/// Parses the first YAML (or JSON) document of `text`. Returns the node and
/// whether more documents followed. `Ok(None)` means no document at all.
///
/// Parsing runs on its own thread with a large stack: the deserializer
/// recurses once per nesting level, with big frames in debug builds, and a
/// stack overflow would abort the whole daemon. The depth budget is lowered
/// too (real manifests nest about 8 deep).
pub(crate) fn parse_yaml(text: &str) -> Result<(Option<Node>, bool), ParseError> {
    std::thread::scope(|scope| {
        match std::thread::Builder::new()
            .name("yaml-parse".into())
            .stack_size(PARSE_STACK)
            .spawn_scoped(scope, || parse_yaml_here(text))
        {
            Ok(handle) => handle.join().unwrap_or_else(|_| {
                Err(ParseError {
                    message: "the YAML parser failed".into(),
                    line: None,
                })
            }),
            Err(_) => parse_yaml_here(text),
        }
    })
}

/// Stack of the parsing thread (reserved, not committed, memory).
const PARSE_STACK: usize = 64 << 20;
/// Nesting limit for manifests.
const MAX_DEPTH: usize = 32;

fn parse_yaml_here(text: &str) -> Result<(Option<Node>, bool), ParseError> {
    let options = serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            max_depth: MAX_DEPTH,
        },
        // YAML 1.2 booleans: `yes`/`on` stay strings (bool fields accept them explicitly).
        strict_booleans: true,
        with_snippet: false,
    };
    let mut reader = text.as_bytes();
    let mut docs = serde_saphyr::read_with_options::<_, Node>(&mut reader, options);
    let first = match docs.next() {
        None => return Ok((None, false)),
        Some(Ok(node)) => node,
        Some(Err(e)) => {
            let line = e
                .location()
                .and_then(|l| usize::try_from(l.line()).ok())
                .filter(|l| *l > 0);
            return Err(ParseError {
                message: yaml_message(&e),
                line,
            });
        }
    };
    // Only the first document counts (as the kubelet); note whether there is more.
    let more = docs.next().is_some();
    Ok((Some(first), more))
}

/// The first line of a serde-saphyr error, without its location suffix.
fn yaml_message(e: &serde_saphyr::Error) -> String {
    let text = e.to_string();
    let first = text.lines().next().unwrap_or("invalid YAML").trim();
    first.to_string()
}

// === TOML ===

/// Maps byte offsets to 1-based lines.
pub(crate) struct Lines(Vec<usize>);

impl Lines {
    pub fn new(text: &str) -> Self {
        Lines(
            text.bytes()
                .enumerate()
                .filter(|(_, b)| *b == b'\n')
                .map(|(i, _)| i)
                .collect(),
        )
    }
    pub fn line(&self, offset: usize) -> usize {
        self.0.partition_point(|&nl| nl < offset) + 1
    }
}

/// Parses TOML text into a node tree; on syntax errors returns every error with its line.
pub(crate) fn parse_toml(text: &str) -> Result<Node, Vec<ParseError>> {
    let lines = Lines::new(text);
    let (table, errors) = toml::de::DeTable::parse_recoverable(text);
    if !errors.is_empty() {
        return Err(errors
            .iter()
            .map(|e| ParseError {
                message: e.message().trim().to_string(),
                line: e.span().map(|s| lines.line(s.start)),
            })
            .collect());
    }
    let line = Some(lines.line(table.span().start));
    Ok(Node {
        kind: toml_table(table.get_ref(), &lines),
        line,
    })
}

fn toml_table(table: &toml::de::DeTable<'_>, lines: &Lines) -> Kind {
    let mut entries: Vec<(usize, Entry)> = table
        .iter()
        .map(|(k, v)| {
            let start = k.span().start;
            (
                start,
                Entry {
                    key: k.get_ref().to_string(),
                    value: Node {
                        kind: toml_value(v.get_ref(), lines),
                        line: Some(lines.line(start)),
                    },
                },
            )
        })
        .collect();
    // Keep file order (the map itself is sorted by key).
    entries.sort_by_key(|(start, _)| *start);
    Kind::Map(entries.into_iter().map(|(_, e)| e).collect())
}

fn toml_value(value: &toml::de::DeValue<'_>, lines: &Lines) -> Kind {
    use toml::de::DeValue;
    match value {
        DeValue::String(s) => Kind::Str(s.to_string()),
        DeValue::Integer(i) => {
            let text = i.to_string().replace('_', "");
            let (radix, digits) = match text.get(..2) {
                Some("0x") => (16, &text[2..]),
                Some("0o") => (8, &text[2..]),
                Some("0b") => (2, &text[2..]),
                _ => (10, text.as_str()),
            };
            i128::from_str_radix(digits, radix)
                .map(Kind::Int)
                .unwrap_or(Kind::Other("an out-of-range integer"))
        }
        DeValue::Float(f) => f
            .to_string()
            .replace('_', "")
            .parse::<f64>()
            .map(Kind::Float)
            .unwrap_or(Kind::Other("a float")),
        DeValue::Boolean(b) => Kind::Bool(*b),
        DeValue::Datetime(_) => Kind::Other("a datetime"),
        DeValue::Array(items) => Kind::Seq(
            items
                .iter()
                .map(|v| Node {
                    kind: toml_value(v.get_ref(), lines),
                    line: Some(lines.line(v.span().start)),
                })
                .collect(),
        ),
        DeValue::Table(t) => toml_table(t, lines),
    }
}

// === The walker ===

/// Collects diagnostics for one file.
pub(crate) struct Ctx<'a> {
    pub file: &'a Path,
    pub diags: Vec<Diagnostic>,
}

impl<'a> Ctx<'a> {
    pub fn new(file: &'a Path) -> Self {
        Ctx {
            file,
            diags: Vec::new(),
        }
    }

    pub fn push(
        &mut self,
        sev: Severity,
        line: Option<usize>,
        field: &str,
        msg: impl Into<String>,
    ) {
        self.diags.push(Diagnostic {
            severity: sev,
            file: self.file.to_path_buf(),
            line,
            field: (!field.is_empty()).then(|| field.to_string()),
            message: msg.into(),
        });
    }

    pub fn error(&mut self, node: &Node, field: &str, msg: impl Into<String>) {
        self.push(Severity::Error, node.line, field, msg);
    }

    pub fn warn(&mut self, node: &Node, field: &str, msg: impl Into<String>) {
        self.push(Severity::Warning, node.line, field, msg);
    }

    pub fn has_errors(&self) -> bool {
        self.diags.iter().any(|d| d.severity == Severity::Error)
    }

    fn type_error(&mut self, node: &Node, field: &str, want: &str) {
        let hint = match (&node.kind, want) {
            (Kind::Int(_) | Kind::Float(_) | Kind::Bool(_), "a string") => " (quote it)",
            _ => "",
        };
        let got = node.kind.describe();
        self.error(node, field, format!("expected {want}, found {got}{hint}"));
    }

    /// A mapping's fields; `None` (and an error) if `node` is not a mapping.
    /// `null` counts as an empty mapping.
    pub fn fields<'n>(&mut self, node: &'n Node, path: &str) -> Option<Fields<'n>> {
        match &node.kind {
            Kind::Map(entries) => Some(Fields {
                node,
                path: path.to_string(),
                entries,
                used: vec![false; entries.len()],
            }),
            Kind::Null => Some(Fields {
                node,
                path: path.to_string(),
                entries: &[],
                used: vec![],
            }),
            _ => {
                self.type_error(node, path, "a mapping");
                None
            }
        }
    }

    pub fn string(&mut self, node: &Node, path: &str) -> Option<String> {
        match &node.kind {
            Kind::Str(s) => Some(s.clone()),
            _ => {
                self.type_error(node, path, "a string");
                None
            }
        }
    }

    pub fn int(&mut self, node: &Node, path: &str) -> Option<i128> {
        match &node.kind {
            Kind::Int(i) => Some(*i),
            _ => {
                self.type_error(node, path, "an integer");
                None
            }
        }
    }

    /// An integer in `lo..=hi`.
    pub fn int_in(&mut self, node: &Node, path: &str, lo: i128, hi: i128) -> Option<i128> {
        let v = self.int(node, path)?;
        if v < lo || v > hi {
            self.error(
                node,
                path,
                format!("must be between {lo} and {hi}, found {v}"),
            );
            return None;
        }
        Some(v)
    }

    pub fn float(&mut self, node: &Node, path: &str) -> Option<f64> {
        match &node.kind {
            Kind::Float(f) => Some(*f),
            Kind::Int(i) => Some(*i as f64),
            _ => {
                self.type_error(node, path, "a number");
                None
            }
        }
    }

    /// A boolean; YAML 1.1 spellings (`yes`, `on`, ...) are accepted as the
    /// kubelet's YAML reader does.
    pub fn bool(&mut self, node: &Node, path: &str) -> Option<bool> {
        match &node.kind {
            Kind::Bool(b) => Some(*b),
            Kind::Str(s) => match s.as_str() {
                "y" | "Y" | "yes" | "Yes" | "YES" | "on" | "On" | "ON" => Some(true),
                "n" | "N" | "no" | "No" | "NO" | "off" | "Off" | "OFF" => Some(false),
                _ => {
                    self.type_error(node, path, "a boolean");
                    None
                }
            },
            _ => {
                self.type_error(node, path, "a boolean");
                None
            }
        }
    }

    /// A list; `null` is an empty list.
    pub fn list<'n>(&mut self, node: &'n Node, path: &str) -> Option<&'n [Node]> {
        match &node.kind {
            Kind::Seq(items) => Some(items),
            Kind::Null => Some(&[]),
            _ => {
                self.type_error(node, path, "a list");
                None
            }
        }
    }

    /// A list of strings (every bad element reported).
    pub fn string_list(&mut self, node: &Node, path: &str) -> Option<Vec<String>> {
        let items = self.list(node, path)?;
        let mut out = Vec::with_capacity(items.len());
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            match self.string(item, &format!("{path}[{i}]")) {
                Some(s) => out.push(s),
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    /// An argv list (command, args, exec hook or probe): a list of strings
    /// where an element holding a NUL byte is an error naming the element
    /// (execve(2) would silently cut the argument there). The list is
    /// returned even then, so later checks do not report it as missing.
    pub fn argv_list(&mut self, node: &Node, path: &str) -> Option<Vec<String>> {
        let out = self.string_list(node, path)?;
        let items = self.list(node, path)?;
        for (i, (arg, item)) in out.iter().zip(items).enumerate() {
            if arg.contains('\0') {
                self.error(
                    item,
                    &format!("{path}[{i}]"),
                    "contains a NUL byte: execve(2) would cut the argument there",
                );
            }
        }
        Some(out)
    }

    /// A duration string with units, e.g. `"10s"`.
    pub fn duration(&mut self, node: &Node, path: &str) -> Option<std::time::Duration> {
        let s = self.string(node, path)?;
        match crate::duration::parse(&s) {
            Ok(d) => Some(d),
            Err(e) => {
                self.error(node, path, e);
                None
            }
        }
    }
}

/// The fields of one mapping, remembering which were read.
pub(crate) struct Fields<'n> {
    pub node: &'n Node,
    pub path: String,
    entries: &'n [Entry],
    used: Vec<bool>,
}

impl<'n> Fields<'n> {
    /// The dotted path of a field of this mapping.
    pub fn sub(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    /// The value of `key`, marking it read. The last of duplicate keys wins
    /// (TOML and our YAML options reject duplicates before this).
    pub fn get(&mut self, key: &str) -> Option<&'n Node> {
        let mut found = None;
        for (i, e) in self.entries.iter().enumerate() {
            if e.key == key {
                self.used[i] = true;
                found = Some(&e.value);
            }
        }
        found
    }

    /// Like [`Fields::get`], but `null` counts as absent.
    pub fn get_some(&mut self, key: &str) -> Option<&'n Node> {
        self.get(key).filter(|n| n.kind != Kind::Null)
    }

    /// Marks fields as read without looking at them (known and meaningless here).
    pub fn ignore(&mut self, keys: &[&str]) {
        for k in keys {
            let _ = self.get(k);
        }
    }

    /// Reports each listed field that is present (and not null/empty) with `msg`, at `sev`.
    pub fn unsupported(&mut self, ctx: &mut Ctx<'_>, sev: Severity, keys: &[(&str, &str)]) {
        for (k, msg) in keys {
            if let Some(v) = self.get(k) {
                let empty = match &v.kind {
                    Kind::Null => true,
                    Kind::Seq(s) => s.is_empty(),
                    Kind::Map(m) => m.is_empty(),
                    Kind::Str(s) => s.is_empty(),
                    _ => false,
                };
                if !empty {
                    ctx.push(sev, v.line, &self.sub(k), *msg);
                }
            }
        }
    }

    /// All entries, marking them read (for free-form maps such as `env`).
    pub fn all(&mut self) -> &'n [Entry] {
        self.used.iter_mut().for_each(|u| *u = true);
        self.entries
    }

    /// Reports every field not read, at `sev`.
    pub fn finish(self, ctx: &mut Ctx<'_>, sev: Severity) {
        for (e, used) in self.entries.iter().zip(&self.used) {
            if !used {
                let what = if sev == Severity::Error {
                    "unknown key"
                } else {
                    "unknown field, ignored"
                };
                let line = e.value.line.or(self.node.line);
                ctx.push(sev, line, &self.sub(&e.key), what);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_nodes_carry_lines_and_types() {
        let (node, more) = parse_yaml("a: 1\nb:\n  - \"2\"\n  - x\nc: 1.5\nd: yes\n").unwrap();
        let node = node.unwrap();
        assert!(!more);
        let Kind::Map(entries) = &node.kind else {
            panic!("not a map")
        };
        assert_eq!(entries[0].key, "a");
        assert_eq!(entries[0].value.kind, Kind::Int(1));
        assert_eq!(entries[0].value.line, Some(1));
        let Kind::Seq(items) = &entries[1].value.kind else {
            panic!("not a seq")
        };
        assert_eq!(items[0].kind, Kind::Str("2".into()));
        assert_eq!(items[1].line, Some(4));
        assert_eq!(entries[2].value.kind, Kind::Float(1.5));
        assert_eq!(entries[3].value.kind, Kind::Str("yes".into()));
    }

    #[test]
    fn yaml_multi_document_reports_more() {
        let (node, more) = parse_yaml("a: 1\n---\nb: 2\n").unwrap();
        assert!(more);
        assert_eq!(node.unwrap().to_json(), serde_json::json!({"a": 1}));
    }

    #[test]
    fn yaml_duplicate_keys_are_an_error() {
        let err = parse_yaml("a: 1\na: 2\n").unwrap_err();
        assert!(
            err.message.to_lowercase().contains("duplicate"),
            "{}",
            err.message
        );
    }

    #[test]
    fn toml_lines() {
        let node = parse_toml("x = 1\n\n[t]\ny = \"s\"\n").unwrap();
        let Kind::Map(entries) = &node.kind else {
            panic!("not a map")
        };
        assert_eq!(entries[0].key, "x");
        assert_eq!(entries[1].key, "t");
        let Kind::Map(inner) = &entries[1].value.kind else {
            panic!("not a map")
        };
        assert_eq!(inner[0].value.line, Some(4));
        let errs = parse_toml("x = \n").unwrap_err();
        assert_eq!(errs[0].line, Some(1));
    }
}

#[cfg(test)]
mod depth_tests {
    #[test]
    fn deep_block_nesting_is_an_error_not_an_overflow() {
        for n in [40, 100, 10_000] {
            let text = format!("{}x\n", "- ".repeat(n));
            assert!(super::parse_yaml(&text).is_err(), "seq {n}");
            let mut text = String::new();
            for i in 0..n.min(2000) {
                text.push_str(&" ".repeat(i));
                text.push_str("a:\n");
            }
            let err = super::parse_yaml(&text).unwrap_err();
            assert!(
                err.message.to_lowercase().contains("depth"),
                "{}",
                err.message
            );
        }
        // 20 levels are fine.
        let text = format!("{}x\n", "- ".repeat(20));
        assert!(super::parse_yaml(&text).is_ok());
    }
}
