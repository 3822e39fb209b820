//! Kubernetes' protobuf encoding (`application/vnd.kubernetes.protobuf`),
//! to and from the JSON form skiff stores, for every kind by one path.
//!
//! client-go, and so Kubernetes' own e2e suite and most controllers, send
//! and ask for protobuf. `k8s-pb` has the prost messages but no mapping to
//! Kubernetes' JSON, so one table ([`schema`], generated from `k8s-pb` and
//! the `k8s-openapi` schemas by `tests/protobuf_schema.rs`) drives a small
//! wire-format reader and writer. Go's rules are applied once, here:
//! - its marshaller writes every non-pointer field, zero or not, where its
//!   JSON leaves an `omitempty` zero out: zeros are dropped unless the
//!   field is required or a pointer ([`schema::Field::keep_zero`]);
//! - a zero `metav1.Time` is `null`: dropped;
//! - `Quantity`, `IntOrString`, `Time`, `MicroTime`, `Duration`,
//!   `RawExtension` and `FieldsV1` have JSON forms of their own.

pub mod schema;
pub(crate) mod wire;

use serde_json::{json, Map, Value};

use crate::base64;
use schema::{Field, Type, MESSAGES};
use wire::{Reader, Writer};

/// The magic prefix of Kubernetes' protobuf envelope.
pub const MAGIC: &[u8] = b"k8s\0";

/// The protobuf media type.
pub const CONTENT_TYPE: &str = "application/vnd.kubernetes.protobuf";

/// How deep messages may nest in a body before it is refused (Kubernetes'
/// deepest kinds nest a few dozen levels).
const MAX_DEPTH: usize = 100;

const TIME: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Time";
const MICRO_TIME: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.MicroTime";
const DURATION: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Duration";
const FIELDS_V1: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.FieldsV1";
const QUANTITY: &str = "io.k8s.apimachinery.pkg.api.resource.Quantity";
const INT_OR_STRING: &str = "io.k8s.apimachinery.pkg.util.intstr.IntOrString";
const RAW_EXTENSION: &str = "io.k8s.apimachinery.pkg.runtime.RawExtension";
// A CRD schema's JSON values and its unions, whose JSON is one of their
// fields' forms, not an object of fields.
const EXT_JSON: &str = "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.JSON";
const SCHEMA_PROPS: &str = "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.JSONSchemaProps";
const PROPS_OR_ARRAY: &str = "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.JSONSchemaPropsOrArray";
const PROPS_OR_BOOL: &str = "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.JSONSchemaPropsOrBool";
const PROPS_OR_STRINGS: &str = "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.JSONSchemaPropsOrStringArray";

/// The definition of an object's kind, from its `apiVersion` and `kind`.
pub fn definition(api_version: &str, kind: &str) -> Option<&'static str> {
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    schema::definition_of(group, version, kind)
}

/// Decodes a protobuf request body (envelope included) into the object's
/// JSON form, with `apiVersion` and `kind` set.
pub fn decode(body: &[u8]) -> Result<Value, String> {
    let rest = body.strip_prefix(MAGIC).ok_or("protobuf body lacks the k8s\\0 prefix")?;
    let mut r = Reader::new(rest);
    let (mut api_version, mut kind, mut raw) = (String::new(), String::new(), &[][..]);
    while let Some((num, wire)) = r.tag()? {
        match (num, wire) {
            (1, 2) => {
                let mut tm = Reader::new(r.bytes()?);
                while let Some((n, w)) = tm.tag()? {
                    match (n, w) {
                        (1, 2) => api_version = wire::string(tm.bytes()?)?,
                        (2, 2) => kind = wire::string(tm.bytes()?)?,
                        (_, w) => tm.skip(w)?,
                    }
                }
            }
            (2, 2) => raw = r.bytes()?,
            (_, w) => r.skip(w)?,
        }
    }
    let def = definition(&api_version, &kind).ok_or_else(|| format!("no kind \"{kind}\" is registered for version \"{api_version}\""))?;
    let mut obj = match message(raw, def, 0)? {
        Some(Value::Object(m)) => Value::Object(m),
        _ => json!({}),
    };
    obj["apiVersion"] = json!(api_version);
    obj["kind"] = json!(kind);
    Ok(obj)
}

fn is_zero(v: &Value) -> bool {
    match v {
        Value::String(s) => s.is_empty(),
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::Null => true,
        _ => false,
    }
}

/// A message's JSON form; `None` where Go's JSON has `null` (a zero Time).
fn message(b: &[u8], def: &str, depth: usize) -> Result<Option<Value>, String> {
    if depth > MAX_DEPTH {
        return Err(format!("protobuf body nests deeper than {MAX_DEPTH} messages"));
    }
    if let Some(v) = special(b, def, depth)? {
        return Ok(v);
    }
    let Some(schema) = MESSAGES.get(def) else {
        return Err(format!("protobuf message {def} is not known to this server"));
    };
    let mut out = Map::new();
    let mut r = Reader::new(b);
    while let Some((num, wire)) = r.tag()? {
        // An unknown field is skipped, as Go's unmarshaller does.
        let Some(f) = schema.by_number(num) else {
            r.skip(wire)?;
            continue;
        };
        if let Type::Map(value) = &f.ty {
            let (k, v) = map_entry(r.bytes()?, value, depth)?;
            if let Value::Object(m) = out.entry(f.json).or_insert_with(|| json!({})) {
                m.insert(k, v);
            }
            continue;
        }
        if f.repeated {
            let items = out.entry(f.json).or_insert_with(|| json!([]));
            let Value::Array(items) = items else { continue };
            if wire == 2 && matches!(f.ty, Type::Int32 | Type::Int64 | Type::Bool | Type::Double) {
                // Packed numbers.
                let mut p = Reader::new(r.bytes()?);
                while !p.is_empty() {
                    items.push(scalar_value(&mut p, if matches!(f.ty, Type::Double) { 1 } else { 0 }, f)?);
                }
            } else {
                items.push(value(&mut r, wire, f, depth)?.unwrap_or(Value::Null));
            }
            continue;
        }
        match value(&mut r, wire, f, depth)? {
            Some(Value::Object(inner)) if f.inline => out.extend(inner),
            Some(v) if f.keep_zero || matches!(f.ty, Type::Message(_)) || !is_zero(&v) => {
                out.insert(f.json.to_string(), v);
            }
            _ => {
                out.remove(f.json);
            }
        }
    }
    Ok(Some(Value::Object(out)))
}

fn value(r: &mut Reader<'_>, wire: u8, f: &Field, depth: usize) -> Result<Option<Value>, String> {
    match &f.ty {
        Type::Message(def) => {
            if wire != 2 {
                return Err(format!("field {:?} has wire type {wire}, not a message", f.json));
            }
            message(r.bytes()?, def, depth + 1)
        }
        _ => scalar_value(r, wire, f).map(Some),
    }
}

fn scalar_value(r: &mut Reader<'_>, wire: u8, f: &Field) -> Result<Value, String> {
    Ok(match (&f.ty, wire) {
        (Type::String, 2) => json!(wire::string(r.bytes()?)?),
        (Type::Bytes, 2) => json!(base64(r.bytes()?)),
        (Type::Int32, 0) => json!(r.varint()? as i64 as i32),
        (Type::Int64, 0) => json!(r.varint()? as i64),
        (Type::Bool, 0) => json!(r.varint()? != 0),
        (Type::Double, 1) => json!(f64::from_bits(r.fixed64()?)),
        (_, w) => return Err(format!("field {:?} has an unexpected wire type {w}", f.json)),
    })
}

fn map_entry(b: &[u8], value: &Type, depth: usize) -> Result<(String, Value), String> {
    let mut r = Reader::new(b);
    let (mut k, mut v) = (String::new(), None);
    let vf = Field { json: "value", number: 2, ty: value.clone(), repeated: false, keep_zero: true, inline: false };
    while let Some((n, w)) = r.tag()? {
        match n {
            1 if w == 2 => k = wire::string(r.bytes()?)?,
            2 => v = self::value(&mut r, w, &vf, depth + 1)?,
            _ => r.skip(w)?,
        }
    }
    let v = v.unwrap_or_else(|| match value {
        Type::Message(d) if *d == QUANTITY => json!("0"),
        Type::Bytes | Type::String => json!(""),
        _ => Value::Null,
    });
    Ok((k, v))
}

/// A field of a small message: number, varint value, bytes.
type RawField<'a> = (u32, u64, &'a [u8]);

/// Reads the fields of a small message by number (for the special types).
fn fields(b: &[u8]) -> Result<Vec<RawField<'_>>, String> {
    let mut r = Reader::new(b);
    let mut out = Vec::new();
    while let Some((n, w)) = r.tag()? {
        match w {
            0 => out.push((n, r.varint()?, &[][..])),
            2 => out.push((n, 0, r.bytes()?)),
            w => r.skip(w)?,
        }
    }
    Ok(out)
}

/// The types whose JSON is not an object of their fields; `None` for the
/// others.
fn special(b: &[u8], def: &str, depth: usize) -> Result<Option<Option<Value>>, String> {
    let get_int = |fs: &[RawField<'_>], n: u32| fs.iter().rev().find(|f| f.0 == n).map(|f| f.1).unwrap_or(0);
    let get_bytes = |fs: &[RawField<'_>], n: u32| fs.iter().rev().find(|f| f.0 == n).map(|f| f.2.to_vec()).unwrap_or_default();
    Ok(Some(match def {
        TIME | MICRO_TIME => {
            let fs = fields(b)?;
            let (secs, nanos) = (get_int(&fs, 1) as i64, get_int(&fs, 2) as i64 as i32);
            if secs == 0 && nanos == 0 {
                None
            } else {
                let t = chrono::DateTime::from_timestamp(secs, nanos.max(0) as u32).ok_or("time out of range")?;
                let format = if def == TIME { chrono::SecondsFormat::Secs } else { chrono::SecondsFormat::Micros };
                Some(json!(t.to_rfc3339_opts(format, true)))
            }
        }
        DURATION => Some(json!(go_duration(get_int(&fields(b)?, 1) as i64))),
        QUANTITY => Some(json!(wire::string(&get_bytes(&fields(b)?, 1))?)),
        INT_OR_STRING => {
            let fs = fields(b)?;
            if get_int(&fs, 1) == 1 {
                Some(json!(wire::string(&get_bytes(&fs, 3))?))
            } else {
                Some(json!(get_int(&fs, 2) as i64 as i32))
            }
        }
        EXT_JSON => {
            let raw = get_bytes(&fields(b)?, 1);
            if raw.is_empty() {
                None
            } else {
                Some(serde_json::from_slice(&raw).map_err(|e| format!("JSON value: {e}"))?)
            }
        }
        PROPS_OR_ARRAY | PROPS_OR_BOOL | PROPS_OR_STRINGS => {
            let fs = fields(b)?;
            let schema_field = if def == PROPS_OR_BOOL { 2 } else { 1 };
            let schema = fs.iter().rev().find(|f| f.0 == schema_field).map(|f| message(f.2, SCHEMA_PROPS, depth + 1)).transpose()?.flatten();
            match def {
                PROPS_OR_ARRAY if fs.iter().any(|f| f.0 == 2) => Some(Value::Array(
                    fs.iter().filter(|f| f.0 == 2).map(|f| message(f.2, SCHEMA_PROPS, depth + 1).map(Option::unwrap_or_default)).collect::<Result<_, _>>()?,
                )),
                PROPS_OR_STRINGS if fs.iter().any(|f| f.0 == 2) => {
                    Some(Value::Array(fs.iter().filter(|f| f.0 == 2).map(|f| wire::string(f.2).map(Value::String)).collect::<Result<_, _>>()?))
                }
                PROPS_OR_BOOL if schema.is_none() => Some(json!(get_int(&fs, 1) != 0)),
                _ => schema,
            }
        }
        RAW_EXTENSION | FIELDS_V1 => {
            let raw = get_bytes(&fields(b)?, 1);
            if raw.is_empty() {
                None
            } else if raw.starts_with(MAGIC) {
                Some(decode(&raw)?)
            } else {
                Some(serde_json::from_slice(&raw).map_err(|e| format!("embedded object: {e}"))?)
            }
        }
        _ => return Ok(None),
    }))
}

/// Go's `time.Duration.String()` of nanoseconds, as metav1.Duration's JSON.
fn go_duration(ns: i64) -> String {
    if ns == 0 {
        return "0s".into();
    }
    let sign = if ns < 0 { "-" } else { "" };
    let ns = ns.unsigned_abs();
    if ns < 1_000_000_000 {
        let (unit, div) = if ns < 1_000 {
            ("ns", 1)
        } else if ns < 1_000_000 {
            ("µs", 1_000)
        } else {
            ("ms", 1_000_000)
        };
        return format!("{sign}{}{unit}", trim_fraction(ns, div));
    }
    let (h, rest) = (ns / 3_600_000_000_000, ns % 3_600_000_000_000);
    let (m, s) = (rest / 60_000_000_000, rest % 60_000_000_000);
    let secs = format!("{}s", trim_fraction(s, 1_000_000_000));
    match (h, m) {
        (0, 0) => format!("{sign}{secs}"),
        (0, m) => format!("{sign}{m}m{secs}"),
        (h, m) => format!("{sign}{h}h{m}m{secs}"),
    }
}

fn trim_fraction(v: u64, div: u64) -> String {
    let (whole, frac) = (v / div, v % div);
    if frac == 0 {
        return whole.to_string();
    }
    let width = div.to_string().len() - 1;
    let f = format!("{frac:0width$}");
    format!("{whole}.{}", f.trim_end_matches('0'))
}

fn parse_go_duration(s: &str) -> Option<i64> {
    let (neg, mut rest) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    if rest == "0" {
        return Some(0);
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let num_end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        let n: f64 = rest[..num_end].parse().ok()?;
        rest = &rest[num_end..];
        let unit_end = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let mult = match &rest[..unit_end] {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        total += n * mult;
        rest = &rest[unit_end..];
    }
    Some(if neg { -(total as i64) } else { total as i64 })
}

/// Encodes an object (its JSON form, with `apiVersion` and `kind`) as
/// Kubernetes' protobuf envelope; `None` when its kind has no protobuf
/// message (a Table, say), for the caller to answer JSON instead.
pub fn encode(obj: &Value) -> Option<Vec<u8>> {
    let api_version = obj.get("apiVersion").and_then(Value::as_str)?;
    let kind = obj.get("kind").and_then(Value::as_str)?;
    Some(envelope(api_version, kind, &encode_body(obj)?))
}

/// An object's message alone (no envelope), as list items carry it.
pub fn encode_body(obj: &Value) -> Option<Vec<u8>> {
    let api_version = obj.get("apiVersion").and_then(Value::as_str)?;
    let kind = obj.get("kind").and_then(Value::as_str)?;
    let def = definition(api_version, kind)?;
    let mut raw = Writer::default();
    encode_message(&mut raw, obj, def);
    Some(raw.into_inner())
}

/// Kubernetes' envelope (`runtime.Unknown` behind `k8s\0`) around a message.
pub fn envelope(api_version: &str, kind: &str, raw: &[u8]) -> Vec<u8> {
    let mut type_meta = Writer::default();
    type_meta.bytes(1, api_version.as_bytes());
    type_meta.bytes(2, kind.as_bytes());
    let type_meta = type_meta.into_inner();
    let mut out = Writer::from(Vec::with_capacity(raw.len() + type_meta.len() + 16));
    out.raw(MAGIC);
    out.bytes(1, &type_meta);
    out.bytes(2, raw);
    out.bytes(3, b"");
    out.bytes(4, b"");
    out.into_inner()
}

/// A list (`PodList`, …) of messages already encoded, enveloped: the
/// list's `metadata` (resourceVersion, continue) then its items, with no
/// JSON in between.
pub fn encode_list<'a>(api_version: &str, list_kind: &str, resource_version: &str, next: Option<&str>, items: impl Iterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut meta = Writer::default();
    meta.bytes(2, resource_version.as_bytes());
    if let Some(n) = next {
        meta.bytes(3, n.as_bytes());
    }
    let mut list = Writer::default();
    list.bytes(1, &meta.into_inner());
    for item in items {
        list.bytes(2, item);
    }
    envelope(api_version, list_kind, &list.into_inner())
}

/// One watch event as protobuf watch streams frame it: a 4-byte big-endian
/// length, then a `metav1.WatchEvent` (no envelope) whose object is the
/// enveloped object.
pub fn encode_watch_event(event_type: &str, obj: &Value) -> Option<Vec<u8>> {
    watch_frame(event_type, &encode(obj)?)
}

/// [`encode_watch_event`] of an object already enveloped.
pub fn watch_frame(event_type: &str, envelope: &[u8]) -> Option<Vec<u8>> {
    let mut raw_ext = Writer::default();
    raw_ext.bytes(1, envelope);
    let mut ev = Writer::default();
    ev.bytes(1, event_type.as_bytes());
    ev.bytes(2, &raw_ext.into_inner());
    let ev = ev.into_inner();
    let mut out = Vec::with_capacity(ev.len() + 4);
    out.extend_from_slice(&u32::try_from(ev.len()).ok()?.to_be_bytes());
    out.extend_from_slice(&ev);
    Some(out)
}

/// Whether an `Accept` header asks for protobuf first (as client-go's
/// `application/vnd.kubernetes.protobuf, */*`); never for a Table or
/// metadata-only view (`;as=`), which skiff answers in JSON.
pub fn accepts(accept: &str) -> bool {
    let first = accept.split(',').next().unwrap_or_default();
    let mut parts = first.split(';').map(str::trim);
    parts.next() == Some(CONTENT_TYPE) && !parts.any(|p| p.starts_with("as="))
}

fn encode_message(w: &mut Writer, v: &Value, def: &str) {
    let Some(schema) = MESSAGES.get(def) else { return };
    let Some(obj) = v.as_object() else { return };
    // Go's embedded structs take their fields from the same object.
    for f in schema.fields.iter().filter(|f| f.inline) {
        encode_value(w, f.number, &f.ty, v);
    }
    // The object's own keys, each looked up once (a message declares
    // many more fields than an object sets).
    for (key, fv) in obj {
        let Some(f) = schema.by_json.get(key.as_str()).map(|i| &schema.fields[*i]).filter(|f| !f.inline) else { continue };
        match (&f.ty, fv) {
            (_, Value::Null) => {}
            (Type::Map(vt), Value::Object(m)) => {
                // Go writes map entries in key order.
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort();
                for k in keys {
                    let mut entry = Writer::default();
                    entry.bytes(1, k.as_bytes());
                    encode_value(&mut entry, 2, vt, &m[k]);
                    w.bytes(f.number, &entry.into_inner());
                }
            }
            (ty, Value::Array(items)) if f.repeated => {
                for item in items {
                    encode_value(w, f.number, ty, item);
                }
            }
            (ty, v) => encode_value(w, f.number, ty, v),
        }
    }
}

fn encode_value(w: &mut Writer, n: u32, ty: &Type, v: &Value) {
    match ty {
        Type::String => w.bytes(n, v.as_str().unwrap_or_default().as_bytes()),
        Type::Bytes => w.bytes(n, &crate::unbase64(v.as_str().unwrap_or_default()).unwrap_or_default()),
        Type::Bool => w.varint_field(n, u64::from(v.as_bool().unwrap_or(false))),
        Type::Int32 | Type::Int64 => w.varint_field(n, v.as_i64().unwrap_or(0) as u64),
        Type::Double => w.fixed64_field(n, v.as_f64().unwrap_or(0.0).to_bits()),
        Type::Map(_) => {}
        Type::Message(def) => {
            let mut inner = Writer::default();
            match *def {
                TIME | MICRO_TIME => {
                    let Some(t) = v.as_str().and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok()) else { return };
                    inner.varint_field(1, t.timestamp() as u64);
                    if t.timestamp_subsec_nanos() != 0 {
                        inner.varint_field(2, u64::from(t.timestamp_subsec_nanos()));
                    }
                }
                DURATION => inner.varint_field(1, v.as_str().and_then(parse_go_duration).unwrap_or(0) as u64),
                QUANTITY => inner.bytes(1, v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string()).as_bytes()),
                INT_OR_STRING => match v {
                    Value::String(s) => {
                        inner.varint_field(1, 1);
                        inner.bytes(3, s.as_bytes());
                    }
                    other => {
                        inner.varint_field(1, 0);
                        inner.varint_field(2, other.as_i64().unwrap_or(0) as u64);
                    }
                },
                RAW_EXTENSION | FIELDS_V1 | EXT_JSON => inner.bytes(1, v.to_string().as_bytes()),
                PROPS_OR_ARRAY | PROPS_OR_STRINGS => match v {
                    Value::Array(items) if *def == PROPS_OR_STRINGS => items.iter().for_each(|i| inner.bytes(2, i.as_str().unwrap_or_default().as_bytes())),
                    Value::Array(items) => items.iter().for_each(|i| encode_value(&mut inner, 2, &Type::Message(SCHEMA_PROPS), i)),
                    other => encode_value(&mut inner, 1, &Type::Message(SCHEMA_PROPS), other),
                },
                PROPS_OR_BOOL => match v {
                    Value::Bool(b) => inner.varint_field(1, u64::from(*b)),
                    other => {
                        inner.varint_field(1, 1);
                        encode_value(&mut inner, 2, &Type::Message(SCHEMA_PROPS), other);
                    }
                },
                _ => encode_message(&mut inner, v, def),
            }
            w.bytes(n, &inner.into_inner());
        }
    }
}

#[cfg(test)]
mod tests;
