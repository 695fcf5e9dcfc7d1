//! YAML and JSON manifests to objects, with errors that name file, line, column and field.
//!
//! ```text
//!  text ──yaml-rust2 events──> one JSON value per document + the line and column of every path
//!   value ──serde_path_to_error──> k8s-openapi object           (type errors, with their path)
//!   value vs object serialised back ──> unknown fields          (errors: Kubernetes has no such field)
//!   object vs the implemented-field table ──> ignored fields    (warnings: berth does not act on them yet)
//!   object ──validation::validate──> field errors               (paths mapped back to lines)
//! ```
//!
//! Every problem of every document is collected; if there is any, the whole file is refused so
//! that callers never apply half of it. The JSON value is built from yaml-rust2's events rather
//! than by serde_yaml: one parse gives both the values and their positions (serde_yaml reports
//! positions only for the first error, and its multi-document iterator does not stop after a
//! syntax error). Plain scalars are typed the way Kubernetes' own YAML reader (YAML 1.1) types
//! them, so `defaultMode: 0644` is octal and `readOnly: yes` is a boolean, as with kubectl.

use crate::{validation, Kind, Resource};
use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, ReplicaSet, ReplicaSetSpec,
    RollingUpdateDeployment,
};
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapKeySelector, ConfigMapVolumeSource, Container, ContainerPort,
    EmptyDirVolumeSource, EnvFromSource, EnvVar, EnvVarSource, ExecAction, HTTPGetAction,
    Lifecycle, LifecycleHandler, Namespace, Node, NodeSpec, Pod, PodSpec, PodTemplateSpec, Probe,
    ResourceRequirements, Secret, SecretKeySelector, SecretVolumeSource, Service, ServicePort,
    ServiceSpec, TCPSocketAction, Volume, VolumeMount,
};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::Path;
use yaml_rust2::parser::{Event, Parser, Tag};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// One object read from a manifest.
#[derive(Debug, Clone, PartialEq)]
pub struct ManifestObject {
    pub resource: Resource,
    pub file: String,
    /// 1-based line where the object starts (its first key).
    pub line: usize,
    /// `{file}:{line}:{column}: warning: {path} is not implemented by berth yet and is ignored`
    pub warnings: Vec<String>,
}

/// One problem in a manifest. `line` and `column` are 1-based; both are 0 when the problem is
/// with the file as a whole (it cannot be read).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub path: String,
    pub message: String,
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:", self.file)?;
        if self.line > 0 {
            write!(f, "{}:{}:", self.line, self.column)?;
        }
        if !self.path.is_empty() {
            write!(f, " {}:", self.path)?;
        }
        write!(f, " {}", self.message)
    }
}

impl std::error::Error for ManifestError {}

/// Every problem found, in file order.
#[derive(Debug)]
pub struct ManifestErrors(pub Vec<ManifestError>);

impl fmt::Display for ManifestErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ManifestErrors {}

/// The objects in `text`, a stream of YAML (or JSON) documents read from `file`.
pub fn parse(file: &str, text: &str) -> Result<Vec<ManifestObject>, ManifestErrors> {
    if let Some(error) = unprintable_character(file, text) {
        return Err(ManifestErrors(vec![error]));
    }
    // yaml-rust2 would make a byte order mark part of the first key.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let (documents, syntax_error) = read_documents(text);

    let mut objects = Vec::new();
    let mut errors = Vec::new();
    for document in &documents {
        let source = Source {
            file,
            positions: &document.positions,
        };
        let mut document_errors: Vec<ManifestError> = document
            .problems
            .iter()
            .map(|problem| source.error(&problem.path, At::Key, problem.message.clone()))
            .collect();
        for (prefix, value) in objects_in(&document.value) {
            match decode_object(&source, &prefix, value) {
                Ok(object) => objects.push(object),
                Err(mut object_errors) => document_errors.append(&mut object_errors),
            }
        }
        // Checks run field by field in key order; users read files top to bottom.
        document_errors.sort_by_key(|e| (e.line, e.column));
        errors.append(&mut document_errors);
    }
    if let Some((mark, message)) = syntax_error {
        errors.push(ManifestError {
            file: file.to_string(),
            line: mark.line,
            column: mark.column,
            path: String::new(),
            message,
        });
    }
    if errors.is_empty() {
        Ok(objects)
    } else {
        Err(ManifestErrors(errors))
    }
}

/// The objects in every manifest `paths` name. Each path is a file, a directory (its `*.yaml`,
/// `*.yml` and `*.json` files, sorted, not recursive), or `-` for standard input.
pub fn load(paths: &[String]) -> Result<Vec<ManifestObject>, ManifestErrors> {
    let mut objects = Vec::new();
    let mut errors = Vec::new();
    for path in paths {
        let files = match manifest_files(path) {
            Ok(files) => files,
            Err(error) => {
                errors.push(error);
                continue;
            }
        };
        for file in files {
            let result = read_text(&file)
                .and_then(|text| parse(&file, &text).map_err(|ManifestErrors(errors)| errors));
            match result {
                Ok(mut parsed) => objects.append(&mut parsed),
                Err(mut file_errors) => errors.append(&mut file_errors),
            }
        }
    }
    if errors.is_empty() {
        Ok(objects)
    } else {
        Err(ManifestErrors(errors))
    }
}

const STDIN: &str = "<stdin>";

fn file_error(file: &str, message: impl Into<String>) -> ManifestError {
    ManifestError {
        file: file.to_string(),
        line: 0,
        column: 0,
        path: String::new(),
        message: message.into(),
    }
}

/// The files `path` stands for: itself, or a directory's manifests.
fn manifest_files(path: &str) -> Result<Vec<String>, ManifestError> {
    if path == "-" {
        return Ok(vec![STDIN.to_string()]);
    }
    let dir = Path::new(path);
    if !dir.is_dir() {
        return Ok(vec![path.to_string()]);
    }
    let entries =
        std::fs::read_dir(dir).map_err(|e| file_error(path, format!("cannot list: {e}")))?;
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| file_error(path, format!("cannot list: {e}")))?;
        let file = entry.path();
        let is_manifest = file
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| ["yaml", "yml", "json"].contains(&e.to_ascii_lowercase().as_str()));
        if is_manifest && file.is_file() {
            files.push(file.to_string_lossy().into_owned());
        }
    }
    if files.is_empty() {
        return Err(file_error(
            path,
            "directory has no manifests (*.yaml, *.yml or *.json files)",
        ));
    }
    files.sort();
    Ok(files)
}

fn read_text(file: &str) -> Result<String, Vec<ManifestError>> {
    let bytes = if file == STDIN {
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut bytes).map(|_| bytes)
    } else {
        std::fs::read(file)
    };
    let bytes = bytes.map_err(|e| vec![file_error(file, format!("cannot read: {e}"))])?;
    String::from_utf8(bytes).map_err(|e| {
        let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        let valid = std::str::from_utf8(valid).expect("the prefix up to valid_up_to is UTF-8");
        let mark = end_of(valid);
        vec![ManifestError {
            file: file.to_string(),
            line: mark.line,
            column: mark.column,
            path: String::new(),
            message: format!(
                "not UTF-8 text (byte 0x{:02x}); is this a binary file?",
                e.as_bytes()[valid.len()]
            ),
        }]
    })
}

/// The position just after `text`.
fn end_of(text: &str) -> Mark {
    let line = text.matches('\n').count() + 1;
    let last_line = text.rsplit('\n').next().unwrap_or("");
    Mark {
        line,
        column: last_line.chars().count() + 1,
    }
}

/// YAML allows only printable characters; anything else means this is not a manifest (often a
/// binary file), and saying so at once beats a confusing parse error.
fn unprintable_character(file: &str, text: &str) -> Option<ManifestError> {
    let printable = |c: char| {
        matches!(c, '\t' | '\n' | '\r' | ' '..='~' | '\u{85}')
            || ('\u{a0}'..='\u{d7ff}').contains(&c)
            || ('\u{e000}'..='\u{fffd}').contains(&c)
            || c >= '\u{10000}'
    };
    let (offset, c) = text.char_indices().find(|(_, c)| !printable(*c))?;
    let mark = end_of(&text[..offset]);
    Some(ManifestError {
        file: file.to_string(),
        line: mark.line,
        column: mark.column,
        path: String::new(),
        message: format!(
            "not YAML text: it contains the control character U+{:04X}; is this a binary file?",
            c as u32
        ),
    })
}

// ---------------------------------------------------------------------------------------------
// Paths and positions
// ---------------------------------------------------------------------------------------------

/// A 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Mark {
    line: usize,
    column: usize,
}

impl From<Marker> for Mark {
    fn from(marker: Marker) -> Self {
        // yaml-rust2 counts lines from 1 and columns from 0.
        Mark {
            line: marker.line(),
            column: marker.col() + 1,
        }
    }
}

/// Where a node is: its key (for mapping entries) and its value.
#[derive(Debug, Clone, Copy)]
struct Position {
    key: Option<Mark>,
    value: Mark,
    collection: bool,
}

/// Positions by path; a path's segments are map keys and list indexes, both as text.
type Positions = HashMap<Vec<String>, Position>;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Key(String),
    Index(usize),
}

impl Segment {
    fn text(&self) -> String {
        match self {
            Segment::Key(key) => key.clone(),
            Segment::Index(i) => i.to_string(),
        }
    }
}

fn plain(path: &[Segment]) -> Vec<String> {
    path.iter().map(Segment::text).collect()
}

/// `spec.containers[0].name`; keys that are not identifiers go in brackets:
/// `metadata.labels[app.kubernetes.io/name]`.
fn display(path: &[Segment]) -> String {
    let mut out = String::new();
    for segment in path {
        match segment {
            Segment::Index(i) => out.push_str(&format!("[{i}]")),
            Segment::Key(key) => {
                let identifier = !key.is_empty()
                    && key
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
                if !identifier {
                    out.push_str(&format!("[{key}]"));
                } else {
                    if !out.is_empty() {
                        out.push('.');
                    }
                    out.push_str(key);
                }
            }
        }
    }
    out
}

/// The segments of a path in [`display`] or [`validation`] form, as text.
fn parse_path(path: &str) -> Vec<String> {
    let mut segments = Vec::new();
    let mut rest = path;
    while !rest.is_empty() {
        if let Some(inner) = rest.strip_prefix('[') {
            // A bracketed key may itself contain brackets; it ends at a `]` that ends the
            // path or is followed by another segment.
            let end = inner
                .match_indices(']')
                .map(|(i, _)| i)
                .find(|&i| matches!(inner.as_bytes().get(i + 1), None | Some(b'.' | b'[')))
                .unwrap_or(inner.len());
            segments.push(inner[..end].to_string());
            rest = inner.get(end + 1..).unwrap_or("");
        } else {
            let rest_trimmed = rest.strip_prefix('.').unwrap_or(rest);
            let end = rest_trimmed.find(['.', '[']).unwrap_or(rest_trimmed.len());
            segments.push(rest_trimmed[..end].to_string());
            rest = &rest_trimmed[end..];
        }
    }
    segments
}

/// What an error points at: the key of a field (unknown or ignored fields), or its value.
#[derive(Clone, Copy)]
enum At {
    Key,
    Value,
}

/// One document's file and positions, to turn paths into errors.
struct Source<'a> {
    file: &'a str,
    positions: &'a Positions,
}

impl Source<'_> {
    /// The position of `path`, or of its nearest ancestor present in the file (a missing field
    /// points at the mapping that lacks it).
    fn mark(&self, path: &[String], at: At) -> Mark {
        for len in (0..=path.len()).rev() {
            if let Some(position) = self.positions.get(&path[..len]) {
                // Pointing at a key reads better than at the first line of a block under it.
                let use_key = matches!(at, At::Key) || position.collection;
                return match position.key.filter(|_| use_key) {
                    Some(key) => key,
                    None => position.value,
                };
            }
        }
        Mark { line: 1, column: 1 }
    }

    fn error(&self, path: &[Segment], at: At, message: String) -> ManifestError {
        let mark = self.mark(&plain(path), at);
        ManifestError {
            file: self.file.to_string(),
            line: mark.line,
            column: mark.column,
            path: display(path),
            message,
        }
    }
}

/// Messages from serde echo values; a 5 MB string must not become a 5 MB error.
fn shorten(message: &str) -> String {
    const MAX: usize = 300;
    match message.char_indices().nth(MAX) {
        Some((end, _)) => format!("{}...", &message[..end]),
        None => message.to_string(),
    }
}

// ---------------------------------------------------------------------------------------------
// YAML to JSON values with positions
// ---------------------------------------------------------------------------------------------

/// A document as a JSON value, with the position of every node and any problems (duplicate
/// keys, unknown aliases) found while reading it.
struct Document {
    value: Value,
    positions: Positions,
    problems: Vec<Problem>,
}

struct Problem {
    path: Vec<Segment>,
    message: String,
}

/// Nodes aliases may add in one document: protects against "billion laughs" documents.
const ALIAS_BUDGET: usize = 100_000;

/// Reads every document, stopping at the first syntax error (returned with its position).
fn read_documents(text: &str) -> (Vec<Document>, Option<(Mark, String)>) {
    let mut parser = Parser::new_from_str(text);
    let mut documents = Vec::new();
    let mut builder: Option<Builder> = None;
    loop {
        let (event, marker) = match parser.next_token() {
            Ok(next) => next,
            Err(e) => {
                let message = format!("invalid YAML: {}", e.info());
                return (documents, Some((Mark::from(*e.marker()), message)));
            }
        };
        match event {
            Event::StreamEnd => break,
            Event::StreamStart | Event::Nothing => {}
            Event::DocumentStart => builder = Some(Builder::default()),
            Event::DocumentEnd => documents.extend(builder.take().map(Builder::finish)),
            event => {
                let builder = builder.get_or_insert_with(Builder::default);
                if let Err(message) = builder.event(event, marker) {
                    return (documents, Some((Mark::from(marker), message)));
                }
            }
        }
    }
    documents.extend(builder.map(Builder::finish));
    (documents, None)
}

#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    anchors: HashMap<usize, Value>,
    positions: Positions,
    problems: Vec<Problem>,
    root: Option<Value>,
    alias_nodes: usize,
}

struct Frame {
    collection: Collection,
    anchor: usize,
    /// The collection's start event; for block mappings yaml-rust2 puts it after the first
    /// key, so the first child's position is used when it comes earlier.
    start: Marker,
    first_child: Option<Marker>,
    /// For mappings: the key whose value comes next.
    key: Option<(String, Marker)>,
    /// Mappings merged in with `<<` keys, applied at the end.
    merges: Vec<Value>,
}

enum Collection {
    Map(Map<String, Value>),
    Seq(Vec<Value>),
}

impl Builder {
    fn event(&mut self, event: Event, marker: Marker) -> Result<(), String> {
        match event {
            Event::Scalar(text, style, anchor, tag) => {
                if self.expects_key() {
                    self.set_key(text, marker);
                    return Ok(());
                }
                let value = scalar(&text, style, tag.as_ref());
                if anchor > 0 {
                    self.anchors.insert(anchor, value.clone());
                }
                // An empty value (`key:`) has no position of its own: yaml-rust2 reports the
                // next token's.
                let empty = text.is_empty() && style == TScalarStyle::Plain;
                let marker = match self.stack.last().and_then(|f| f.key.as_ref()) {
                    Some((_, key_marker)) if empty => *key_marker,
                    _ => marker,
                };
                self.complete(value, marker, false);
            }
            Event::Alias(id) => {
                let value = match self.anchors.get(&id) {
                    Some(value) => value.clone(),
                    None => {
                        self.problem("unknown alias".to_string());
                        Value::Null
                    }
                };
                self.alias_nodes += count_nodes(&value);
                if self.alias_nodes > ALIAS_BUDGET {
                    return Err(format!(
                        "aliases expand to more than {ALIAS_BUDGET} nodes; refusing to expand further"
                    ));
                }
                if self.expects_key() {
                    self.set_key(key_text(&value), marker);
                } else {
                    let collection = value.is_object() || value.is_array();
                    self.complete(value, marker, collection);
                }
            }
            Event::MappingStart(anchor, _) | Event::SequenceStart(anchor, _) => {
                let collection = if matches!(event, Event::MappingStart(..)) {
                    Collection::Map(Map::new())
                } else {
                    Collection::Seq(Vec::new())
                };
                self.stack.push(Frame {
                    collection,
                    anchor,
                    start: marker,
                    first_child: None,
                    key: None,
                    merges: Vec::new(),
                });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                let Some(frame) = self.stack.pop() else {
                    return Ok(());
                };
                let start = match frame.first_child {
                    Some(first) if first.index() < frame.start.index() => first,
                    _ => frame.start,
                };
                let value = match frame.collection {
                    Collection::Seq(items) => Value::Array(items),
                    Collection::Map(mut map) => {
                        // Explicit keys win over merged ones, earlier merges over later ones.
                        for merged in frame.merges {
                            let maps = match merged {
                                Value::Array(items) => items,
                                other => vec![other],
                            };
                            for (key, value) in maps
                                .into_iter()
                                .filter_map(|m| match m {
                                    Value::Object(m) => Some(m),
                                    _ => None,
                                })
                                .flatten()
                            {
                                map.entry(key).or_insert(value);
                            }
                        }
                        Value::Object(map)
                    }
                };
                if frame.anchor > 0 {
                    self.anchors.insert(frame.anchor, value.clone());
                }
                self.complete(value, start, true);
            }
            Event::StreamStart
            | Event::StreamEnd
            | Event::DocumentStart
            | Event::DocumentEnd
            | Event::Nothing => {}
        }
        Ok(())
    }

    fn expects_key(&self) -> bool {
        matches!(
            self.stack.last(),
            Some(Frame {
                collection: Collection::Map(_),
                key: None,
                ..
            })
        )
    }

    fn set_key(&mut self, key: String, marker: Marker) {
        let frame = self.stack.last_mut().expect("a mapping expects this key");
        frame.first_child.get_or_insert(marker);
        frame.key = Some((key, marker));
    }

    /// The path of the node being read now.
    fn path(&self) -> Vec<Segment> {
        self.stack
            .iter()
            .map(|frame| match &frame.collection {
                Collection::Map(_) => {
                    Segment::Key(frame.key.as_ref().map_or("?".into(), |(k, _)| k.clone()))
                }
                Collection::Seq(items) => Segment::Index(items.len()),
            })
            .collect()
    }

    fn problem(&mut self, message: String) {
        let path = self.path();
        self.problems.push(Problem { path, message });
    }

    /// Adds a finished node to its parent (or makes it the document).
    fn complete(&mut self, value: Value, marker: Marker, collection: bool) {
        if self.expects_key() {
            // A mapping or sequence used as a key: rare, kept as its JSON text.
            self.set_key(key_text(&value), marker);
            return;
        }
        let path = self.path();
        let Some(frame) = self.stack.last_mut() else {
            self.positions.insert(
                Vec::new(),
                Position {
                    key: None,
                    value: marker.into(),
                    collection,
                },
            );
            self.root = Some(value);
            return;
        };
        match &mut frame.collection {
            Collection::Seq(items) => {
                frame.first_child.get_or_insert(marker);
                items.push(value);
                self.positions.insert(
                    plain(&path),
                    Position {
                        key: None,
                        value: marker.into(),
                        collection,
                    },
                );
            }
            Collection::Map(map) => {
                let (key, key_marker) = frame.key.take().expect("a value follows its key");
                if key == "<<" {
                    frame.merges.push(value);
                    return;
                }
                let duplicate = map.insert(key, value).is_some();
                let text_path = plain(&path);
                if duplicate {
                    let first = self.positions.get(&text_path).and_then(|p| p.key);
                    let message = match first {
                        Some(first) => format!("duplicate key (first at line {})", first.line),
                        None => "duplicate key".to_string(),
                    };
                    self.problems.push(Problem { path, message });
                }
                self.positions.insert(
                    text_path,
                    Position {
                        key: Some(key_marker.into()),
                        value: marker.into(),
                        collection,
                    },
                );
            }
        }
    }

    fn finish(self) -> Document {
        Document {
            value: self.root.unwrap_or(Value::Null),
            positions: self.positions,
            problems: self.problems,
        }
    }
}

fn count_nodes(value: &Value) -> usize {
    1 + match value {
        Value::Array(items) => items.iter().map(count_nodes).sum(),
        Value::Object(map) => map.values().map(count_nodes).sum(),
        _ => 0,
    }
}

fn key_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A scalar's JSON value. Quoted scalars are strings; plain ones are typed like go-yaml (YAML
/// 1.1), which is what kubectl reads manifests with.
fn scalar(text: &str, style: TScalarStyle, tag: Option<&Tag>) -> Value {
    let core_tag = tag
        .filter(|t| t.handle == "tag:yaml.org,2002:" || t.handle == "!!")
        .map(|t| t.suffix.as_str());
    match core_tag {
        Some("str") | Some("binary") | Some("timestamp") => Value::String(text.to_string()),
        Some("null") | Some("bool") | Some("int") | Some("float") => plain_scalar(text),
        _ if style != TScalarStyle::Plain => Value::String(text.to_string()),
        _ => plain_scalar(text),
    }
}

fn plain_scalar(text: &str) -> Value {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "y" | "Y" | "yes" | "Yes" | "YES" | "true" | "True" | "TRUE" | "on" | "On" | "ON" => {
            return Value::Bool(true)
        }
        "n" | "N" | "no" | "No" | "NO" | "false" | "False" | "FALSE" | "off" | "Off" | "OFF" => {
            return Value::Bool(false)
        }
        _ => {}
    }
    if let Some(number) = integer(text) {
        return number;
    }
    if is_float(text) {
        if let Some(number) = text
            .replace('_', "")
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
        {
            return Value::Number(number);
        }
    }
    // .inf and .nan have no JSON form; as strings they fail to decode with a clear type error.
    Value::String(text.to_string())
}

/// Integers as go-yaml reads them: underscores ignored, `0x`, `0o`, `0b` prefixes, and a
/// leading `0` meaning octal.
fn integer(text: &str) -> Option<Value> {
    let cleaned = text.replace('_', "");
    let (negative, digits) = match cleaned.as_bytes().first()? {
        b'-' => (true, &cleaned[1..]),
        b'+' => (false, &cleaned[1..]),
        _ => (false, cleaned.as_str()),
    };
    let (radix, digits) = if let Some(hex) = digits.strip_prefix("0x") {
        (16, hex)
    } else if let Some(octal) = digits.strip_prefix("0o") {
        (8, octal)
    } else if let Some(binary) = digits.strip_prefix("0b") {
        (2, binary)
    } else if digits.len() > 1 && digits.starts_with('0') {
        (8, &digits[1..])
    } else {
        (10, digits)
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    let magnitude = u64::from_str_radix(digits, radix).ok()?;
    if negative {
        let value = 0i64.checked_sub_unsigned(magnitude)?;
        Some(Value::from(value))
    } else {
        Some(Value::from(magnitude))
    }
}

/// `[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?`, go-yaml's float syntax.
fn is_float(text: &str) -> bool {
    let text = text.replace('_', "");
    let s = text.strip_prefix(['-', '+']).unwrap_or(&text);
    let (mantissa, exponent) = match s.find(['e', 'E']) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    let digits = |d: &str| d.bytes().all(|b| b.is_ascii_digit());
    let mantissa_ok = match mantissa.split_once('.') {
        Some((whole, fraction)) => {
            digits(whole) && digits(fraction) && !(whole.is_empty() && fraction.is_empty())
        }
        None => !mantissa.is_empty() && digits(mantissa),
    };
    let exponent_ok = exponent.is_none_or(|e| {
        let e = e.strip_prefix(['-', '+']).unwrap_or(e);
        !e.is_empty() && digits(e)
    });
    mantissa_ok && exponent_ok
}

// ---------------------------------------------------------------------------------------------
// Documents to objects
// ---------------------------------------------------------------------------------------------

/// The objects a document holds: itself, or the items of a `kind: List`; empty documents hold
/// none.
fn objects_in(value: &Value) -> Vec<(Vec<Segment>, &Value)> {
    if value.is_null() {
        return Vec::new();
    }
    if value.get("kind").and_then(Value::as_str) == Some("List") {
        if let Some(items) = value.get("items").and_then(Value::as_array) {
            return items
                .iter()
                .enumerate()
                .map(|(i, item)| (vec![Segment::Key("items".into()), Segment::Index(i)], item))
                .collect();
        }
    }
    vec![(Vec::new(), value)]
}

fn decode_object(
    source: &Source,
    prefix: &[Segment],
    value: &Value,
) -> Result<ManifestObject, Vec<ManifestError>> {
    let at = |segments: &[&str]| {
        let mut path = prefix.to_vec();
        path.extend(segments.iter().map(|s| Segment::Key(s.to_string())));
        path
    };
    let Some(fields) = value.as_object() else {
        let found = match value {
            Value::Array(_) => "a list",
            Value::String(_) => "a string",
            Value::Number(_) => "a number",
            Value::Bool(_) => "a boolean",
            _ => "nothing",
        };
        return Err(vec![source.error(
            prefix,
            At::Value,
            format!("expected an object (a mapping with apiVersion and kind), found {found}"),
        )]);
    };

    let mut errors = Vec::new();
    let api_version = fields.get("apiVersion").and_then(Value::as_str);
    let kind_name = fields.get("kind").and_then(Value::as_str);
    for (field, present) in [("apiVersion", api_version), ("kind", kind_name)] {
        if present.is_none_or(str::is_empty) {
            errors.push(source.error(&at(&[field]), At::Value, "is required (a string)".into()));
        }
    }
    let (Some(api_version), Some(kind_name)) = (api_version, kind_name) else {
        return Err(errors);
    };
    let Some(kind) = Kind::from_manifest(api_version, kind_name) else {
        return Err(vec![unknown_kind(source, &at, api_version, kind_name)]);
    };

    let resource = match decode(kind, value) {
        Ok(resource) => resource,
        Err(e) => {
            let mut path = prefix.to_vec();
            path.extend(e.path().iter().filter_map(|segment| match segment {
                serde_path_to_error::Segment::Seq { index } => Some(Segment::Index(*index)),
                serde_path_to_error::Segment::Map { key } => Some(Segment::Key(key.clone())),
                serde_path_to_error::Segment::Enum { variant } => {
                    Some(Segment::Key(variant.clone()))
                }
                serde_path_to_error::Segment::Unknown => None,
            }));
            let mut message = shorten(&e.inner().to_string());
            if message.contains("expected a string") && !message.starts_with("invalid type: string")
            {
                message.push_str(" (quote the value to make it a string)");
            }
            // serde's own messages start in lower case; the base64 decoder behind Secret data
            // and ConfigMap binaryData says only "Invalid symbol 32, offset 3."
            if message.starts_with("Invalid ") {
                message = format!("not valid base64: {message}");
            }
            return Err(vec![source.error(&path, At::Value, message)]);
        }
    };

    let typed = resource.to_value();
    let mut fields = FieldCheck {
        source,
        implemented: Implemented::for_kind(kind),
        types: type_table(kind),
        errors: Vec::new(),
        warnings: Vec::new(),
    };
    fields.walk(
        value,
        &typed,
        &mut prefix.to_vec(),
        String::new(),
        Coverage::Partial,
    );
    errors.append(&mut fields.errors);

    let prefix_text = display(prefix);
    for error in validation::validate(&resource) {
        let mut path = plain(prefix);
        path.extend(parse_path(&error.path));
        let mark = source.mark(&path, At::Value);
        errors.push(ManifestError {
            file: source.file.to_string(),
            line: mark.line,
            column: mark.column,
            path: join_paths(&prefix_text, &error.path),
            message: error.message,
        });
    }

    if !errors.is_empty() {
        return Err(errors);
    }
    fields
        .warnings
        .sort_by_key(|(mark, _)| (mark.line, mark.column));
    Ok(ManifestObject {
        resource,
        file: source.file.to_string(),
        line: source.mark(&plain(prefix), At::Value).line,
        warnings: fields.warnings.into_iter().map(|(_, w)| w).collect(),
    })
}

fn join_paths(prefix: &str, path: &str) -> String {
    match (prefix.is_empty(), path.is_empty()) {
        (true, _) => path.to_string(),
        (_, true) => prefix.to_string(),
        _ if path.starts_with('[') => format!("{prefix}{path}"),
        _ => format!("{prefix}.{path}"),
    }
}

fn unknown_kind(
    source: &Source,
    at: &dyn Fn(&[&str]) -> Vec<Segment>,
    api_version: &str,
    kind_name: &str,
) -> ManifestError {
    if let Some(kind) = Kind::ALL.iter().find(|k| k.as_str() == kind_name) {
        return source.error(
            &at(&["apiVersion"]),
            At::Value,
            format!(
                "berth serves {kind_name} as apiVersion {}, not {api_version:?}",
                kind.api_version()
            ),
        );
    }
    let mut served: Vec<(&str, Vec<&str>)> = Vec::new();
    for kind in Kind::ALL {
        match served
            .iter_mut()
            .find(|(api, _)| *api == kind.api_version())
        {
            Some((_, kinds)) => kinds.push(kind.as_str()),
            None => served.push((kind.api_version(), vec![kind.as_str()])),
        }
    }
    let served = served
        .iter()
        .map(|(api, kinds)| format!("{} ({api})", kinds.join(", ")))
        .collect::<Vec<_>>()
        .join("; ");
    source.error(
        &at(&["kind"]),
        At::Value,
        format!(
            "berth does not serve kind {} (apiVersion {}); it serves {served}",
            shorten(&format!("{kind_name:?}")),
            shorten(&format!("{api_version:?}")),
        ),
    )
}

fn decode(
    kind: Kind,
    value: &Value,
) -> Result<Resource, serde_path_to_error::Error<serde_json::Error>> {
    fn typed<T: DeserializeOwned + Into<Resource>>(
        value: &Value,
    ) -> Result<Resource, serde_path_to_error::Error<serde_json::Error>> {
        serde_path_to_error::deserialize::<_, T>(value).map(Into::into)
    }
    match kind {
        Kind::Pod => typed::<Pod>(value),
        Kind::Service => typed::<Service>(value),
        Kind::ConfigMap => typed::<ConfigMap>(value),
        Kind::Secret => typed::<Secret>(value),
        Kind::Namespace => typed::<Namespace>(value),
        Kind::Node => typed::<Node>(value),
        Kind::Deployment => typed::<Deployment>(value),
        Kind::ReplicaSet => typed::<ReplicaSet>(value),
        Kind::Event => typed::<k8s_openapi::api::core::v1::Event>(value),
        Kind::EndpointSlice => typed::<EndpointSlice>(value),
    }
}

// ---------------------------------------------------------------------------------------------
// Unknown and unimplemented fields
// ---------------------------------------------------------------------------------------------

// The fields berth implements, as paths from the object's root. `[]` stands for every item of
// a list. A listed field implements its whole subtree; any other field present in a manifest
// draws a warning naming its path.

const IMPLEMENTED_COMMON: &[&str] = &[
    "apiVersion",
    "kind",
    "metadata.name",
    "metadata.namespace",
    "metadata.labels",
    "metadata.annotations",
    // Set by the server; harmless in a manifest copied from `get -o yaml`.
    "metadata.uid",
    "metadata.resourceVersion",
    "metadata.generation",
    "metadata.creationTimestamp",
    "metadata.deletionTimestamp",
    "metadata.deletionGracePeriodSeconds",
    "metadata.ownerReferences",
    "metadata.finalizers",
    "status",
];

/// Relative to the pod spec: `spec` in a Pod, `spec.template.spec` in a Deployment.
const IMPLEMENTED_POD_SPEC: &[&str] = &[
    "containers[].name",
    "containers[].image",
    "containers[].imagePullPolicy",
    "containers[].command",
    "containers[].args",
    "containers[].workingDir",
    "containers[].env[].name",
    "containers[].env[].value",
    "containers[].env[].valueFrom.configMapKeyRef",
    "containers[].env[].valueFrom.secretKeyRef",
    "containers[].env[].valueFrom.fieldRef",
    "containers[].env[].valueFrom.resourceFieldRef",
    "containers[].envFrom[].configMapRef",
    "containers[].envFrom[].secretRef",
    "containers[].envFrom[].prefix",
    "containers[].ports[].name",
    "containers[].ports[].containerPort",
    "containers[].ports[].protocol",
    "containers[].resources.requests",
    "containers[].resources.limits",
    "containers[].lifecycle.preStop.exec",
    "containers[].lifecycle.preStop.httpGet",
    "containers[].lifecycle.preStop.sleep",
    "containers[].volumeMounts[].name",
    "containers[].volumeMounts[].mountPath",
    "containers[].volumeMounts[].readOnly",
    "containers[].volumeMounts[].subPath",
    "volumes[].name",
    "volumes[].configMap",
    "volumes[].secret",
    "volumes[].emptyDir",
    "nodeName",
    "nodeSelector",
    "restartPolicy",
    "terminationGracePeriodSeconds",
];

/// Relative to each of a container's readinessProbe, livenessProbe and startupProbe.
const IMPLEMENTED_PROBE: &[&str] = &[
    "httpGet.path",
    "httpGet.port",
    "httpGet.host",
    "httpGet.scheme",
    "httpGet.httpHeaders",
    "tcpSocket.port",
    "tcpSocket.host",
    "exec.command",
    "initialDelaySeconds",
    "periodSeconds",
    "timeoutSeconds",
    "failureThreshold",
    "successThreshold",
    "terminationGracePeriodSeconds",
];

const PROBES: &[&str] = &["readinessProbe", "livenessProbe", "startupProbe"];

fn implemented_for_kind(kind: Kind) -> &'static [&'static str] {
    match kind {
        Kind::Pod => &[],
        Kind::Deployment => &[
            "spec.replicas",
            "spec.selector.matchLabels",
            "spec.selector.matchExpressions",
            "spec.template.metadata.labels",
            "spec.template.metadata.annotations",
            "spec.strategy.type",
            "spec.strategy.rollingUpdate.maxSurge",
            "spec.strategy.rollingUpdate.maxUnavailable",
            "spec.minReadySeconds",
            "spec.revisionHistoryLimit",
            "spec.paused",
            "spec.progressDeadlineSeconds",
        ],
        Kind::ReplicaSet => &[
            "spec.replicas",
            "spec.selector.matchLabels",
            "spec.selector.matchExpressions",
            "spec.template.metadata.labels",
            "spec.template.metadata.annotations",
            "spec.minReadySeconds",
        ],
        Kind::Service => &[
            "spec.type",
            "spec.selector",
            "spec.ports[].name",
            "spec.ports[].protocol",
            "spec.ports[].port",
            "spec.ports[].targetPort",
            "spec.ports[].nodePort",
            "spec.ports[].appProtocol",
            "spec.sessionAffinity",
            "spec.publishNotReadyAddresses",
            "spec.clusterIP",
            "spec.clusterIPs",
        ],
        Kind::ConfigMap => &["data", "binaryData", "immutable"],
        Kind::Secret => &["data", "stringData", "type", "immutable"],
        Kind::Namespace => &[],
        Kind::Node => &["spec.podCIDR", "spec.podCIDRs", "spec.unschedulable"],
        Kind::Event => &[
            "involvedObject.apiVersion",
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.fieldPath",
            "reason",
            "message",
            "type",
            "source.component",
            "source.host",
            "firstTimestamp",
            "lastTimestamp",
            "eventTime",
            "count",
            "reportingComponent",
            "reportingInstance",
            "action",
        ],
        Kind::EndpointSlice => &[
            "addressType",
            "endpoints[].addresses",
            "endpoints[].conditions.ready",
            "endpoints[].conditions.serving",
            "endpoints[].conditions.terminating",
            "endpoints[].nodeName",
            "endpoints[].targetRef",
            "endpoints[].hostname",
            "ports[].name",
            "ports[].port",
            "ports[].protocol",
            "ports[].appProtocol",
        ],
    }
}

/// Where the pod spec sits in objects of `kind`, if they have one.
fn pod_spec_path(kind: Kind) -> Option<&'static str> {
    match kind {
        Kind::Pod => Some("spec"),
        Kind::Deployment | Kind::ReplicaSet => Some("spec.template.spec"),
        _ => None,
    }
}

/// The implemented-field table of one kind, with every proper prefix of its paths (the
/// fields to look inside).
struct Implemented {
    fields: HashSet<String>,
    prefixes: HashSet<String>,
}

impl Implemented {
    fn for_kind(kind: Kind) -> Self {
        let mut fields: Vec<String> = IMPLEMENTED_COMMON
            .iter()
            .chain(implemented_for_kind(kind))
            .map(|f| f.to_string())
            .collect();
        if let Some(pod_spec) = pod_spec_path(kind) {
            fields.extend(
                IMPLEMENTED_POD_SPEC
                    .iter()
                    .map(|f| format!("{pod_spec}.{f}")),
            );
            for probe in PROBES {
                fields.extend(
                    IMPLEMENTED_PROBE
                        .iter()
                        .map(|f| format!("{pod_spec}.containers[].{probe}.{f}")),
                );
            }
        }
        let mut prefixes = HashSet::new();
        for field in &fields {
            for (i, c) in field.char_indices() {
                if c == '.' || c == '[' {
                    prefixes.insert(field[..i].to_string());
                }
            }
            if let Some(list) = field.strip_suffix("[]") {
                prefixes.insert(list.to_string());
            }
        }
        Implemented {
            fields: fields.into_iter().collect(),
            prefixes,
        }
    }
}

/// A Kubernetes type's name and fields, read from its Deserialize implementation.
type Describe = fn() -> (&'static str, &'static [&'static str]);

/// The Kubernetes type at each path where berth users are likely to write fields, so that an
/// unknown field names the type that lacks it and suggests a near miss.
fn type_table(kind: Kind) -> Vec<(String, Describe)> {
    let mut table: Vec<(String, Describe)> = vec![("metadata".into(), describe::<ObjectMeta>)];
    let root: Describe = match kind {
        Kind::Pod => describe::<Pod>,
        Kind::Service => describe::<Service>,
        Kind::ConfigMap => describe::<ConfigMap>,
        Kind::Secret => describe::<Secret>,
        Kind::Namespace => describe::<Namespace>,
        Kind::Node => describe::<Node>,
        Kind::Deployment => describe::<Deployment>,
        Kind::ReplicaSet => describe::<ReplicaSet>,
        Kind::Event => describe::<k8s_openapi::api::core::v1::Event>,
        Kind::EndpointSlice => describe::<EndpointSlice>,
    };
    table.push((String::new(), root));
    let workload: &[(&str, Describe)] = &[
        ("spec.selector", describe::<LabelSelector>),
        ("spec.template", describe::<PodTemplateSpec>),
        ("spec.template.metadata", describe::<ObjectMeta>),
    ];
    let by_kind: &[(&str, Describe)] = match kind {
        Kind::Deployment => &[
            ("spec", describe::<DeploymentSpec>),
            ("spec.strategy", describe::<DeploymentStrategy>),
            (
                "spec.strategy.rollingUpdate",
                describe::<RollingUpdateDeployment>,
            ),
        ],
        Kind::ReplicaSet => &[("spec", describe::<ReplicaSetSpec>)],
        Kind::Service => &[
            ("spec", describe::<ServiceSpec>),
            ("spec.ports[]", describe::<ServicePort>),
        ],
        Kind::Node => &[("spec", describe::<NodeSpec>)],
        Kind::EndpointSlice => &[
            ("endpoints[]", describe::<Endpoint>),
            ("ports[]", describe::<EndpointPort>),
        ],
        _ => &[],
    };
    table.extend(by_kind.iter().map(|(p, d)| (p.to_string(), *d)));
    if matches!(kind, Kind::Deployment | Kind::ReplicaSet) {
        table.extend(workload.iter().map(|(p, d)| (p.to_string(), *d)));
    }
    if let Some(pod_spec) = pod_spec_path(kind) {
        let mut in_pod: Vec<(String, Describe)> = vec![
            (String::new(), describe::<PodSpec>),
            ("volumes[]".into(), describe::<Volume>),
            (
                "volumes[].configMap".into(),
                describe::<ConfigMapVolumeSource>,
            ),
            ("volumes[].secret".into(), describe::<SecretVolumeSource>),
            (
                "volumes[].emptyDir".into(),
                describe::<EmptyDirVolumeSource>,
            ),
        ];
        for list in ["containers[]", "initContainers[]"] {
            let container: &[(&str, Describe)] = &[
                ("", describe::<Container>),
                (".ports[]", describe::<ContainerPort>),
                (".env[]", describe::<EnvVar>),
                (".env[].valueFrom", describe::<EnvVarSource>),
                (
                    ".env[].valueFrom.configMapKeyRef",
                    describe::<ConfigMapKeySelector>,
                ),
                (
                    ".env[].valueFrom.secretKeyRef",
                    describe::<SecretKeySelector>,
                ),
                (".envFrom[]", describe::<EnvFromSource>),
                (".resources", describe::<ResourceRequirements>),
                (".lifecycle", describe::<Lifecycle>),
                (".lifecycle.preStop", describe::<LifecycleHandler>),
                (".lifecycle.postStart", describe::<LifecycleHandler>),
                (".volumeMounts[]", describe::<VolumeMount>),
            ];
            in_pod.extend(container.iter().map(|(p, d)| (format!("{list}{p}"), *d)));
            for probe in PROBES {
                let probe_types: &[(&str, Describe)] = &[
                    ("", describe::<Probe>),
                    (".httpGet", describe::<HTTPGetAction>),
                    (".tcpSocket", describe::<TCPSocketAction>),
                    (".exec", describe::<ExecAction>),
                ];
                in_pod.extend(
                    probe_types
                        .iter()
                        .map(|(p, d)| (format!("{list}.{probe}{p}"), *d)),
                );
            }
        }
        table.extend(in_pod.into_iter().map(|(p, d)| {
            let path = if p.is_empty() {
                pod_spec.to_string()
            } else {
                format!("{pod_spec}.{p}")
            };
            (path, d)
        }));
    }
    table
}

/// `T`'s name and field names, as its Deserialize implementation hands them to
/// `deserialize_struct` (k8s-openapi's types all do).
fn describe<T: DeserializeOwned>() -> (&'static str, &'static [&'static str]) {
    match T::deserialize(StructProbe) {
        Err(Probed(Some(described))) => described,
        _ => ("", &[]),
    }
}

/// A deserializer that only records the struct asked of it.
struct StructProbe;

#[derive(Debug)]
struct Probed(Option<(&'static str, &'static [&'static str])>);

impl fmt::Display for Probed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("probe")
    }
}

impl std::error::Error for Probed {}

impl serde::de::Error for Probed {
    fn custom<T: fmt::Display>(_: T) -> Self {
        Probed(None)
    }
}

impl<'de> serde::Deserializer<'de> for StructProbe {
    type Error = Probed;

    fn deserialize_any<V: serde::de::Visitor<'de>>(self, _: V) -> Result<V::Value, Probed> {
        Err(Probed(None))
    }

    fn deserialize_struct<V: serde::de::Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Probed> {
        Err(Probed(Some((name, fields))))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Coverage {
    /// Some fields below are implemented: look at each.
    Partial,
    /// Implemented, or already warned about: only look for unknown fields.
    Done,
}

struct FieldCheck<'a> {
    source: &'a Source<'a>,
    implemented: Implemented,
    types: Vec<(String, Describe)>,
    errors: Vec<ManifestError>,
    warnings: Vec<(Mark, String)>,
}

impl FieldCheck<'_> {
    /// Compares the manifest's value with the typed object serialised back, field by field.
    /// `pattern` is the path from the object's root with `[]` for list items.
    fn walk(
        &mut self,
        input: &Value,
        typed: &Value,
        path: &mut Vec<Segment>,
        pattern: String,
        coverage: Coverage,
    ) {
        match (input, typed) {
            (Value::Object(input), Value::Object(typed)) => {
                for (key, input_value) in input {
                    path.push(Segment::Key(key.clone()));
                    let child = if pattern.is_empty() {
                        key.clone()
                    } else {
                        format!("{pattern}.{key}")
                    };
                    match typed.get(key) {
                        // k8s-openapi dropped it: Kubernetes has no such field. Nulls and
                        // empty collections may vanish legitimately, and mean nothing anyway.
                        None if !is_empty(input_value) => self.unknown_field(path, &pattern, key),
                        None => {}
                        Some(typed_value) => {
                            let coverage = self.coverage(coverage, &child, path, typed_value);
                            self.walk(input_value, typed_value, path, child, coverage);
                        }
                    }
                    path.pop();
                }
            }
            (Value::Array(input), Value::Array(typed)) if input.len() == typed.len() => {
                for (i, (input_item, typed_item)) in input.iter().zip(typed).enumerate() {
                    path.push(Segment::Index(i));
                    self.walk(
                        input_item,
                        typed_item,
                        path,
                        format!("{pattern}[]"),
                        coverage,
                    );
                    path.pop();
                }
            }
            // Scalars, and values whose representation changed (a Quantity written as a
            // number comes back as a string): only key presence matters here.
            _ => {}
        }
    }

    fn coverage(
        &mut self,
        coverage: Coverage,
        pattern: &str,
        path: &[Segment],
        value: &Value,
    ) -> Coverage {
        if coverage == Coverage::Done || self.implemented.fields.contains(pattern) {
            return Coverage::Done;
        }
        if self.implemented.prefixes.contains(pattern) {
            return Coverage::Partial;
        }
        if !is_empty(value) {
            let mark = self.source.mark(&plain(path), At::Key);
            self.warnings.push((
                mark,
                format!(
                    "{}:{}:{}: warning: {} is not implemented by berth yet and is ignored",
                    self.source.file,
                    mark.line,
                    mark.column,
                    display(path)
                ),
            ));
        }
        Coverage::Done
    }

    fn unknown_field(&mut self, path: &[Segment], parent_pattern: &str, key: &str) {
        let described = self
            .types
            .iter()
            .find(|(pattern, _)| pattern == parent_pattern)
            .map(|(_, describe)| describe());
        let message = match described {
            Some((type_name, fields)) => {
                let hint = match closest(key, fields) {
                    Some(near) => format!("; did you mean {near}?"),
                    None => String::new(),
                };
                format!("unknown field (Kubernetes' {type_name} has no such field{hint})")
            }
            None => "unknown field (Kubernetes has no such field here)".to_string(),
        };
        self.errors.push(self.source.error(path, At::Key, message));
    }
}

fn is_empty(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Object(map) => map.is_empty(),
        Value::Array(items) => items.is_empty(),
        _ => false,
    }
}

/// The field `key` was probably meant to be: same letters in another case, or at most two
/// edits away.
fn closest<'a>(key: &str, fields: &[&'a str]) -> Option<&'a str> {
    let key_lower = key.to_ascii_lowercase();
    fields
        .iter()
        .map(|field| {
            let distance = if field.to_ascii_lowercase() == key_lower {
                0
            } else {
                edit_distance(&key_lower, &field.to_ascii_lowercase())
            };
            (distance, *field)
        })
        .filter(|(distance, _)| *distance <= 2)
        .min()
        .map(|(_, field)| field)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != *cb);
            current.push(substitution.min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_scalars_are_typed_like_kubectl() {
        assert_eq!(plain_scalar("0644"), Value::from(420u64));
        assert_eq!(plain_scalar("0x1F"), Value::from(31u64));
        assert_eq!(plain_scalar("-12"), Value::from(-12i64));
        assert_eq!(plain_scalar("1_000"), Value::from(1000u64));
        assert_eq!(plain_scalar("0"), Value::from(0u64));
        assert_eq!(plain_scalar("1.5"), Value::from(1.5));
        assert_eq!(plain_scalar("1e3"), Value::from(1000.0));
        assert_eq!(plain_scalar(".5"), Value::from(0.5));
        assert_eq!(plain_scalar("yes"), Value::Bool(true));
        assert_eq!(plain_scalar("Off"), Value::Bool(false));
        assert_eq!(plain_scalar("~"), Value::Null);
        assert_eq!(plain_scalar("three"), Value::from("three"));
        assert_eq!(plain_scalar("128Mi"), Value::from("128Mi"));
        assert_eq!(plain_scalar("1.2.3"), Value::from("1.2.3"));
        assert_eq!(plain_scalar(".inf"), Value::from(".inf"));
        assert_eq!(plain_scalar("-"), Value::from("-"));
        assert_eq!(
            plain_scalar("99999999999999999999"),
            Value::from(1e20),
            "too large for 64 bits: a float, as in go-yaml"
        );
    }

    #[test]
    fn paths_round_trip_between_forms() {
        let path = vec![
            Segment::Key("metadata".into()),
            Segment::Key("labels".into()),
            Segment::Key("app.kubernetes.io/name".into()),
        ];
        assert_eq!(display(&path), "metadata.labels[app.kubernetes.io/name]");
        assert_eq!(parse_path(&display(&path)), plain(&path));
        assert_eq!(
            parse_path("spec.containers[0].resources.requests[cpu]"),
            ["spec", "containers", "0", "resources", "requests", "cpu"]
        );
        assert_eq!(parse_path("data[a[b]]"), ["data", "a[b]"]);
        assert_eq!(parse_path(""), Vec::<String>::new());
    }

    #[test]
    fn positions_are_one_based_and_absolute() {
        let (documents, error) = read_documents("a: 1\n---\nb:\n  c: [x, {d: e}]\n  f:\n");
        assert!(error.is_none());
        assert_eq!(documents.len(), 2);
        let positions = &documents[1].positions;
        let at = |path: &[&str]| {
            let p = positions[&path.iter().map(|s| s.to_string()).collect::<Vec<_>>()];
            (
                p.key.map(|k| (k.line, k.column)),
                (p.value.line, p.value.column),
            )
        };
        assert_eq!(at(&["b"]), (Some((3, 1)), (4, 3)));
        assert_eq!(at(&["b", "c"]), (Some((4, 3)), (4, 6)));
        assert_eq!(at(&["b", "c", "1", "d"]), (Some((4, 11)), (4, 14)));
        assert_eq!(at(&["b", "c", "1"]), (None, (4, 10)));
        assert_eq!(at(&["b", "f"]), (Some((5, 3)), (5, 3)));
    }

    #[test]
    fn duplicate_keys_and_merges() {
        let (documents, _) = read_documents("base: &b {x: 1, y: 2}\nm:\n  <<: *b\n  y: 3\nm: 4\n");
        let document = &documents[0];
        assert_eq!(document.value["base"], serde_json::json!({"x": 1, "y": 2}));
        assert_eq!(document.problems.len(), 1);
        assert_eq!(
            document.problems[0].message,
            "duplicate key (first at line 2)"
        );
        let (documents, _) = read_documents("m:\n  <<: {x: 1, y: 2}\n  y: 3\n");
        assert_eq!(documents[0].value["m"], serde_json::json!({"x": 1, "y": 3}));
    }

    #[test]
    fn alias_bombs_are_refused() {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..10 {
            let j = i - 1;
            text.push_str(&format!(
                "a{i}: &a{i} [*a{j}, *a{j}, *a{j}, *a{j}, *a{j}, *a{j}, *a{j}, *a{j}, *a{j}, *a{j}]\n"
            ));
        }
        let (_, error) = read_documents(&text);
        assert!(error.unwrap().1.contains("aliases expand"));
    }

    #[test]
    fn near_misses_are_suggested() {
        let fields = &["imagePullPolicy", "image", "name"];
        assert_eq!(closest("imagePullPolcy", fields), Some("imagePullPolicy"));
        assert_eq!(closest("Image", fields), Some("image"));
        assert_eq!(closest("securityContext", fields), None);
        let (name, fields) = describe::<Container>();
        assert_eq!(name, "Container");
        assert!(fields.contains(&"imagePullPolicy"));
    }
}
