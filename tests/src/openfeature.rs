//! The official OpenFeature SDKs with their OFREP providers, for the e2e OFREP test
//! (`tests/openfeature/`: a pinned `package.json` + `package-lock.json` for Node, a pinned
//! `requirements.txt` for Python, and one evaluation script for each). Installed once into
//! `openfeature-{hash}` under the tools directory (`TENANTRY_TOOLS_DIR`, else
//! `~/.cache/tenantry-tools`), the hash the first 16 hex digits of the SHA-256 of the three
//! files concatenated — the directory `.ci/run` installs into — so later runs need no network.

use std::{
    io::Write as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::OnceLock,
};

use serde_json::Value;
use sha2::{Digest, Sha256};

/// `tests/openfeature/`.
pub fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("openfeature")
}

const FILES: [&str; 3] = ["package.json", "package-lock.json", "requirements.txt"];

/// The installed tools: `node_modules/` and a Python `venv/`.
pub fn tools() -> PathBuf {
    static INSTALLED: OnceLock<PathBuf> = OnceLock::new();
    INSTALLED.get_or_init(install).clone()
}

fn install() -> PathBuf {
    let mut digest = Sha256::new();
    for file in FILES {
        digest.update(std::fs::read(dir().join(file)).expect("read tests/openfeature"));
    }
    let hash: String = digest.finalize()[..8]
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
    let target = root.join(format!("openfeature-{hash}"));
    if target.join("complete").is_file() {
        return target;
    }
    // Installed beside the target, then renamed into place: another test process may be
    // installing at the same time, and a half-written directory must never look complete.
    let staging = root.join(format!(
        "openfeature-staging-{}",
        uuid::Uuid::now_v7().simple()
    ));
    std::fs::create_dir_all(&staging).expect("create the staging directory");
    for file in FILES {
        std::fs::copy(dir().join(file), staging.join(file)).expect("copy the manifests");
    }
    run(
        Command::new("npm")
            .args([
                "ci",
                "--ignore-scripts",
                "--no-audit",
                "--no-fund",
                "--silent",
            ])
            .current_dir(&staging),
        "npm ci (Node.js and npm are needed)",
    );
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
        "pip install -r requirements.txt",
    );
    std::fs::write(staging.join("complete"), b"").expect("mark the install complete");
    if std::fs::rename(&staging, &target).is_err() {
        // Another process got there first; its copy is complete (renamed whole).
        let _ = std::fs::remove_dir_all(&staging);
    }
    assert!(
        target.join("complete").is_file(),
        "no OpenFeature tools in {}",
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

/// An SDK to evaluate with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sdk {
    /// `@openfeature/server-sdk` with `@openfeature/ofrep-provider`.
    JavaScript,
    /// `openfeature-sdk` with `openfeature-provider-ofrep`.
    Python,
}

/// Evaluates `cases` (`{"flag", "type": boolean|number|object, "default", "context"}`) with
/// `sdk` against `base_url` with a bearer `token`; per case the SDK's details `{value, reason,
/// variant, errorCode, flagMetadata}`. On a blocking thread: the test's runtime keeps serving
/// its connections meanwhile (a pooled one the server closes while idle must be seen closed).
pub async fn evaluate(sdk: Sdk, base_url: &str, token: &str, cases: &[Value]) -> Vec<Value> {
    let (base_url, token, cases) = (base_url.to_owned(), token.to_owned(), cases.to_vec());
    tokio::task::spawn_blocking(move || evaluate_blocking(sdk, &base_url, &token, &cases))
        .await
        .expect("the evaluation thread")
}

fn evaluate_blocking(sdk: Sdk, base_url: &str, token: &str, cases: &[Value]) -> Vec<Value> {
    let tools = tools();
    let mut command = match sdk {
        Sdk::JavaScript => {
            let mut c = Command::new("node");
            c.arg(dir().join("evaluate.js"))
                .env("NODE_PATH", tools.join("node_modules"));
            c
        }
        Sdk::Python => {
            let mut c = Command::new(tools.join("venv/bin/python"));
            c.arg(dir().join("evaluate.py"));
            c
        }
    };
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start the {sdk:?} evaluation: {e}"));
    let input = serde_json::json!({"baseUrl": base_url, "token": token, "cases": cases});
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.to_string().as_bytes())
        .expect("write the cases");
    let out = child.wait_with_output().expect("wait for the evaluation");
    assert!(
        out.status.success(),
        "{sdk:?} evaluation failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let results: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{sdk:?} printed no JSON array ({e}):\n{}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    assert_eq!(results.len(), cases.len(), "{sdk:?}: one result per case");
    results
}
