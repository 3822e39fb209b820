//! Label selectors (string and `LabelSelector` forms) and field selectors.

use serde_json::{Map, Value};

/// One requirement of a label selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requirement {
    /// `key=value` / `key==value`, or `key in (a,b)`.
    In(String, Vec<String>),
    /// `key!=value` or `key notin (a,b)`: also true when the key is absent.
    NotIn(String, Vec<String>),
    /// `key`.
    Exists(String),
    /// `!key`.
    DoesNotExist(String),
}

/// A conjunction of requirements; empty matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector(pub Vec<Requirement>);

impl LabelSelector {
    /// Parses the string form used in `?labelSelector=`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut reqs = Vec::new();
        let mut rest = s.trim();
        while !rest.is_empty() {
            // Split off one requirement: up to a comma outside parentheses.
            let mut depth = 0;
            let mut end = rest.len();
            for (i, c) in rest.char_indices() {
                match c {
                    '(' => depth += 1,
                    ')' => depth -= 1,
                    ',' if depth == 0 => {
                        end = i;
                        break;
                    }
                    _ => {}
                }
            }
            let part = rest[..end].trim();
            rest = rest.get(end + 1..).unwrap_or("").trim();
            if part.is_empty() {
                return Err(format!("unable to parse requirement: found '', expected: identifier in {s:?}"));
            }
            reqs.push(parse_requirement(part)?);
        }
        Ok(Self(reqs))
    }

    /// Builds a selector from a `metav1.LabelSelector` JSON object.
    pub fn from_label_selector(v: &Value) -> Result<Self, String> {
        let mut reqs = Vec::new();
        if let Some(ml) = v.get("matchLabels").and_then(Value::as_object) {
            for (k, val) in ml {
                reqs.push(Requirement::In(k.clone(), vec![val.as_str().unwrap_or_default().to_string()]));
            }
        }
        for e in v.get("matchExpressions").and_then(Value::as_array).into_iter().flatten() {
            let key = e.get("key").and_then(Value::as_str).unwrap_or_default().to_string();
            let values: Vec<String> = e.get("values").and_then(Value::as_array).into_iter().flatten().filter_map(|v| v.as_str().map(str::to_string)).collect();
            let op = e.get("operator").and_then(Value::as_str).unwrap_or_default();
            reqs.push(match op {
                "In" if !values.is_empty() => Requirement::In(key, values),
                "NotIn" if !values.is_empty() => Requirement::NotIn(key, values),
                "Exists" if values.is_empty() => Requirement::Exists(key),
                "DoesNotExist" if values.is_empty() => Requirement::DoesNotExist(key),
                "In" | "NotIn" => return Err("for 'in', 'notin' operators, values set can't be empty".into()),
                "Exists" | "DoesNotExist" => return Err("values set must be empty for exists and does not exist".into()),
                other => return Err(format!("{other:?} is not a valid label selector operator")),
            });
        }
        Ok(Self(reqs))
    }

    /// Whether the selector has no requirements.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether a label map satisfies every requirement.
    pub fn matches_map(&self, labels: &Map<String, Value>) -> bool {
        self.0.iter().all(|r| {
            let get = |k: &str| labels.get(k).and_then(Value::as_str);
            match r {
                Requirement::In(k, vs) => get(k).is_some_and(|v| vs.iter().any(|x| x == v)),
                Requirement::NotIn(k, vs) => get(k).is_none_or(|v| !vs.iter().any(|x| x == v)),
                Requirement::Exists(k) => labels.contains_key(k),
                Requirement::DoesNotExist(k) => !labels.contains_key(k),
            }
        })
    }

    /// Whether an object's `metadata.labels` satisfy the selector.
    pub fn matches(&self, obj: &Value) -> bool {
        if self.0.is_empty() {
            return true;
        }
        let empty = Map::new();
        let labels = obj.pointer("/metadata/labels").and_then(Value::as_object).unwrap_or(&empty);
        self.matches_map(labels)
    }
}

impl std::fmt::Display for LabelSelector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self
            .0
            .iter()
            .map(|r| match r {
                Requirement::In(k, vs) if vs.len() == 1 => format!("{k}={}", vs[0]),
                Requirement::In(k, vs) => format!("{k} in ({})", vs.join(",")),
                Requirement::NotIn(k, vs) if vs.len() == 1 => format!("{k}!={}", vs[0]),
                Requirement::NotIn(k, vs) => format!("{k} notin ({})", vs.join(",")),
                Requirement::Exists(k) => k.clone(),
                Requirement::DoesNotExist(k) => format!("!{k}"),
            })
            .collect();
        write!(f, "{}", parts.join(","))
    }
}

fn parse_set(s: &str) -> Result<Vec<String>, String> {
    let inner =
        s.trim().strip_prefix('(').and_then(|r| r.strip_suffix(')')).ok_or_else(|| format!("unable to parse requirement: found {s:?}, expected: '('"))?;
    Ok(inner.split(',').map(|v| v.trim().to_string()).collect())
}

fn parse_requirement(part: &str) -> Result<Requirement, String> {
    if let Some(key) = part.strip_prefix('!') {
        return Ok(Requirement::DoesNotExist(key.trim().to_string()));
    }
    for (op, neg) in [("!=", true), ("==", false), ("=", false)] {
        if let Some((k, v)) = part.split_once(op) {
            let (k, v) = (k.trim().to_string(), v.trim().to_string());
            if k.is_empty() {
                return Err(format!("unable to parse requirement: {part:?}: empty key"));
            }
            return Ok(if neg { Requirement::NotIn(k, vec![v]) } else { Requirement::In(k, vec![v]) });
        }
    }
    let words: Vec<&str> = part.splitn(3, char::is_whitespace).collect();
    match words.as_slice() {
        [k] => Ok(Requirement::Exists(k.to_string())),
        [k, "in", set] => Ok(Requirement::In(k.to_string(), parse_set(set)?)),
        [k, "notin", set] => Ok(Requirement::NotIn(k.to_string(), parse_set(set)?)),
        _ => Err(format!("unable to parse requirement: {part:?}")),
    }
}

/// A field selector: `field=value`, `field==value`, `field!=value`, joined
/// by commas.
#[derive(Debug, Clone, Default)]
pub struct FieldSelector(Vec<(String, bool, String)>);

impl FieldSelector {
    /// Parses a field selector for a resource type: a custom resource's
    /// fields are its CRD's `selectableFields`.
    pub fn parse_for(s: &str, rt: &crate::ResourceType) -> Result<Self, String> {
        match &rt.custom {
            Some(c) => Self::parse_with(s, |f| matches!(f, "metadata.name" | "metadata.namespace") || c.selectable_fields.iter().any(|p| p == f)),
            None => Self::parse(s, rt.kind),
        }
    }

    /// Whether a term names a field beyond name and namespace.
    pub fn beyond_metadata(&self) -> bool {
        self.0.iter().any(|(f, _, _)| !matches!(f.as_str(), "metadata.name" | "metadata.namespace"))
    }

    /// Parses a field selector and checks the fields are supported for `kind`.
    pub fn parse(s: &str, kind: &str) -> Result<Self, String> {
        Self::parse_with(s, |f| supported_field(kind, f))
    }

    fn parse_with(s: &str, supported: impl Fn(&str) -> bool) -> Result<Self, String> {
        let mut out = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (field, neg, value) = if let Some((f, v)) = part.split_once("!=") {
                (f, true, v)
            } else if let Some((f, v)) = part.split_once("==") {
                (f, false, v)
            } else if let Some((f, v)) = part.split_once('=') {
                (f, false, v)
            } else {
                return Err(format!("invalid selector: '{s}'; can't understand '{part}'"));
            };
            let field = field.trim();
            if !supported(field) {
                return Err(format!("field label not supported: {field}"));
            }
            out.push((field.to_string(), neg, value.trim().to_string()));
        }
        Ok(Self(out))
    }

    /// The value a `metadata.name=` term pins, if any (lets a lookup skip a scan).
    pub fn name(&self) -> Option<&str> {
        self.0.iter().find(|(f, neg, _)| f == "metadata.name" && !neg).map(|(_, _, v)| v.as_str())
    }

    /// Whether the object satisfies every term.
    pub fn matches(&self, obj: &Value) -> bool {
        self.0.iter().all(|(field, neg, want)| {
            let ptr = format!("/{}", field.replace('.', "/"));
            let have = match obj.pointer(&ptr) {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Null) | None => String::new(),
                Some(other) => other.to_string(),
            };
            (have == *want) != *neg
        })
    }
}

/// The part of an object that label and field selectors look at: name,
/// namespace, labels and the kind's selectable fields. Caches keep this
/// instead of the whole parsed object.
pub fn selectable(kind: &str, obj: &Value) -> Value {
    let mut out = serde_json::json!({"metadata": {
        "name": obj.pointer("/metadata/name"),
        "namespace": obj.pointer("/metadata/namespace"),
        "labels": obj.pointer("/metadata/labels"),
    }});
    let paths: &[&str] = match kind {
        "Pod" => &[
            "/spec/nodeName",
            "/spec/restartPolicy",
            "/spec/schedulerName",
            "/spec/serviceAccountName",
            "/spec/hostNetwork",
            "/status/phase",
            "/status/podIP",
            "/status/nominatedNodeName",
        ],
        "Event" => &["/involvedObject", "/regarding", "/reason", "/reportingComponent", "/source", "/type"],
        "Secret" => &["/type"],
        "Node" => &["/spec/unschedulable"],
        "Namespace" => &["/status/phase"],
        "ReplicaSet" | "ReplicationController" => &["/status/replicas"],
        "Job" => &["/status/successful"],
        _ => &[],
    };
    for p in paths {
        if let Some(v) = obj.pointer(p) {
            let mut cur = &mut out;
            let parts: Vec<&str> = p.trim_start_matches('/').split('/').collect();
            for (i, part) in parts.iter().enumerate() {
                if i + 1 == parts.len() {
                    cur[*part] = v.clone();
                } else {
                    if !cur.get(*part).is_some_and(Value::is_object) {
                        cur[*part] = serde_json::json!({});
                    }
                    cur = &mut cur[*part];
                }
            }
        }
    }
    out
}

fn supported_field(kind: &str, field: &str) -> bool {
    if matches!(field, "metadata.name" | "metadata.namespace") {
        return true;
    }
    match kind {
        "Pod" => matches!(
            field,
            "spec.nodeName"
                | "spec.restartPolicy"
                | "spec.schedulerName"
                | "spec.serviceAccountName"
                | "spec.hostNetwork"
                | "status.phase"
                | "status.podIP"
                | "status.nominatedNodeName"
        ),
        "Event" => {
            field.starts_with("involvedObject.") || field.starts_with("regarding.") || matches!(field, "reason" | "reportingComponent" | "source" | "type")
        }
        "Secret" => field == "type",
        "Node" => field == "spec.unschedulable",
        "Namespace" => field == "status.phase",
        "ReplicaSet" | "ReplicationController" => field == "status.replicas",
        "Job" => field == "status.successful",
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn string_selectors_follow_kubernetes_syntax() {
        let obj = json!({"metadata": {"labels": {"app": "web", "tier": "front"}}});
        for (sel, want) in [
            ("app=web", true),
            ("app==web", true),
            ("app!=web", false),
            ("app in (web,api)", true),
            ("app notin (web)", false),
            ("tier,app=web", true),
            ("!tier", false),
            ("missing!=x", true),
            ("env in (prod), app=web", false),
        ] {
            assert_eq!(LabelSelector::parse(sel).expect(sel).matches(&obj), want, "{sel}");
        }
    }

    #[test]
    fn field_selectors_check_support() {
        let pod = json!({"metadata": {"name": "a"}, "status": {"phase": "Running"}});
        let fs = FieldSelector::parse("status.phase!=Succeeded,metadata.name=a", "Pod").expect("parse");
        assert!(fs.matches(&pod));
        assert!(FieldSelector::parse("spec.nodeName=", "Pod").expect("parse").matches(&pod));
        assert_eq!(FieldSelector::parse("spec.bogus=1", "Pod").unwrap_err(), "field label not supported: spec.bogus");
    }
}
