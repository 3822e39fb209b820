//! YAML request bodies (`application/yaml`, `application/apply-patch+yaml`)
//! decoded with their nesting bounded before the parser sees them.
//!
//! serde_yaml stops at 128 levels, as serde_json does, but libyaml, under
//! it, scans a flow collection (`[[[[…`) before that limit applies, and a
//! body nested a million levels deep held a core for minutes. A linear scan
//! refuses such a body first: flow collections opened outside quoted
//! strings and comments, and block nesting by indentation and compact
//! indicators (`- - - x`), each bounded.

use serde_json::Value;

/// How deep a YAML body may nest (serde_yaml's and serde_json's own limit).
pub const MAX_DEPTH: usize = 128;

/// The widest indentation a line may have: a document at [`MAX_DEPTH`]
/// levels indented eight columns each stays below it.
const MAX_INDENT: usize = MAX_DEPTH * 8;

/// Whether `text` nests deeper than `max` levels (see the module's docs);
/// linear in its length.
pub fn too_deep(text: &[u8], max: usize) -> bool {
    let (mut single, mut double, mut escaped, mut comment) = (false, false, false, false);
    let mut flow = 0usize;
    // The line's leading spaces and compact indicators, while still at its start.
    let mut at_start = true;
    let (mut indent, mut compact) = (0usize, 0usize);
    // Whether the previous byte ends a token (a quote or `#` may start here).
    let mut token_start = true;
    let mut prev = b'\n';
    for &b in text {
        if b == b'\n' {
            comment = false;
            at_start = true;
            indent = 0;
            compact = 0;
            token_start = true;
            prev = b;
            if !double && !single {
                continue;
            }
        }
        if comment {
            continue;
        }
        if double {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => double = false,
                _ => {}
            }
            prev = b;
            continue;
        }
        if single {
            if b == b'\'' {
                single = false;
            }
            prev = b;
            continue;
        }
        if at_start {
            match b {
                b' ' => {
                    indent += 1;
                    if indent > MAX_INDENT {
                        return true;
                    }
                    prev = b;
                    continue;
                }
                b'-' | b'?' => {
                    compact += 1;
                    if compact > max {
                        return true;
                    }
                    prev = b;
                    continue;
                }
                _ => at_start = false,
            }
        }
        match b {
            b'"' if token_start => double = true,
            b'\'' if token_start => single = true,
            b'#' if token_start || prev == b' ' || prev == b'\t' => comment = true,
            b'[' | b'{' => {
                flow += 1;
                if flow > max {
                    return true;
                }
            }
            b']' | b'}' => flow = flow.saturating_sub(1),
            _ => {}
        }
        token_start = matches!(b, b' ' | b'\t' | b',' | b'[' | b'{' | b':' | b'-');
        prev = b;
    }
    false
}

/// Decodes a YAML body into JSON's data model, refusing one that nests
/// deeper than [`MAX_DEPTH`] before the parser reads it.
pub fn from_slice(body: &[u8]) -> Result<Value, String> {
    if too_deep(body, MAX_DEPTH) {
        return Err(format!("nesting deeper than {MAX_DEPTH} levels"));
    }
    serde_yaml::from_slice(body).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deep_flow_and_block_nesting_is_refused_quickly_and_real_documents_pass() {
        let flow = |n: usize| format!("a: {}{}\n", "[".repeat(n), "]".repeat(n));
        assert!(!too_deep(flow(MAX_DEPTH).as_bytes(), MAX_DEPTH));
        assert!(too_deep(flow(MAX_DEPTH + 1).as_bytes(), MAX_DEPTH));
        let started = std::time::Instant::now();
        assert!(from_slice(flow(1_000_000).as_bytes()).is_err());
        assert!(from_slice(format!("a:\n{}x\n", "- ".repeat(1_000_000)).as_bytes()).is_err());
        assert!(started.elapsed() < std::time::Duration::from_millis(500), "{:?}", started.elapsed());
        // Brackets in quoted strings and comments are not nesting.
        let quoted = format!("a: \"{}\"\nb: '{}' # {}\n", "[".repeat(500), "{".repeat(500), "[".repeat(500));
        assert_eq!(from_slice(quoted.as_bytes()).expect("a real document")["a"].as_str().map(str::len), Some(500));
        let manifest = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: it's-fine\n  labels: {app: web, tier: \"a#b\"}\ndata:\n  k: |\n    [unbalanced\n";
        let v = from_slice(manifest.as_bytes()).expect("a manifest");
        assert_eq!(v["metadata"]["labels"]["tier"], "a#b");
    }
}
