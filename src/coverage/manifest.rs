//! The manifest, `tracecov.yaml`: the expected topology as the team declares it.
//!
//! Owns the manifest's format (documented in full in `docs/manifest.md`), its parsing with
//! positions in every error, and what it contributes: aliases and test services for analysis,
//! mocks, declared edges and interfaces, and the Pact and OpenAPI files it attaches (paths
//! resolved against the manifest's directory; loading them is `Manifest::load_contracts`).
//!
//! Key design decision: the raw structs are plain serde derives with `deny_unknown_fields`, and
//! the two short forms (`gateway -> users` for an edge, `POST /users` for an interface) are
//! written as visitors rather than `#[serde(untagged)]` enums: an untagged enum reports only
//! "data did not match any variant", losing both the reason and the line.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};

use crate::expect::{AttrRule, Bounds, Expectation, Glob};
use crate::graph::AnalysisOptions;

use super::error::{NameWarning, SourceError, closest, line_of};
use super::route::Op;
use super::{ANY_CALLER, Contract, Declared};

/// A parsed manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// Where it was read from (for messages and relative paths).
    pub file: PathBuf,
    pub test_services: Vec<String>,
    /// Background traffic joins the expected set.
    pub background: bool,
    /// (address, service) pairs for `AnalysisOptions::aliases`.
    pub aliases: Vec<(String, String)>,
    /// Mock node id → the node it stands in for.
    pub mocks: BTreeMap<String, String>,
    /// Edges and interfaces declared in `edges`.
    pub declared: Vec<Declared>,
    /// OpenAPI documents attached to services, paths resolved.
    pub openapi: Vec<OpenApiRef>,
    /// Pact files, paths resolved (a directory stands for its `*.json` files).
    pub pacts: Vec<PathBuf>,
    /// The `expect:` list: what each test's traces must have done (DESIGN, "Expectations").
    /// Never a source of the expected topology.
    pub expectations: Vec<Expectation>,
    /// Every node name the manifest mentions, with the line it first appears on, for
    /// `unknown_names`.
    names: Vec<(String, Option<usize>)>,
}

/// An OpenAPI document attached to a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenApiRef {
    pub service: String,
    pub file: PathBuf,
    /// Overrides the path prefix taken from the document's first `servers` entry.
    pub base_path: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    #[serde(default)]
    version: Option<u32>,
    #[serde(default)]
    test_services: Vec<String>,
    #[serde(default)]
    background: bool,
    #[serde(default)]
    services: BTreeMap<String, Option<RawService>>,
    #[serde(default)]
    edges: Vec<Short<RawEdge>>,
    #[serde(default)]
    pacts: OneOrMany<String>,
    #[serde(default)]
    expect: Vec<RawExpect>,
}

/// One entry of `expect:` as written; `parse_expectation` checks it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExpect {
    name: String,
    #[serde(default)]
    tests: Option<String>,
    #[serde(default)]
    caller: Option<String>,
    #[serde(default)]
    callee: Option<String>,
    #[serde(default)]
    operation: Option<String>,
    #[serde(default)]
    calls: Option<RawBounds>,
    #[serde(default)]
    repeated: Option<RawMax>,
    #[serde(default)]
    duration_ms: Option<RawMaxMs>,
    #[serde(default)]
    attributes: Option<BTreeMap<String, serde_yaml_ng::Value>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBounds {
    #[serde(default)]
    min: Option<u64>,
    #[serde(default)]
    max: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMax {
    max: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMaxMs {
    max: f64,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawService {
    #[serde(default)]
    aliases: Vec<String>,
    #[serde(default)]
    mock_of: Option<String>,
    #[serde(default)]
    openapi: OneOrMany<RawOpenApi>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOpenApi {
    file: String,
    #[serde(default)]
    base_path: Option<String>,
}

impl FromShort for RawOpenApi {
    const EXPECTING: &'static str = "a file name or a map with `file` and `base_path`";
    fn from_short(text: &str) -> Result<Self, String> {
        Ok(RawOpenApi {
            file: text.to_owned(),
            base_path: None,
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEdge {
    caller: String,
    callee: String,
    #[serde(default)]
    critical: bool,
    #[serde(default)]
    interfaces: Vec<Short<RawInterface>>,
}

impl FromShort for RawEdge {
    const EXPECTING: &'static str = "`caller -> callee` or a map with `caller` and `callee`";
    fn from_short(text: &str) -> Result<Self, String> {
        let (caller, callee) = text
            .split_once("->")
            .ok_or_else(|| format!("an edge is written `caller -> callee`, not {text:?}"))?;
        Ok(RawEdge {
            caller: caller.trim().to_owned(),
            callee: callee.trim().to_owned(),
            critical: false,
            interfaces: Vec::new(),
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInterface {
    operation: String,
    #[serde(default)]
    critical: bool,
}

impl FromShort for RawInterface {
    const EXPECTING: &'static str = "an operation name or a map with `operation`";
    fn from_short(text: &str) -> Result<Self, String> {
        Ok(RawInterface {
            operation: text.to_owned(),
            critical: false,
        })
    }
}

/// A struct that may also be written as one string.
trait FromShort: Sized {
    const EXPECTING: &'static str;
    fn from_short(text: &str) -> Result<Self, String>;
}

/// `T` from a string (`FromShort`) or from a map (its derive).
struct Short<T>(T);

impl<'de, T: FromShort + Deserialize<'de>> Deserialize<'de> for Short<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: FromShort + Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = Short<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(T::EXPECTING)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Short<T>, E> {
                T::from_short(v).map(Short).map_err(E::custom)
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Short<T>, A::Error> {
                T::deserialize(de::value::MapAccessDeserializer::new(map)).map(Short)
            }
        }
        d.deserialize_any(V(PhantomData))
    }
}

/// One item or a list of them; each item may be written short.
struct OneOrMany<T>(Vec<T>);

impl<T> Default for OneOrMany<T> {
    fn default() -> Self {
        Self(Vec::new())
    }
}

impl FromShort for String {
    const EXPECTING: &'static str = "a file name";
    fn from_short(text: &str) -> Result<Self, String> {
        Ok(text.to_owned())
    }
}

impl<'de, T: FromShort + Deserialize<'de>> Deserialize<'de> for OneOrMany<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: FromShort + Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = OneOrMany<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}, or a list of them", T::EXPECTING)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<OneOrMany<T>, E> {
                T::from_short(v)
                    .map(|t| OneOrMany(vec![t]))
                    .map_err(E::custom)
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<OneOrMany<T>, A::Error> {
                T::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(|t| OneOrMany(vec![t]))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<OneOrMany<T>, A::Error> {
                let mut out = Vec::new();
                while let Some(Short(t)) = seq.next_element::<Short<T>>()? {
                    out.push(t);
                }
                Ok(OneOrMany(out))
            }
            fn visit_unit<E: de::Error>(self) -> Result<OneOrMany<T>, E> {
                Ok(OneOrMany(Vec::new()))
            }
        }
        d.deserialize_any(V(PhantomData))
    }
}

/// Reads and parses a manifest file.
pub fn load_manifest(path: &Path) -> Result<Manifest, SourceError> {
    let text = std::fs::read_to_string(path).map_err(|e| SourceError::read(path, &e))?;
    parse_manifest(&text, path)
}

/// Parses a manifest's text; `file` names it in errors and anchors its relative paths.
pub fn parse_manifest(text: &str, file: &Path) -> Result<Manifest, SourceError> {
    let raw: Raw = if text.trim().is_empty() {
        return Err(SourceError::new(file, "the manifest is empty"));
    } else {
        serde_yaml_ng::from_str(text).map_err(|e| SourceError::yaml(file, &e))?
    };
    let err = |needle: &str, reason: String| {
        SourceError::new(file, reason).at(if needle.is_empty() {
            None
        } else {
            line_of(text, needle)
        })
    };
    if let Some(v) = raw.version
        && v != 1
    {
        return Err(err(
            "version",
            format!("unknown manifest version {v}: expected 1"),
        ));
    }
    let dir = file.parent().unwrap_or(Path::new(""));
    let mut m = Manifest {
        file: file.to_owned(),
        test_services: raw.test_services.clone(),
        background: raw.background,
        aliases: Vec::new(),
        mocks: BTreeMap::new(),
        declared: Vec::new(),
        openapi: Vec::new(),
        pacts: raw.pacts.0.iter().map(|p| dir.join(p)).collect(),
        expectations: Vec::new(),
        names: Vec::new(),
    };
    for (i, e) in raw.expect.iter().enumerate() {
        let place = format!("expect[{i}] ({:?})", e.name);
        let checked = parse_expectation(e).map_err(|(needle, why)| {
            let needle = if needle.is_empty() { &e.name } else { &needle };
            err(needle, format!("{place}: {why}"))
        })?;
        if m.expectations.iter().any(|x| x.name == checked.name) {
            return Err(err(
                &e.name,
                format!("{place}: another expectation has this name"),
            ));
        }
        m.expectations.push(checked);
    }
    let mut names: BTreeSet<&str> = BTreeSet::new();
    for name in &raw.test_services {
        names.insert(name.as_str());
    }
    for (name, service) in &raw.services {
        if name.trim().is_empty() || name == ANY_CALLER {
            return Err(err(name, format!("{name:?} is not a service name")));
        }
        names.insert(name.as_str());
        let service = match service {
            Some(s) => s,
            None => continue,
        };
        for alias in &service.aliases {
            m.aliases.push((alias.clone(), name.clone()));
        }
        if let Some(real) = &service.mock_of {
            if real == name {
                return Err(err(
                    real,
                    format!("services.{name}: a service cannot be a mock of itself"),
                ));
            }
            m.mocks.insert(name.clone(), real.clone());
        }
        for doc in &service.openapi.0 {
            m.openapi.push(OpenApiRef {
                service: name.clone(),
                file: dir.join(&doc.file),
                base_path: doc.base_path.clone(),
            });
        }
    }
    for (i, Short(edge)) in raw.edges.iter().enumerate() {
        let place = format!("edges[{i}] ({} -> {})", edge.caller, edge.callee);
        for end in [&edge.caller, &edge.callee] {
            if end.trim().is_empty() {
                return Err(err(
                    "",
                    format!("{place}: caller and callee must be node ids"),
                ));
            }
        }
        if edge.callee == ANY_CALLER {
            return Err(err(
                &edge.callee,
                format!("{place}: the callee must be a node id, `*` is only for callers"),
            ));
        }
        let any = edge.caller == ANY_CALLER;
        if any && edge.interfaces.is_empty() {
            return Err(err(
                &edge.caller,
                format!(
                    "{place}: an edge from any caller (`*`) must list the interfaces expected \
                     of {}",
                    edge.callee
                ),
            ));
        }
        if !any {
            names.insert(edge.caller.as_str());
            m.declared.push(Declared {
                caller: Some(edge.caller.clone()),
                callee: edge.callee.clone(),
                operation: None,
                critical: edge.critical,
            });
        }
        names.insert(edge.callee.as_str());
        for Short(iface) in &edge.interfaces {
            if iface.operation.trim().is_empty() {
                return Err(err("", format!("{place}: an interface needs an operation")));
            }
            if let Err(e) = Op::parse(&iface.operation) {
                return Err(err(&iface.operation, format!("{place}: {e}")));
            }
            m.declared.push(Declared {
                caller: (!any).then(|| edge.caller.clone()),
                callee: edge.callee.clone(),
                operation: Some(iface.operation.clone()),
                critical: iface.critical || (any && edge.critical),
            });
        }
    }
    let stand_ins: BTreeSet<&str> = m.mocks.values().map(String::as_str).collect();
    m.names = names
        .into_iter()
        .filter(|n| !stand_ins.contains(n))
        .map(|n| (n.to_owned(), line_of(text, n)))
        .collect();
    Ok(m)
}

/// Checks one `expect:` entry; an error names the text to find its line by (empty: the entry's
/// name) and what is wrong.
fn parse_expectation(e: &RawExpect) -> Result<Expectation, (String, String)> {
    if e.name.trim().is_empty() {
        return Err((String::new(), "an expectation needs a name".into()));
    }
    let glob = |what: &str, p: &Option<String>| -> Result<Option<Glob>, (String, String)> {
        p.as_deref()
            .map(|p| Glob::new(p).map_err(|g| (p.to_owned(), format!("{what}: {g}"))))
            .transpose()
    };
    let calls = match &e.calls {
        None => None,
        Some(RawBounds {
            min: None,
            max: None,
        }) => {
            return Err(("calls".into(), "`calls` needs `min`, `max` or both".into()));
        }
        Some(RawBounds {
            min: Some(min),
            max: Some(max),
        }) if min > max => {
            return Err((
                "calls".into(),
                format!("`calls` cannot be at least {min} and at most {max}"),
            ));
        }
        Some(b) => Some(Bounds {
            min: b.min,
            max: b.max,
        }),
    };
    if let Some(r) = &e.repeated
        && r.max == 0
    {
        return Err((
            "repeated".into(),
            "`repeated {max: 0}` would forbid every call: say `calls {max: 0}`".into(),
        ));
    }
    if let Some(d) = &e.duration_ms
        && !(d.max.is_finite() && d.max > 0.0)
    {
        return Err((
            "duration_ms".into(),
            format!(
                "`duration_ms {{max}}` must be a positive number of milliseconds, not {}",
                d.max
            ),
        ));
    }
    let mut attributes = Vec::new();
    for (key, v) in e.attributes.iter().flatten() {
        let rule = match v {
            serde_yaml_ng::Value::String(s) if s == "present" => AttrRule::Present,
            serde_yaml_ng::Value::String(s) if s == "absent" => AttrRule::Absent,
            serde_yaml_ng::Value::String(s) => AttrRule::Equals(s.clone()),
            serde_yaml_ng::Value::Number(n) => AttrRule::Equals(n.to_string()),
            serde_yaml_ng::Value::Bool(b) => AttrRule::Equals(b.to_string()),
            _ => {
                return Err((
                    key.clone(),
                    format!("attribute {key:?}: expected present, absent or a value"),
                ));
            }
        };
        attributes.push((key.clone(), rule));
    }
    if calls.is_none() && e.repeated.is_none() && e.duration_ms.is_none() && attributes.is_empty() {
        return Err((
            String::new(),
            "says nothing to check: give `calls`, `repeated`, `duration_ms` or `attributes`".into(),
        ));
    }
    Ok(Expectation {
        name: e.name.clone(),
        tests: glob("tests", &e.tests)?,
        caller: glob("caller", &e.caller)?,
        callee: glob("callee", &e.callee)?,
        operation: glob("operation", &e.operation)?,
        calls,
        repeated: e.repeated.as_ref().map(|r| r.max),
        duration_ms: e.duration_ms.as_ref().map(|d| d.max),
        attributes,
    })
}

impl Manifest {
    /// The manifest declares expectations (edges, interfaces, contracts), not only aliases,
    /// test services or mocks.
    pub fn declares_topology(&self) -> bool {
        !self.declared.is_empty() || !self.pacts.is_empty() || !self.openapi.is_empty()
    }

    /// What analysis needs from the manifest: its test services, aliases and expectations.
    pub fn analysis_options(&self) -> AnalysisOptions {
        AnalysisOptions {
            test_services: self.test_services.clone(),
            aliases: self.aliases.clone(),
            expectations: self.expectations.clone(),
        }
    }

    /// The node a name in a contract file stands for: a service of the manifest, or the service
    /// one of its aliases names (a Pact pacticipant is often named like a deployment).
    pub fn node_for<'a>(&'a self, name: &'a str) -> &'a str {
        self.aliases
            .iter()
            .find(|(alias, _)| alias == name)
            .map_or(name, |(_, service)| service.as_str())
    }

    /// Loads the Pact files and OpenAPI documents the manifest attaches.
    pub fn load_contracts(&self) -> Result<Vec<Contract>, SourceError> {
        let mut out = Vec::new();
        for path in &self.pacts {
            if path.is_dir() {
                let mut files: Vec<PathBuf> = std::fs::read_dir(path)
                    .map_err(|e| SourceError::read(path, &e))?
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.extension().is_some_and(|x| x == "json"))
                    .collect();
                files.sort();
                for f in files {
                    out.push(super::pact::load_pact(&f)?);
                }
            } else {
                out.push(super::pact::load_pact(path)?);
            }
        }
        for doc in &self.openapi {
            out.push(super::openapi::load_openapi(
                &doc.file,
                &doc.service,
                doc.base_path.as_deref(),
            )?);
        }
        Ok(out)
    }

    /// The names the manifest mentions that appear in no trace (`seen`: every node id the store
    /// has shown), each with the closest names seen. Nodes that only a mock stands in for are
    /// not expected to appear, and are not reported.
    pub fn unknown_names<'a>(&self, seen: impl IntoIterator<Item = &'a str>) -> Vec<NameWarning> {
        let seen: BTreeSet<&str> = seen.into_iter().collect();
        self.names
            .iter()
            .filter(|(n, _)| !seen.contains(n.as_str()))
            .map(|(n, line)| NameWarning {
                file: self.file.clone(),
                line: *line,
                name: n.clone(),
                closest: closest(n, seen.iter().copied()),
            })
            .collect()
    }
}
