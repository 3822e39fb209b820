//! Secrets encrypted at rest: by default no file under the data dir holds a
//! Secret's value or its base64 (the database and its WAL included), and
//! keys rotate with `skiff secrets-encrypt` while the server runs.

mod common;

use common::{ok, Server};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// Every file under `dir` that contains one of `needles`.
fn files_containing(dir: &Path, needles: &[&[u8]]) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            let Ok(meta) = std::fs::symlink_metadata(&path) else { continue };
            if meta.is_dir() {
                stack.push(path);
            } else if meta.is_file() {
                let data = std::fs::read(&path).unwrap_or_default();
                if needles.iter().any(|n| data.windows(n.len()).any(|w| w == *n)) {
                    found.push(path.display().to_string());
                }
            }
        }
    }
    found
}

fn base64(s: &str) -> String {
    use std::fmt::Write;
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let b = s.as_bytes();
    let mut out = String::new();
    for chunk in b.chunks(3) {
        let n = (chunk[0] as u32) << 16 | (*chunk.get(1).unwrap_or(&0) as u32) << 8 | *chunk.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                let _ = out.write_char(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Creates Secrets with values no other test uses; returns the values.
fn distinctive_secrets(s: &Server) -> Vec<String> {
    let tag = format!("{:x}", std::process::id() as u64 * 7919 + s.port as u64);
    let values: Vec<String> = (0..3).map(|i| format!("skiff-plaintext-canary-{tag}-{i}")).collect();
    for (i, v) in values.iter().enumerate() {
        ok(s, &["create", "secret", "generic", &format!("canary-{i}"), &format!("--from-literal=password={v}")]);
    }
    values
}

fn read_back(s: &Server, values: &[String]) {
    for (i, v) in values.iter().enumerate() {
        let got = ok(s, &["get", "secret", &format!("canary-{i}"), "-o", "jsonpath={.data.password}"]);
        assert_eq!(got, base64(v), "canary-{i} reads back");
    }
}

fn leaks(s: &Server, values: &[String]) -> Vec<String> {
    let encoded: Vec<String> = values.iter().map(|v| base64(v)).collect();
    let mut needles: Vec<&[u8]> = values.iter().map(|v| v.as_bytes()).collect();
    // Past the first 4-character group: the encoding's start depends only on the value.
    needles.extend(encoded.iter().map(|e| e.as_bytes()));
    files_containing(s.dir.path(), &needles)
}

#[test]
fn no_file_under_the_data_dir_holds_a_secrets_value() {
    let s = common::start();
    let values = distinctive_secrets(&s);
    read_back(&s, &values);
    // Updated and patched values too (the store keeps history until compaction).
    ok(&s, &["patch", "secret", "canary-0", "-p", &format!("{{\"stringData\":{{\"other\":\"{}\"}}}}", values[1])]);
    let found = leaks(&s, &values);
    assert!(found.is_empty(), "plaintext or base64 of a Secret's value in {found:?}");
    let config = std::fs::read_to_string(s.dir.path().join("encryption-config.yaml")).expect("the generated configuration");
    assert!(config.contains("aescbc"), "{config}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(s.dir.path().join("encryption-config.yaml")).expect("stat").permissions().mode();
    assert_eq!(mode & 0o077, 0, "the key file is its owner's alone");

    // The control: the same scan finds them when encryption is off, so
    // the scan above could have failed.
    let plain = common::start_with(&["--secrets-encryption=false"]);
    let values = distinctive_secrets(&plain);
    let found = leaks(&plain, &values);
    assert!(!found.is_empty(), "without encryption the store holds the values");
}

#[test]
fn keys_rotate_while_the_server_runs_and_the_old_key_goes() {
    let mut s = common::start();
    let values = distinctive_secrets(&s);
    let dir = s.dir.path().to_path_buf();
    let step = |step: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_skiff"))
            .args(["secrets-encrypt", step, "--data-dir"])
            .arg(&dir)
            .args(["--timeout-seconds", "60"])
            .output()
            .expect("skiff secrets-encrypt");
        let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "secrets-encrypt {step}: {said}");
        said
    };
    let before = step("status");
    let old_key = before.lines().find(|l| l.starts_with("* (writes)")).and_then(|l| l.split_whitespace().last()).expect("a write key").to_string();
    // The server reports every Secret under the first key.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !step("status").contains(&format!("k8s:enc:aescbc:v1:{old_key}:")) {
        assert!(Instant::now() < deadline, "no report from the server: {}", step("status"));
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_millis(1100)); // key names carry the second
    let prepared = step("prepare");
    assert!(prepared.contains("prepared aescbc key"), "{prepared}");
    step("rotate");
    let done = step("reencrypt");
    assert!(done.contains(&format!("removed keys: {old_key}")), "{done}");
    let after = step("status");
    assert!(!after.contains(&old_key), "the old key is gone: {after}");
    read_back(&s, &values);
    // New writes use the new key; with only the new key in the file, a
    // restarted server still reads every Secret (they were rewritten).
    ok(&s, &["create", "secret", "generic", "late", "--from-literal=k=v"]);
    s.restart();
    common::wait_for(&s, 20, |s| common::kubectl(s, &["get", "secret", "canary-0"]).0);
    read_back(&s, &values);
    assert_eq!(ok(&s, &["get", "secret", "late", "-o", "jsonpath={.data.k}"]), "dg==");
    let found = leaks(&s, &values);
    assert!(found.is_empty(), "plaintext after rotation in {found:?}");
}
