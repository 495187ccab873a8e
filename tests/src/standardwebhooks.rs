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
    crate::tools::install_once(
        "standardwebhooks",
        &dir(),
        &["requirements.txt"],
        "complete",
        |staging| {
            crate::tools::python_venv(staging);
            crate::tools::mark_complete(staging);
        },
    )
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
