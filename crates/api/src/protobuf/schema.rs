//! The message table of `schema.txt`, loaded once.

use std::collections::HashMap;
use std::sync::LazyLock;

/// A field's type on the wire and in JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Type {
    /// `string`.
    String,
    /// `bool`.
    Bool,
    /// `int32` (varint, sign-extended when negative).
    Int32,
    /// `int64`.
    Int64,
    /// `double` (fixed 64-bit).
    Double,
    /// `bytes`: base64 in JSON.
    Bytes,
    /// A message, by definition name.
    Message(&'static str),
    /// `map<string, V>`.
    Map(Box<Type>),
}

/// One field of a message.
#[derive(Debug, Clone)]
pub struct Field {
    /// The JSON name.
    pub json: &'static str,
    /// The protobuf field number.
    pub number: u32,
    /// Its type.
    pub ty: Type,
    /// `repeated`.
    pub repeated: bool,
    /// Its zero value is a value (a required field, or an optional one
    /// that Go declares as a pointer), not "unset".
    pub keep_zero: bool,
    /// A Go embedded struct: its fields stand in the parent's JSON.
    pub inline: bool,
}

/// One message.
#[derive(Debug, Default)]
pub struct Message {
    /// Fields in number order.
    pub fields: Vec<Field>,
    /// Field index by JSON name.
    pub by_json: HashMap<&'static str, usize>,
}

impl Message {
    /// The field with this number.
    pub fn by_number(&self, n: u32) -> Option<&Field> {
        self.fields.binary_search_by_key(&n, |f| f.number).ok().map(|i| &self.fields[i])
    }
}

static TEXT: &str = include_str!("schema.txt");

fn parse_type(s: &'static str) -> Type {
    match s {
        "string" => Type::String,
        "bool" => Type::Bool,
        "int32" => Type::Int32,
        "int64" => Type::Int64,
        "double" => Type::Double,
        "bytes" => Type::Bytes,
        _ => match s.strip_prefix("map:string:") {
            Some(v) => Type::Map(Box::new(parse_type(v))),
            None => Type::Message(s),
        },
    }
}

/// Every message, by definition name (`io.k8s.api.core.v1.Pod`).
pub static MESSAGES: LazyLock<HashMap<&'static str, Message>> = LazyLock::new(|| {
    let mut out = HashMap::new();
    for line in TEXT.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        let mut parts = line.split(' ');
        let Some(def) = parts.next() else { continue };
        let mut fields: Vec<Field> = parts
            .filter_map(|p| {
                let (json, rest) = p.split_once('=')?;
                let (number, ty) = rest.split_once(':')?;
                let inline = ty.ends_with('^');
                let ty = ty.trim_end_matches('^');
                let keep_zero = ty.ends_with('!');
                let ty = ty.trim_end_matches('!');
                let repeated = ty.ends_with('*');
                let ty = ty.trim_end_matches('*');
                Some(Field { json, number: number.parse().ok()?, ty: parse_type(ty), repeated, keep_zero, inline })
            })
            .collect();
        fields.sort_by_key(|f| f.number);
        let by_json = fields.iter().enumerate().map(|(i, f)| (f.json, i)).collect();
        out.insert(def, Message { fields, by_json });
    }
    out
});

/// The definition of `kind` in `group`/`version`: the API's own package
/// first, then `meta.k8s.io/v1`'s kinds (`DeleteOptions`, `Status`, …),
/// which every group version carries.
pub fn definition_of(group: &str, version: &str, kind: &str) -> Option<&'static str> {
    static BY_GVK: LazyLock<HashMap<(String, String, String), &'static str>> = LazyLock::new(|| {
        let mut out = HashMap::new();
        for def in MESSAGES.keys() {
            let mut it = def.rsplit('.');
            if let (Some(kind), Some(version), Some(short)) = (it.next(), it.next(), it.next()) {
                out.entry((short.to_string(), version.to_string(), kind.to_string())).or_insert(*def);
            }
        }
        out
    });
    let short = if group.is_empty() { "core" } else { group.split('.').next().unwrap_or(group) };
    BY_GVK
        .get(&(short.to_string(), version.to_string(), kind.to_string()))
        .or_else(|| BY_GVK.get(&("meta".to_string(), "v1".to_string(), kind.to_string())))
        .copied()
}
