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
    crate::tools::install_once("openfeature", &dir(), &FILES, "complete", |staging| {
        crate::tools::npm_ci(staging);
        crate::tools::python_venv(staging);
        crate::tools::mark_complete(staging);
    })
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
