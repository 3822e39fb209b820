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

/// The longest expression compiled, in characters (cel-go's default
/// `ExpressionSizeCodePointLimit`).
const MAX_LENGTH: usize = 100_000;

/// The deepest nesting of parentheses, brackets and braces the parser is
/// given. Its parser recurses through every precedence level for each one
/// (tens of kilobytes of stack a level in a debug build).
const MAX_BRACKETS: usize = 32;

/// The deepest expression tree kept. Evaluation recurses once per level,
/// on whatever thread asks (a request's: the server gives its runtime
/// threads 8 MiB of stack, and a debug build needs about 30 KiB a level),
/// so the tree stays shallow. Rules as people write them are a few levels
/// deep; a chain of 60 `&&` is about 60.
pub const MAX_TREE_DEPTH: usize = 64;

/// The stack of the thread an expression is parsed on: the parser also
/// recurses once per link of an operator or member chain (`a + b + …`,
/// `x.a.b…`), up to [`MAX_LENGTH`] characters' worth. It is reserved, not
/// used: only the pages a parse touches are ever committed.
const PARSE_STACK: usize = 256 << 20;

/// Compiles an expression a client wrote without letting its shape decide
/// how deep anything recurses on a request's thread: its length and
/// bracket nesting are checked first, it is parsed on a thread with a
/// large stack, and a tree deeper than [`MAX_TREE_DEPTH`] is refused there
/// (and dropped there: dropping it recurses too).
fn bounded_compile(expr: &str) -> Result<cel::Program, String> {
    let length = expr.chars().count();
    if length > MAX_LENGTH {
        return Err(format!("compilation failed: the expression is {length} characters long, past the limit of {MAX_LENGTH}"));
    }
    let nesting = bracket_nesting(expr);
    if nesting > MAX_BRACKETS {
        return Err(format!("compilation failed: the expression nests brackets {nesting} deep, past the limit of {MAX_BRACKETS}"));
    }
    let source = expr.to_string();
    let parse = std::thread::Builder::new().name("cel-parse".into()).stack_size(PARSE_STACK).spawn(move || {
        let program = env().compile(&source).map_err(|e| format!("compilation failed: {e}"))?;
        let depth = tree_depth(&program.expression().expr);
        if depth > MAX_TREE_DEPTH {
            return Err(format!("compilation failed: the expression is {depth} levels deep, past the limit of {MAX_TREE_DEPTH}"));
        }
        Ok(program)
    });
    parse.map_err(|e| format!("compilation failed: {e}"))?.join().map_err(|_| "compilation failed: the parser failed".to_string())?
}

/// How deeply `(`, `[` and `{` nest outside string literals; linear.
fn bracket_nesting(expr: &str) -> usize {
    let (mut depth, mut deepest) = (0usize, 0usize);
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for c in expr.chars() {
        match quote {
            Some(q) => match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, c) if c == q => quote = None,
                _ => {}
            },
            None => match c {
                '"' | '\'' => quote = Some(c),
                '(' | '[' | '{' => {
                    depth += 1;
                    deepest = deepest.max(depth);
                }
                ')' | ']' | '}' => depth = depth.saturating_sub(1),
                _ => {}
            },
        }
    }
    deepest
}

/// The depth of an expression tree, without recursion.
fn tree_depth(root: &cel::common::ast::Expr) -> usize {
    use cel::common::ast::{EntryExpr, Expr, IdedEntryExpr, IdedExpr};
    fn entries(entries: &[IdedEntryExpr]) -> Vec<&IdedExpr> {
        entries
            .iter()
            .flat_map(|en| match &en.expr {
                EntryExpr::MapEntry(me) => vec![&me.key, &me.value],
                EntryExpr::StructField(f) => vec![&f.value],
            })
            .collect()
    }
    let mut deepest = 0;
    let mut stack = vec![(root, 1usize)];
    while let Some((e, depth)) = stack.pop() {
        deepest = deepest.max(depth);
        let children: Vec<&IdedExpr> = match e {
            Expr::Call(c) => c.target.iter().map(|t| &**t).chain(c.args.iter()).collect(),
            Expr::Comprehension(c) => vec![&c.iter_range, &c.accu_init, &c.loop_cond, &c.loop_step, &c.result],
            Expr::List(l) => l.elements.iter().collect(),
            Expr::Map(m) => entries(&m.entries),
            Expr::Struct(st) => entries(&st.entries),
            Expr::Select(sel) => vec![&*sel.operand],
            Expr::Unspecified | Expr::Ident(_) | Expr::Literal(_) => vec![],
        };
        stack.extend(children.into_iter().map(|c| (&c.expr, depth + 1)));
    }
    deepest
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
    let program = bounded_compile(expr)?;
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
    fn deeply_nested_expressions_are_refused_not_recursed_into() {
        // A CRD rule or a ValidatingAdmissionPolicy expression is a
        // client's text: its nesting must not decide how deep the parser
        // recurses.
        for depth in [200usize, 1_000, 49_000] {
            for expr in [
                format!("{}1{}", "(".repeat(depth), ")".repeat(depth)),
                format!("{}1{}", "[".repeat(depth), "]".repeat(depth)),
                format!("1{}", " + 1".repeat(depth / 2)),
                format!("self{}", ".a".repeat(depth)),
                format!("self{}", "[0]".repeat(depth)),
                format!("{}1", "true ? 1 : ".repeat(depth / 10 + 100)),
            ] {
                let err = compile(&expr).err().unwrap_or_default();
                assert!(err.contains("past the limit") || err.contains("compilation failed"), "{}… compiled", &expr[..20]);
            }
        }
        assert!(compile(&"1 + ".repeat(60_000)).err().unwrap_or_default().contains("past the limit of 100000"));
        // Rules as people write them compile and run, and so does the
        // deepest tree kept, on a stack as the server's runtime threads have.
        let run = std::thread::Builder::new().stack_size(8 << 20).spawn(|| {
            let vars = [("self", &json!({"a": {"b": [1, 2, 3]}, "s": "(x)"}))];
            assert!(eval_bool("self.a.b.all(x, x > 0) && size(self.a.b) == 3 && self.s.startsWith('(') && ((((1 + 2) * 3) == 9))", &vars).expect("eval"));
            // `int(self.a.b[0]) == …` is 6 levels before the links.
            let links = MAX_TREE_DEPTH - 6;
            let chain = format!("int(self.a.b[0]){} == {}", " + 1".repeat(links), links + 1);
            assert!(eval_bool(&chain, &vars).expect("a chain within the limit"));
            let past = format!("int(self.a.b[0]){} == 0", " + 1".repeat(MAX_TREE_DEPTH));
            assert!(compile(&past).err().unwrap_or_default().contains("past the limit of"));
        });
        run.expect("thread").join().expect("the deepest tree kept evaluates");
    }

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
