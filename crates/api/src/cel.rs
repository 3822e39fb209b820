//! CEL, the expression language Kubernetes evaluates in CRD validation
//! rules (`x-kubernetes-validations`), admission webhooks' `matchConditions`
//! and ValidatingAdmissionPolicies, on the maintained `cel` crate with its
//! strings, lists and math extensions (kube's CEL libraries that clients
//! use most).
//!
//! Programs are compiled once per expression and kept (a bounded cache).

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};

use serde_json::Value;

/// Expressions kept compiled; past this the cache starts over.
const CACHE: usize = 4096;

fn env() -> &'static Arc<cel::Env> {
    static ENV: OnceLock<Arc<cel::Env>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = cel::Env::stdlib();
        for ext in [cel::extensions::strings, cel::extensions::lists, cel::extensions::math] {
            // A declaration clash would only lose that extension.
            let _ = env.add_extension(ext);
        }
        Arc::new(env)
    })
}

/// A compiled expression.
pub struct Program {
    program: cel::Program,
    /// It reads `oldSelf` (a CRD's transition rule).
    pub reads_old_self: bool,
}

/// Compiles an expression (once), or says why it does not compile.
pub fn compile(expr: &str) -> Result<Arc<Program>, String> {
    // Read-mostly: every request reads, only a new expression writes.
    static PROGRAMS: OnceLock<RwLock<HashMap<String, Arc<Program>>>> = OnceLock::new();
    let programs = PROGRAMS.get_or_init(Default::default);
    if let Some(p) = programs.read().ok().and_then(|m| m.get(expr).cloned()) {
        return Ok(p);
    }
    let program = env().compile(expr).map_err(|e| format!("compilation failed: {e}"))?;
    let reads_old_self = program.references().has_variable("oldSelf");
    let p = Arc::new(Program { program, reads_old_self });
    if let Ok(mut m) = programs.write() {
        if m.len() >= CACHE {
            m.clear();
        }
        m.insert(expr.to_string(), p.clone());
    }
    Ok(p)
}

/// Whether an expression reads `oldSelf` (a transition rule).
pub fn reads_old_self(expr: &str) -> bool {
    compile(expr).is_ok_and(|p| p.reads_old_self)
}

/// Whether an error is this CEL's and not the expression's: a function of
/// kube's CEL libraries it does not have (`isURL`, `quantity`, `ip`,
/// `isSorted`, …) or syntax it does not parse (optional fields, `.?`).
/// Such rules are skipped rather than held against the object.
pub fn unsupported(error: &str) -> bool {
    error.contains("Undeclared reference") || error.contains("unsupported syntax")
}

/// Evaluates an expression with JSON variables.
pub fn eval(expr: &str, vars: &[(&str, &Value)]) -> Result<cel::Value, String> {
    let program = compile(expr)?;
    let mut ctx = cel::Context::with_env(env().clone());
    for (name, v) in vars {
        let value = cel::to_value(v).map_err(|e| e.to_string())?;
        ctx.add_variable_from_value(*name, value);
    }
    program.program.execute(&ctx).map_err(|e| e.to_string())
}

/// Evaluates an expression to a JSON value (ValidatingAdmissionPolicy
/// `variables`).
pub fn eval_json(expr: &str, vars: &[(&str, &Value)]) -> Result<Value, String> {
    eval(expr, vars)?.json().map_err(|e| e.to_string())
}

/// Evaluates an expression that must give a bool.
pub fn eval_bool(expr: &str, vars: &[(&str, &Value)]) -> Result<bool, String> {
    match eval(expr, vars)? {
        cel::Value::Bool(b) => Ok(b),
        other => Err(format!("expected a bool, got {:?}", other.type_of())),
    }
}

/// Evaluates an expression that must give a string (`messageExpression`).
pub fn eval_string(expr: &str, vars: &[(&str, &Value)]) -> Result<String, String> {
    match eval(expr, vars)? {
        cel::Value::String(s) => Ok(s.to_string()),
        other => Err(format!("expected a string, got {:?}", other.type_of())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rules_see_their_variables() {
        let v = json!({"replicas": 2, "max": 5, "name": "abc", "tags": ["x"]});
        assert_eq!(eval_bool("self.replicas <= self.max && self.name.startsWith('a') && size(self.tags) < 3", &[("self", &v)]), Ok(true));
        assert_eq!(eval_bool("has(self.missing)", &[("self", &v)]), Ok(false));
        assert_eq!(eval_string("'max is ' + string(self.max)", &[("self", &v)]).as_deref(), Ok("max is 5"));
        assert!(compile("self.replicas <=").err().is_some_and(|e| e.contains("compilation failed")));
        assert!(reads_old_self("self.x == oldSelf.x") && !reads_old_self("self.x > 1"));
    }
}
