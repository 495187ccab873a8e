//! The Standard Webhooks reference verifier (PyPI `standardwebhooks`, pinned in
//! `tests/standardwebhooks/requirements.txt`), for the e2e webhook tests: installed once into
//! `standardwebhooks-{hash}` under the tools directory (`TENANTRY_TOOLS_DIR`, else
//! `~/.cache/tenantry-tools`), the hash the first 16 hex digits of the SHA-256 of the
//! requirements — the directory `.ci/run` installs into — so later runs need no network.

use std::{
    io::Write as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::OnceLock,
};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// `tests/standardwebhooks/`.
pub fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("standardwebhooks")
}

/// The installed virtual environment's directory.
fn tools() -> PathBuf {
    static INSTALLED: OnceLock<PathBuf> = OnceLock::new();
    INSTALLED.get_or_init(install).clone()
}

fn install() -> PathBuf {
    let requirements = std::fs::read(dir().join("requirements.txt")).expect("read requirements");
    let hash: String = Sha256::digest(&requirements)[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let root = std::env::var_os("TENANTRY_TOOLS_DIR").map_or_else(
        || {
            let home = std::env::var_os("HOME").expect("HOME or TENANTRY_TOOLS_DIR");
            Path::new(&home).join(".cache").join("tenantry-tools")
        },
        PathBuf::from,
    );
    let target = root.join(format!("standardwebhooks-{hash}"));
    if target.join("complete").is_file() {
        return target;
    }
    // Installed beside the target, then renamed into place, so a half-written directory
    // never looks complete to another test process.
    let staging = root.join(format!(
        "standardwebhooks-staging-{}",
        uuid::Uuid::now_v7().simple()
    ));
    std::fs::create_dir_all(&staging).expect("create the staging directory");
    std::fs::write(staging.join("requirements.txt"), &requirements).expect("copy requirements");
    run(
        Command::new("python3")
            .args(["-m", "venv", "venv"])
            .current_dir(&staging),
        "python3 -m venv",
    );
    run(
        Command::new(staging.join("venv/bin/pip"))
            .args(["install", "--quiet", "--no-deps", "-r", "requirements.txt"])
            .current_dir(&staging),
        "pip install standardwebhooks",
    );
    std::fs::write(staging.join("complete"), b"").expect("mark the install complete");
    if std::fs::rename(&staging, &target).is_err() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    assert!(
        target.join("complete").is_file(),
        "no standardwebhooks in {}",
        target.display()
    );
    target
}

fn run(command: &mut Command, what: &str) {
    let out = command.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed (network needed once, then cached):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A received request: its headers (lowercase names) and body.
#[derive(Clone, Debug)]
pub struct Message {
    pub headers: Vec<(String, String)>,
    pub body: String,
}

/// Verifies each message with `secret`; per message `"ok"` or the verifier's error.
pub async fn verify(secret: &str, messages: &[Message]) -> Vec<String> {
    let request = json!({
        "secret": secret,
        "messages": messages.iter().map(|m| json!({
            "headers": m
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect::<serde_json::Map<String, Value>>(),
            "body": m.body,
        })).collect::<Vec<_>>(),
    });
    tokio::task::spawn_blocking(move || {
        let mut child = Command::new(tools().join("venv/bin/python"))
            .arg(dir().join("verify.py"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run verify.py");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(request.to_string().as_bytes())
            .expect("write the messages");
        let out = child.wait_with_output().expect("verify.py output");
        assert!(
            out.status.success(),
            "verify.py failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("verify.py answers JSON")
    })
    .await
    .expect("the verification thread")
}
