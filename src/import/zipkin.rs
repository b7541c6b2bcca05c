//! Zipkin v2 JSON: an array of spans (`/api/v2/trace/{id}`, the UI's download), an array of traces
//! (`/api/v2/traces`: an array of arrays of spans), or a single span object.
//!
//! Zipkin's data needs repair before it becomes OTLP-shaped spans, and repair needs every piece of
//! a trace at once:
//! - **Shared span ids.** An RPC's client and server halves may share one id (`"shared": true`,
//!   and one id may have several server halves, one per receiving instance). The client half
//!   keeps the id; every other half gets a new id derived from the shared id and its local
//!   endpoint (FNV-1a, so the same file always gives the same ids; never zero, never an id already
//!   in the trace), the client half as its parent, and the original id in the attribute
//!   [`SHARED_SPAN_ID`] so links and the API can still find it. Children that pointed at the
//!   shared id from the server's side (same local endpoint, else same service) are re-parented to
//!   the server half, as Zipkin's own UI does.
//! - **Fragments.** Kind-less spans that repeat an id (late annotations, a second reporter) are
//!   merged into the half with the same local endpoint: tags and annotations unioned, timestamp,
//!   duration, name and endpoints filled when missing.
//!
//! **Memory bound:** spans are grouped by trace id in a buffer of at most [`MAX_BUFFERED_SPANS`].
//! An inner array (one trace of `/api/v2/traces`) is repaired and delivered when it ends; a flat
//! array is delivered when it ends, or, when the buffer overflows, oldest trace first until half
//! the buffer is free. A trace larger than the buffer, or one whose spans are scattered across an
//! overflowing flat file, is repaired in pieces: halves that land in different pieces keep their
//! ids as given.
//!
//! **Attribute mapping** (so the call graph finds the nodes of DESIGN's grammar):
//! - `localEndpoint.serviceName` → resource `service.name`;
//! - CLIENT with `remoteEndpoint.serviceName` R and a query tag (`sql.query`, `cassandra.query`,
//!   `db.statement`, `query`, any `*.query`/`*.statement`…) → `db.system` = R with no namespace and
//!   no `server.address` (node `db:R`), plus `db.operation.name` from the statement's first word;
//! - CLIENT with R and no query tag → `service.peer.name` = R (node `ext:R`, or the service R);
//! - CLIENT without R but with an address → `server.address`/`server.port` (node
//!   `ext:<ip>:<port>`, or a known service through the address map);
//! - PRODUCER/CONSUMER with R → `messaging.system` = R with no destination (node `queue:R`);
//! - SERVER → `server.address`/`server.port` from the local endpoint (teaches the address map),
//!   `client.address`/`client.port` from the remote one;
//! - a remote address next to a remote service name → `network.peer.address`/`.port`;
//! - tags are kept under their own names (`http.status_code`, `http.method`, `http.path`,
//!   `http.url`, … are legacy names the graph reads); the `error` tag, even empty, sets status
//!   ERROR with its value as message (and stays as evidence); annotations become events;
//!   microseconds become nanoseconds; 64-bit ids are left-padded.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::BufRead;
use std::sync::Arc;

use serde::Deserialize;
use serde::de::value::{MapAccessDeserializer, SeqAccessDeserializer};
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value as Json;

use super::{Ctx, Stop};
use crate::model::{
    Attributes, Event, Resource, Scope, Span, SpanId, SpanKind, Status, StatusCode, TraceId,
};

/// The attribute that keeps a server half's original (shared) span id.
pub const SHARED_SPAN_ID: &str = "zipkin.shared_span_id";

/// The most Zipkin spans held while traces are assembled.
pub const MAX_BUFFERED_SPANS: usize = 200_000;

pub(super) fn import(input: impl BufRead, ctx: &mut Ctx<'_, '_>) -> Result<(), Stop> {
    import_with_limit(input, ctx, MAX_BUFFERED_SPANS)
}

fn import_with_limit(input: impl BufRead, ctx: &mut Ctx<'_, '_>, limit: usize) -> Result<(), Stop> {
    let mut state = Assembler::new(limit);
    let mut de = serde_json::Deserializer::from_reader(input);
    let result = TopSeed {
        ctx: &mut *ctx,
        state: &mut state,
    }
    .deserialize(&mut de)
    .and_then(|()| de.end());
    match result {
        Ok(()) => state.flush_all(ctx).map_err(Stop::Sink),
        Err(e) => {
            let stop = ctx.stop_from_json(e);
            if let Stop::Fatal(..) = stop {
                // The spans read before the error are valid: deliver them.
                state.flush_all(ctx).map_err(Stop::Sink)?;
            }
            Err(stop)
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
struct Endpoint {
    service: Option<String>,
    ipv4: Option<String>,
    ipv6: Option<String>,
    port: Option<u16>,
}

impl Endpoint {
    fn address(&self) -> Option<&str> {
        self.ipv4.as_deref().or(self.ipv6.as_deref())
    }
}

/// A Zipkin span, validated (ids parsed) but not yet repaired.
#[derive(Debug, Clone)]
struct ZSpan {
    trace_id: TraceId,
    id: SpanId,
    parent: Option<SpanId>,
    kind: Option<SpanKind>,
    name: String,
    timestamp: Option<u64>,
    duration: Option<u64>,
    local: Option<Endpoint>,
    remote: Option<Endpoint>,
    annotations: Vec<(u64, String)>,
    tags: Vec<(String, String)>,
    shared: bool,
}

impl ZSpan {
    fn service(&self) -> Option<&str> {
        self.local.as_ref().and_then(|e| e.service.as_deref())
    }

    /// Folds a fragment with the same id into this span.
    fn merge(&mut self, other: ZSpan) {
        for (k, v) in other.tags {
            if !self.tags.iter().any(|(key, _)| *key == k) {
                self.tags.push((k, v));
            }
        }
        for a in other.annotations {
            if !self.annotations.contains(&a) {
                self.annotations.push(a);
            }
        }
        self.timestamp = self.timestamp.or(other.timestamp);
        self.duration = self.duration.or(other.duration);
        self.parent = self.parent.or(other.parent);
        self.kind = self.kind.or(other.kind);
        if self.name.is_empty() {
            self.name = other.name;
        }
        if self.local.is_none() {
            self.local = other.local;
        }
        if self.remote.is_none() {
            self.remote = other.remote;
        }
        self.shared |= other.shared;
    }
}

fn parse_span(value: Json) -> Result<ZSpan, String> {
    let Json::Object(mut o) = value else {
        return Err(format!("expected a span object, got {}", json_kind(&value)));
    };
    let text = |o: &serde_json::Map<String, Json>, key: &str| -> Option<String> {
        o.get(key)
            .and_then(Json::as_str)
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
    };
    let trace_hex = text(&o, "traceId").ok_or("span without traceId")?;
    let trace_id = TraceId::from_hex_padded(&trace_hex)
        .map_err(|e| format!("invalid traceId {trace_hex:?}: {e}"))?;
    let id_hex = text(&o, "id").ok_or("span without id")?;
    let id = SpanId::from_hex_padded(&id_hex).map_err(|e| format!("invalid id {id_hex:?}: {e}"))?;
    let parent = match text(&o, "parentId") {
        None => None,
        Some(p) if p.bytes().all(|b| b == b'0') => None,
        Some(p) => {
            Some(SpanId::from_hex_padded(&p).map_err(|e| format!("invalid parentId {p:?}: {e}"))?)
        }
    };
    let kind = text(&o, "kind").and_then(|k| match k.to_ascii_uppercase().as_str() {
        "CLIENT" => Some(SpanKind::Client),
        "SERVER" => Some(SpanKind::Server),
        "PRODUCER" => Some(SpanKind::Producer),
        "CONSUMER" => Some(SpanKind::Consumer),
        _ => None,
    });
    let annotations = match o.remove("annotations") {
        Some(Json::Array(items)) => items
            .iter()
            .filter_map(|a| {
                let ts = a.get("timestamp").and_then(super::lenient_u64)?;
                let value = a.get("value").map(tag_text).unwrap_or_default();
                Some((ts, value))
            })
            .collect(),
        _ => Vec::new(),
    };
    let tags = match o.remove("tags") {
        Some(Json::Object(map)) => map.into_iter().map(|(k, v)| (k, tag_text(&v))).collect(),
        _ => Vec::new(),
    };
    Ok(ZSpan {
        trace_id,
        id,
        parent,
        kind,
        name: o
            .get("name")
            .and_then(Json::as_str)
            .unwrap_or_default()
            .to_owned(),
        timestamp: o.get("timestamp").and_then(super::lenient_u64),
        duration: o.get("duration").and_then(super::lenient_u64),
        local: o.get("localEndpoint").and_then(endpoint),
        remote: o.get("remoteEndpoint").and_then(endpoint),
        annotations,
        tags,
        shared: o.get("shared").and_then(Json::as_bool).unwrap_or(false),
    })
}

fn json_kind(v: &Json) -> &'static str {
    match v {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "an array",
        Json::Object(_) => "an object",
    }
}

/// Tag values are strings in Zipkin v2; anything else is kept as its JSON text.
fn tag_text(v: &Json) -> String {
    match v {
        Json::String(s) => s.clone(),
        Json::Null => String::new(),
        other => other.to_string(),
    }
}

fn endpoint(v: &Json) -> Option<Endpoint> {
    let o = v.as_object()?;
    let text = |key: &str| {
        o.get(key)
            .and_then(Json::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    let e = Endpoint {
        service: text("serviceName"),
        ipv4: text("ipv4"),
        ipv6: text("ipv6"),
        port: o
            .get("port")
            .and_then(super::lenient_u64)
            .and_then(|p| u16::try_from(p).ok())
            .filter(|p| *p != 0),
    };
    (e != Endpoint::default()).then_some(e)
}

/// A repaired span: its final id and parent, and the shared id it was split from.
struct Assembled {
    span: ZSpan,
    id: SpanId,
    parent: Option<SpanId>,
    shared_from: Option<SpanId>,
}

/// Repairs one trace's spans (see the module documentation). Never fails: whatever the input,
/// every span comes out with an id unique in the trace.
fn assemble(spans: Vec<ZSpan>) -> Vec<Assembled> {
    let mut order: Vec<SpanId> = Vec::new();
    let mut groups: HashMap<SpanId, Vec<ZSpan>> = HashMap::new();
    for s in spans {
        let members = groups.entry(s.id).or_default();
        if members.is_empty() {
            order.push(s.id);
        }
        members.push(s);
    }
    let mut used: HashSet<SpanId> = order.iter().copied().collect();
    let mut out: Vec<Assembled> = Vec::new();
    // Shared id → the derived server-side halves: (their local endpoint, their new id).
    let mut split: HashMap<SpanId, Vec<(Option<Endpoint>, SpanId)>> = HashMap::new();
    // Spans whose parent was decided here and must not be re-parented below.
    let mut parent_fixed: Vec<bool> = Vec::new();

    for id in order {
        let members = groups.remove(&id).unwrap_or_default();
        let parts = merge_parts(members);
        let primary = parts
            .iter()
            .position(|p| p.kind == Some(SpanKind::Client))
            .unwrap_or(0);
        let primary_is_client = parts
            .get(primary)
            .is_some_and(|p| p.kind == Some(SpanKind::Client));
        for (i, part) in parts.into_iter().enumerate() {
            if i == primary {
                let parent = part.parent;
                out.push(Assembled {
                    span: part,
                    id,
                    parent,
                    shared_from: None,
                });
                parent_fixed.push(false);
                continue;
            }
            let new_id = derive_id(id, part.local.as_ref(), &used);
            used.insert(new_id);
            let callee_side = matches!(part.kind, None | Some(SpanKind::Server));
            let (parent, fixed) = if primary_is_client && callee_side {
                split
                    .entry(id)
                    .or_default()
                    .push((part.local.clone(), new_id));
                (Some(id), true)
            } else {
                (part.parent, false)
            };
            out.push(Assembled {
                span: part,
                id: new_id,
                parent,
                shared_from: Some(id),
            });
            parent_fixed.push(fixed);
        }
    }

    // Children of a split id that run on the server's side belong under the server half.
    if !split.is_empty() {
        for (a, fixed) in out.iter_mut().zip(parent_fixed) {
            let Some(parent) = a.parent else { continue };
            if fixed {
                continue;
            }
            let Some(halves) = split.get(&parent) else {
                continue;
            };
            let exact = halves
                .iter()
                .find(|(local, _)| local.is_some() && *local == a.span.local);
            let same_service = || {
                halves.iter().find(|(local, _)| {
                    let service = local.as_ref().and_then(|e| e.service.as_deref());
                    service.is_some() && service == a.span.service()
                })
            };
            if let Some((_, new_parent)) = exact.or_else(same_service) {
                a.parent = Some(*new_parent);
            }
        }
    }
    out
}

/// Merges the spans that share one id into its distinct halves: one per (kind, local endpoint),
/// kind-less fragments folded into the half with their endpoint.
fn merge_parts(members: Vec<ZSpan>) -> Vec<ZSpan> {
    if members.len() == 1 {
        return members;
    }
    let (kinded, kindless): (Vec<ZSpan>, Vec<ZSpan>) =
        members.into_iter().partition(|s| s.kind.is_some());
    let mut parts: Vec<ZSpan> = Vec::new();
    for s in kinded {
        match parts
            .iter_mut()
            .find(|p| p.kind == s.kind && p.local == s.local)
        {
            Some(p) => p.merge(s),
            None => parts.push(s),
        }
    }
    for s in kindless {
        let exact = parts
            .iter()
            .position(|p| s.local.is_some() && p.local == s.local);
        let same_service = || {
            parts
                .iter()
                .position(|p| s.service().is_some() && p.service() == s.service())
        };
        let anywhere = || (s.local.is_none() && !parts.is_empty()).then_some(0);
        match exact.or_else(same_service).or_else(anywhere) {
            Some(i) => parts[i].merge(s),
            None => parts.push(s),
        }
    }
    parts
}

/// A new span id for a half that shared `shared`, from the shared id and the half's local
/// endpoint (FNV-1a 64: stable across runs and Rust versions, unlike std's hasher).
fn derive_id(shared: SpanId, local: Option<&Endpoint>, used: &HashSet<SpanId>) -> SpanId {
    let mut attempt: u32 = 0;
    loop {
        let mut h = Fnv::new();
        h.write(b"tracecov.zipkin.shared\0");
        h.write(shared.as_bytes());
        if let Some(e) = local {
            for part in [&e.service, &e.ipv4, &e.ipv6] {
                h.write(part.as_deref().unwrap_or("").as_bytes());
                h.write(&[0]);
            }
            h.write(&e.port.unwrap_or(0).to_be_bytes());
        }
        if attempt > 0 {
            h.write(&attempt.to_be_bytes());
        }
        if let Ok(id) = SpanId::from_bytes(h.0.to_be_bytes())
            && !used.contains(&id)
        {
            return id;
        }
        attempt += 1;
    }
}

struct Fnv(u64);

impl Fnv {
    fn new() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}

/// Tags that carry a database statement, by exact name; names ending in `.query`,
/// `.statement` or `sql` count too.
const QUERY_TAGS: &[&str] = &[
    "sql.query",
    "sql.statement",
    "db.statement",
    "db.query.text",
    "jdbc.query",
    "cassandra.query",
    "query",
    "statement",
];

fn query_tag(tags: &[(String, String)]) -> Option<&str> {
    tags.iter()
        .find(|(k, _)| {
            QUERY_TAGS.contains(&k.as_str())
                || k.ends_with(".query")
                || k.ends_with(".statement")
                || k.ends_with("sql")
        })
        .map(|(_, v)| v.as_str())
}

/// The statement's verb (`SELECT`, `INSERT`, `CALL`…), never the statement itself: the operation
/// must not multiply interfaces or leak values.
fn statement_verb(statement: &str) -> Option<String> {
    let word = statement.split_whitespace().next()?;
    (word.len() <= 16 && word.chars().all(|c| c.is_ascii_alphabetic()))
        .then(|| word.to_ascii_uppercase())
}

/// Holds spans by trace until their trace can be repaired, and converts them.
struct Assembler {
    limit: usize,
    order: VecDeque<TraceId>,
    groups: HashMap<TraceId, Vec<ZSpan>>,
    held: usize,
    resources: HashMap<Option<String>, Arc<Resource>>,
    scope: Arc<Scope>,
}

impl Assembler {
    fn new(limit: usize) -> Self {
        Self {
            limit: limit.max(1),
            order: VecDeque::new(),
            groups: HashMap::new(),
            held: 0,
            resources: HashMap::new(),
            scope: Arc::new(Scope::default()),
        }
    }

    fn push(&mut self, span: ZSpan, ctx: &mut Ctx<'_, '_>) -> anyhow::Result<()> {
        let group = self.groups.entry(span.trace_id).or_default();
        if group.is_empty() {
            self.order.push_back(span.trace_id);
        }
        group.push(span);
        self.held += 1;
        if self.held > self.limit {
            while self.held > self.limit / 2 {
                let Some(trace) = self.order.pop_front() else {
                    break;
                };
                self.flush_trace(trace, ctx)?;
            }
        }
        Ok(())
    }

    fn flush_all(&mut self, ctx: &mut Ctx<'_, '_>) -> anyhow::Result<()> {
        while let Some(trace) = self.order.pop_front() {
            self.flush_trace(trace, ctx)?;
        }
        Ok(())
    }

    fn flush_trace(&mut self, trace: TraceId, ctx: &mut Ctx<'_, '_>) -> anyhow::Result<()> {
        let spans = self.groups.remove(&trace).unwrap_or_default();
        self.held -= spans.len();
        let converted: Vec<Span> = assemble(spans)
            .into_iter()
            .map(|a| self.convert(a))
            .collect();
        ctx.emit(converted)
    }

    fn resource(&mut self, service: Option<&str>) -> Arc<Resource> {
        let key = service.map(str::to_owned);
        self.resources
            .entry(key)
            .or_insert_with(|| {
                let mut attrs = Attributes::new();
                if let Some(s) = service {
                    attrs.push("service.name", s);
                }
                Arc::new(Resource::new(attrs))
            })
            .clone()
    }

    fn convert(&mut self, a: Assembled) -> Span {
        let z = a.span;
        let resource = self.resource(z.service());
        let kind = z.kind.unwrap_or(SpanKind::Unspecified);
        let status = match z.tags.iter().find(|(k, _)| k == "error") {
            Some((_, message)) => Status {
                code: StatusCode::Error,
                message: message.clone(),
            },
            None => Status::default(),
        };
        let mut attrs: Attributes = Attributes::new();
        let query = query_tag(&z.tags).map(str::to_owned);
        for (k, v) in z.tags {
            attrs.push(k, v);
        }
        let remote_service = z.remote.as_ref().and_then(|e| e.service.clone());
        let remote_addr = z
            .remote
            .as_ref()
            .and_then(|e| e.address().map(str::to_owned));
        let remote_port = z.remote.as_ref().and_then(|e| e.port);
        match kind {
            SpanKind::Client => match (&remote_service, &query) {
                (Some(r), Some(q)) => {
                    add(&mut attrs, "db.system", r.as_str().into());
                    if let Some(verb) = statement_verb(q) {
                        add(&mut attrs, "db.operation.name", verb.into());
                    }
                }
                (Some(r), None) => add(&mut attrs, "service.peer.name", r.as_str().into()),
                (None, _) => {
                    if let Some(addr) = &remote_addr {
                        add(&mut attrs, "server.address", addr.as_str().into());
                    }
                    if let Some(port) = remote_port {
                        add(&mut attrs, "server.port", i64::from(port).into());
                    }
                }
            },
            SpanKind::Producer | SpanKind::Consumer => {
                if let Some(r) = &remote_service {
                    add(&mut attrs, "messaging.system", r.as_str().into());
                }
            }
            SpanKind::Server => {
                if let Some(local) = &z.local {
                    if let Some(addr) = local.address() {
                        add(&mut attrs, "server.address", addr.into());
                    }
                    if let Some(port) = local.port {
                        add(&mut attrs, "server.port", i64::from(port).into());
                    }
                }
                if let Some(addr) = &remote_addr {
                    add(&mut attrs, "client.address", addr.as_str().into());
                }
                if let Some(port) = remote_port {
                    add(&mut attrs, "client.port", i64::from(port).into());
                }
            }
            _ => {}
        }
        let named_peer = remote_service.is_some()
            && matches!(
                kind,
                SpanKind::Client | SpanKind::Producer | SpanKind::Consumer
            );
        if named_peer {
            if let Some(addr) = &remote_addr {
                add(&mut attrs, "network.peer.address", addr.as_str().into());
            }
            if let Some(port) = remote_port {
                add(&mut attrs, "network.peer.port", i64::from(port).into());
            }
        }
        if let Some(original) = a.shared_from {
            add(&mut attrs, SHARED_SPAN_ID, original.to_hex().into());
        }
        let start_us = z
            .timestamp
            .or_else(|| z.annotations.iter().map(|(ts, _)| *ts).min())
            .unwrap_or(0);
        let start_ns = start_us.saturating_mul(1000);
        let end_ns = match (z.timestamp, z.duration) {
            (Some(_), Some(d)) => start_ns.saturating_add(d.saturating_mul(1000)),
            _ => 0,
        };
        let events = z
            .annotations
            .into_iter()
            .map(|(ts, value)| Event {
                time_ns: ts.saturating_mul(1000),
                name: value,
                attributes: Attributes::new(),
            })
            .collect();
        Span {
            trace_id: z.trace_id,
            span_id: a.id,
            parent_span_id: a.parent,
            trace_state: String::new(),
            flags: 0,
            name: z.name,
            kind,
            start_ns,
            end_ns,
            attributes: attrs,
            events,
            links: Vec::new(),
            status,
            resource,
            scope: self.scope.clone(),
            logs: Vec::new(),
        }
    }
}

/// Adds a derived attribute unless the span's own tags already set it.
fn add(attrs: &mut Attributes, key: &str, value: crate::model::Value) {
    if attrs.get(key).is_none() {
        attrs.push(key, value);
    }
}

/// The top level: an array of spans or of traces; a lone span object is accepted too.
struct TopSeed<'c, 'a, 's> {
    ctx: &'c mut Ctx<'a, 's>,
    state: &'c mut Assembler,
}

impl<'de> DeserializeSeed<'de> for TopSeed<'_, '_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for TopSeed<'_, '_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a Zipkin v2 array of spans or of traces")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq
            .next_element_seed(ElementSeed {
                ctx: &mut *self.ctx,
                state: &mut *self.state,
                nested: false,
            })?
            .is_some()
        {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        ElementSeed {
            ctx: self.ctx,
            state: self.state,
            nested: false,
        }
        .visit_map(map)
    }
}

/// One element of the top-level array: a span, or (`nested` false only) an array of spans.
struct ElementSeed<'c, 'a, 's> {
    ctx: &'c mut Ctx<'a, 's>,
    state: &'c mut Assembler,
    nested: bool,
}

impl ElementSeed<'_, '_, '_> {
    fn take<E: de::Error>(self, value: Json) -> Result<(), E> {
        let record = self.ctx.next_record();
        match parse_span(value) {
            Ok(span) => self.state.push(span, self.ctx).map_err(|e| {
                self.ctx.sink_error = Some(e);
                E::custom("the sink refused a batch")
            }),
            Err(reason) => {
                let position = self.ctx.record_position(record);
                self.ctx.skip(1, position, reason);
                Ok(())
            }
        }
    }

    fn not_a_span<E: de::Error>(self, what: &str) -> Result<(), E> {
        let record = self.ctx.next_record();
        let position = self.ctx.record_position(record);
        self.ctx
            .skip(1, position, format!("expected a span object, got {what}"));
        Ok(())
    }
}

impl<'de> DeserializeSeed<'de> for ElementSeed<'_, '_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ElementSeed<'_, '_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a Zipkin span object or an array of spans")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        let value = Json::deserialize(MapAccessDeserializer::new(map))?;
        self.take(value)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        if self.nested {
            let value = Json::deserialize(SeqAccessDeserializer::new(seq))?;
            return self.take(value);
        }
        // One trace of `/api/v2/traces`: repaired and delivered as soon as it ends.
        while seq
            .next_element_seed(ElementSeed {
                ctx: &mut *self.ctx,
                state: &mut *self.state,
                nested: true,
            })?
            .is_some()
        {}
        self.state.flush_all(self.ctx).map_err(|e| {
            self.ctx.sink_error = Some(e);
            de::Error::custom("the sink refused a batch")
        })
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        self.not_a_span("a boolean")
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        self.not_a_span("a number")
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        self.not_a_span("a number")
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        self.not_a_span("a number")
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        self.not_a_span("a string")
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.not_a_span("null")
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::rc::Rc;

    use super::*;
    use crate::import::{Format, Sink};

    fn span_json(trace: &str, id: &str, extra: &str) -> String {
        format!(r#"{{"traceId":"{trace}","id":"{id}"{extra}}}"#)
    }

    fn run(text: &str, limit: usize) -> (Vec<Span>, u64) {
        let mut spans = Vec::new();
        let mut collect = |batch: Vec<Span>| {
            spans.extend(batch);
            Ok(())
        };
        let sink: &mut Sink<'_> = &mut collect;
        let mut ctx = Ctx::new("t.json", Format::Zipkin, sink, None, Rc::new(Cell::new(0)));
        let result = import_with_limit(text.as_bytes(), &mut ctx, limit);
        assert!(result.is_ok());
        ctx.flush().unwrap();
        let skipped = ctx.summary.records_skipped;
        (spans, skipped)
    }

    #[test]
    fn fragments_merge_into_the_half_with_their_endpoint() {
        let a = r#","localEndpoint":{"serviceName":"a","ipv4":"10.0.0.1"}"#;
        let b = r#","localEndpoint":{"serviceName":"b","ipv4":"10.0.0.2"}"#;
        let text = format!(
            "[{},{},{},{}]",
            span_json(
                "1",
                "5",
                &format!(r#","kind":"CLIENT","name":"call","timestamp":10,"duration":7{a}"#)
            ),
            span_json(
                "1",
                "5",
                &format!(r#","kind":"SERVER","tags":{{"x":"1"}},"shared":true{b}"#)
            ),
            span_json(
                "1",
                "5",
                &format!(
                    r#","name":"late","timestamp":12,"duration":3,"tags":{{"x":"2","y":"3"}},"annotations":[{{"timestamp":13,"value":"ws"}}]{b}"#
                )
            ),
            span_json("1", "6", &format!(r#","parentId":"5","name":"child"{b}"#)),
        );
        let (spans, skipped) = run(&text, 100);
        assert_eq!(skipped, 0);
        assert_eq!(spans.len(), 3);
        let client = &spans[0];
        let server = &spans[1];
        assert_eq!(
            client.span_id,
            SpanId::from_hex("0000000000000005").unwrap()
        );
        assert_eq!((client.start_ns, client.end_ns), (10_000, 17_000));
        assert_eq!(server.kind, SpanKind::Server);
        assert_eq!(server.parent_span_id, Some(client.span_id));
        assert_eq!(
            server.attributes.str("x"),
            Some("1"),
            "the kinded half's tag wins"
        );
        assert_eq!(server.attributes.str("y"), Some("3"));
        assert_eq!((server.start_ns, server.end_ns), (12_000, 15_000));
        assert_eq!(server.events.len(), 1);
        assert_eq!(
            server.attributes.str(SHARED_SPAN_ID),
            Some("0000000000000005")
        );
        assert_eq!(spans[2].parent_span_id, Some(server.span_id));
    }

    #[test]
    fn derived_ids_depend_on_the_endpoint_and_avoid_collisions() {
        let shared = SpanId::from_hex("00000000000000ab").unwrap();
        let e = |ip: &str| Endpoint {
            service: Some("s".into()),
            ipv4: Some(ip.into()),
            ..Endpoint::default()
        };
        let none = HashSet::new();
        let one = derive_id(shared, Some(&e("10.0.0.1")), &none);
        assert_eq!(one, derive_id(shared, Some(&e("10.0.0.1")), &none));
        assert_ne!(one, derive_id(shared, Some(&e("10.0.0.2")), &none));
        assert_ne!(one, shared);
        let taken = HashSet::from([one]);
        assert_ne!(derive_id(shared, Some(&e("10.0.0.1")), &taken), one);
    }

    #[test]
    fn traces_arrays_and_buffer_overflow_deliver_every_span() {
        let trace = |t: &str| {
            format!(
                "[{},{}]",
                span_json(t, "1", r#","kind":"CLIENT""#),
                span_json(
                    t,
                    "1",
                    r#","kind":"SERVER","localEndpoint":{"serviceName":"b"}"#
                )
            )
        };
        let (spans, _) = run(&format!("[{},{}]", trace("a"), trace("b")), 100);
        assert_eq!(spans.len(), 4);
        assert_eq!(
            spans
                .iter()
                .filter(|s| s.attributes.str(SHARED_SPAN_ID).is_some())
                .count(),
            2
        );

        // A flat array of interleaved traces with a buffer of 2 spans: everything is delivered,
        // in pieces.
        let flat: Vec<String> = (0..10)
            .map(|i| span_json(&format!("{}", i % 3 + 1), &format!("{}", i + 1), ""))
            .collect();
        let (spans, skipped) = run(&format!("[{}]", flat.join(",")), 2);
        assert_eq!((spans.len(), skipped), (10, 0));
    }
}
