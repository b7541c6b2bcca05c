#!/usr/bin/env bash
# Regenerates the committed seed corpus in fuzz/corpus/<target>/ from tests/fixtures, the docs'
# manifest example, the demo manifest, fuzz/seeds/ (inputs written for the fuzzers) and a few
# OTLP protobuf encodings made here. Each seed starts with the byte that selects its decoder in
# the target (see the comment at the top of each fuzz_targets/*.rs). Needs bash, python3, gzip.
set -euo pipefail
cd "$(dirname "$0")"
root=..
fx=$root/tests/fixtures
rm -rf corpus
mkdir -p corpus/otlp corpus/importers corpus/contracts corpus/analysis

# put TARGET NAME SELECTOR-BYTE FILE: the seed is the selector byte, then the file.
put() { { printf "\\x$(printf %02x "$3")"; cat "$4"; } > "corpus/$1/$2"; }

# otlp: 0 protobuf, 1 OTLP/JSON.
put otlp json-spec-example 1 "$fx/otlp-json/spec-example.json"
put otlp json-names 1 seeds/otlp-names.json
python3 - "$fx/otlp-json/spec-example.json" seeds/otlp-names.json <<'PY'
# OTLP/JSON -> OTLP protobuf (ExportTraceServiceRequest), written by hand so that no protobuf
# library is needed: the field numbers are those of opentelemetry-proto's trace.proto.
import json, struct, sys

def varint(n):
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)

def key(field, wire):
    return varint(field << 3 | wire)

def ld(field, payload):
    return key(field, 2) + varint(len(payload)) + payload

def vi(field, n):
    return key(field, 0) + varint(n)

def f64(field, n):
    return key(field, 1) + struct.pack("<Q", n & ((1 << 64) - 1))

def hexid(s):
    try:
        return bytes.fromhex(s)
    except ValueError:
        return s.encode()

def num(v):
    try:
        return int(v)
    except (TypeError, ValueError):
        return 0

def anyvalue(v):
    if "stringValue" in v:
        return ld(1, v["stringValue"].encode())
    if "boolValue" in v:
        return vi(2, int(bool(v["boolValue"])))
    if "intValue" in v:
        return vi(3, num(v["intValue"]))
    if "doubleValue" in v:
        return key(4, 1) + struct.pack("<d", float(v["doubleValue"]))
    if "arrayValue" in v:
        return ld(5, b"".join(ld(1, anyvalue(x)) for x in v["arrayValue"].get("values", [])))
    if "kvlistValue" in v:
        return ld(6, b"".join(ld(1, kv(x)) for x in v["kvlistValue"].get("values", [])))
    if "bytesValue" in v:
        import base64
        return ld(7, base64.b64decode(v["bytesValue"]))
    return b""

def kv(x):
    return ld(1, x["key"].encode()) + ld(2, anyvalue(x.get("value", {})))

def attrs(field, xs):
    return b"".join(ld(field, kv(x)) for x in xs or [])

KINDS = {"SPAN_KIND_UNSPECIFIED": 0, "SPAN_KIND_INTERNAL": 1, "SPAN_KIND_SERVER": 2,
         "SPAN_KIND_CLIENT": 3, "SPAN_KIND_PRODUCER": 4, "SPAN_KIND_CONSUMER": 5}
CODES = {"STATUS_CODE_UNSET": 0, "STATUS_CODE_OK": 1, "STATUS_CODE_ERROR": 2}

def span(s):
    g = lambda *names: next((s[n] for n in names if n in s), None)
    out = ld(1, hexid(g("traceId", "trace_id") or "")) + ld(2, hexid(g("spanId", "span_id") or ""))
    if g("traceState"):
        out += ld(3, g("traceState").encode())
    if g("parentSpanId", "parent_span_id"):
        out += ld(4, hexid(g("parentSpanId", "parent_span_id")))
    out += ld(5, (s.get("name") or "").encode())
    kind = s.get("kind", 0)
    out += vi(6, KINDS.get(kind, kind) if isinstance(kind, str) else kind)
    out += f64(7, num(g("startTimeUnixNano")))
    out += f64(8, num(g("endTimeUnixNano")))
    out += attrs(9, s.get("attributes"))
    for e in s.get("events", []):
        out += ld(11, f64(1, num(e.get("timeUnixNano"))) + ld(2, e.get("name", "").encode())
                  + attrs(3, e.get("attributes")))
    for l in s.get("links", []):
        out += ld(13, ld(1, hexid(l["traceId"])) + ld(2, hexid(l["spanId"])) + attrs(4, l.get("attributes")))
    st = s.get("status")
    if st:
        code = st.get("code", 0)
        out += ld(15, ld(2, st.get("message", "").encode())
                  + vi(3, CODES.get(code, code) if isinstance(code, str) else code))
    if "flags" in s:
        out += key(16, 5) + struct.pack("<I", s["flags"])
    return out

def request(doc):
    out = b""
    for rs in doc.get("resourceSpans", []):
        body = ld(1, attrs(1, rs.get("resource", {}).get("attributes")))
        for ss in rs.get("scopeSpans", []):
            sc = ss.get("scope", {})
            scope = ld(1, sc.get("name", "").encode()) + ld(2, sc.get("version", "").encode()) \
                + attrs(3, sc.get("attributes"))
            body += ld(2, ld(1, scope) + b"".join(ld(2, span(s)) for s in ss.get("spans", [])))
        out += ld(1, body)
    return out

for i, path in enumerate(sys.argv[1:]):
    with open(path) as f:
        doc = json.load(f)
    with open(f"corpus/otlp/proto-{i}", "wb") as out:
        out.write(b"\x00" + request(doc))
with open("corpus/otlp/proto-empty", "wb") as out:
    out.write(b"\x00")

# analysis: its input is a recipe, not a format; a few deterministic pseudo-random ones.
import hashlib
for i, n in enumerate([16, 64, 200, 600, 1500]):
    data = b""
    while len(data) < n:
        data += hashlib.sha256(f"tracecov-fuzz-{i}-{len(data)}".encode()).digest()
    with open(f"corpus/analysis/random-{i}", "wb") as out:
        out.write(data[:n])
PY

# importers: 0 detect, 1 OTLP/JSON, 2 Jaeger, 3 Zipkin.
for f in "$fx"/zipkin-lens/*.json; do
  name=$(basename "$f" .json)
  [ "$name" = smartthings-mobile-web-install ] && continue   # 600 KB: too big for a seed
  put importers "zipkin-$name" 0 "$f"
done
put importers otlp-spec-example 0 "$fx/otlp-json/spec-example.json"
put importers otlp-names 1 seeds/otlp-names.json
{ tr -d '\n' < "$fx/otlp-json/spec-example.json"; echo; tr -d '\n' < seeds/otlp-names.json; echo; } > /tmp/tracecov-seed-lines
put importers otlp-lines 0 /tmp/tracecov-seed-lines
put importers jaeger-api 2 seeds/jaeger-api.json
put importers jaeger-bare 0 seeds/jaeger-bare.json
gzip -9nc "$fx/zipkin-lens/skew.json" > /tmp/tracecov-seed-gz
put importers zipkin-skew-gzip 3 /tmp/tracecov-seed-gz
rm -f /tmp/tracecov-seed-lines /tmp/tracecov-seed-gz

# contracts: 0 manifest, 1 Pact, 2 OpenAPI as .json, 3 OpenAPI as .yaml.
put contracts manifest-demo 0 "$root/src/demo/tracecov.yaml"
awk '/```yaml/{f=1;next} /```/{if(f)exit} f' "$root/docs/manifest.md" > /tmp/tracecov-seed-manifest
put contracts manifest-docs-example 0 /tmp/tracecov-seed-manifest
rm -f /tmp/tracecov-seed-manifest
for f in "$fx"/contracts/*.pact-*.json; do put contracts "$(basename "$f")" 1 "$f"; done
put contracts orders.openapi-3.1.json 2 "$fx/contracts/orders.openapi-3.1.json"
put contracts users.openapi-3.0.yaml 3 "$fx/contracts/users.openapi-3.0.yaml"

du -sh corpus
