//! A bounded fuzzing run: schemathesis (PyPI) reads the server's own
//! OpenAPI v3 documents of core/v1, apps/v1 and batch/v1 and sends
//! what they allow and what they do not, for a fixed time per document:
//! the documents must be valid OpenAPI that it can use (0 schema errors),
//! and no request may get a 5xx or go unanswered for 10 s.

mod common;

use std::process::Command;

/// The Python that has schemathesis: `SCHEMATHESIS_PYTHON` names it, else
/// `python3`. `.ci/run` installs it; outside CI a missing one skips the
/// test.
fn schemathesis_python() -> Option<String> {
    let python = std::env::var("SCHEMATHESIS_PYTHON").unwrap_or_else(|_| "python3".to_string());
    match Command::new(&python).args(["-c", "import schemathesis"]).output() {
        Ok(o) if o.status.success() => Some(python),
        _ => {
            assert!(std::env::var("CI").is_err(), "schemathesis is not installed (.ci/run installs it from PyPI)");
            eprintln!("schemathesis is not installed: skipping the fuzzing run");
            None
        }
    }
}

/// schemathesis' command line, run by the module (pip puts its script
/// where pyenv's shims may not see it).
const CLI: &str = "import sys; from schemathesis.cli import schemathesis; sys.argv[0] = 'schemathesis'; sys.exit(schemathesis())";

/// A watch is a stream that lasts as long as its client wants, so the
/// fuzzer, which waits for each answer to end, is not given the watch
/// parameters (a watch is long-running by design, not a hang).
fn without_watches(doc: &mut serde_json::Value) {
    for item in doc["paths"].as_object_mut().into_iter().flat_map(|p| p.values_mut()) {
        for op in item.as_object_mut().into_iter().flat_map(|o| o.values_mut()) {
            if let Some(params) = op.get_mut("parameters").and_then(serde_json::Value::as_array_mut) {
                params.retain(|p| !matches!(p["name"].as_str(), Some("watch" | "allowWatchBookmarks" | "sendInitialEvents")));
            }
        }
    }
}

#[test]
fn schemathesis_finds_no_server_error_hang_or_schema_error() {
    let Some(python) = schemathesis_python() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let tokens = dir.path().join("tokens.csv");
    // An administrator, so that every operation reaches the API's logic
    // rather than authorization.
    std::fs::write(&tokens, "fuzz-token-0123456789,fuzzer,fuzzer-uid,\"system:masters\"\n").expect("tokens");
    let s = common::start_with(&["--token-auth-file", tokens.to_str().expect("path")]);
    let url = format!("https://127.0.0.1:{}", s.port);
    let seconds: u64 = std::env::var("SKIFF_FUZZ_SECONDS").ok().and_then(|v| v.parse().ok()).unwrap_or(60);
    for gv in ["api/v1", "apis/apps/v1", "apis/batch/v1"] {
        let raw = common::ok(&s, &["get", "--raw", &format!("/openapi/v3/{gv}")]);
        let mut doc: serde_json::Value = serde_json::from_str(&raw).expect("a JSON document");
        let operations: usize =
            doc["paths"].as_object().expect("paths").values().map(|i| i.as_object().map_or(0, |o| o.keys().filter(|k| *k != "parameters").count())).sum();
        without_watches(&mut doc);
        let file = dir.path().join(format!("{}.json", gv.replace('/', "_")));
        std::fs::write(&file, serde_json::to_vec(&doc).expect("json")).expect("write");
        let out = Command::new(&python)
            .args(["-c", CLI, "run", file.to_str().expect("path"), "--url", &url, "--tls-verify", "false", "-H", "Authorization: Bearer fuzz-token-0123456789"])
            .args(["--checks", "not_a_server_error", "--request-timeout", "10", "--workers", "2", "--seed", "1"])
            .args(["--max-time", &seconds.to_string(), "--no-color"])
            .env("NO_COLOR", "1")
            // Its example database goes to the temp dir, not the checkout.
            .current_dir(dir.path())
            .output()
            .expect("schemathesis runs");
        let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
        let summary = text.rfind("SUMMARY").map_or(text.as_str(), |i| &text[i..]);
        eprintln!("{gv}: {operations} operations\n{summary}");
        assert!(summary.contains(&format!("Tested: {operations}")), "not every operation of {gv} was tested:\n{text}");
        assert!(summary.contains(" generated, "), "no test case ran for {gv}:\n{text}");
        // A server error is a failed `not_a_server_error` check; a hang is
        // a network error (no answer in 10 s); a schema error is an
        // operation the document does not describe validly. A "Runtime
        // Error" is schemathesis' own (its generator failing on a large
        // recursive schema) and is reported, not counted against the server.
        for finding in ["Server error", "Network Error", "Schema Error"] {
            assert!(!summary.contains(finding), "{finding} in {gv}:\n{text}");
        }
        assert!(out.status.success() || summary.contains("Runtime Error"), "schemathesis failed on {gv}:\n{text}");
    }
    // The server is still up and answers.
    assert_eq!(common::ok(&s, &["get", "--raw", "/readyz"]), "ok");
}
