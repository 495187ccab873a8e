//! Pinned third-party tools the e2e tests run (npm and PyPI packages), installed once per
//! manifest hash into `{name}-{hash}` under the tools directory (`TENANTRY_TOOLS_DIR`, else
//! `~/.cache/tenantry-tools`), the hash the first 16 hex digits of the SHA-256 of the manifests
//! concatenated — the directories `.ci/run` installs into, so later runs need no network.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use sha2::{Digest, Sha256};

fn tools_dir() -> PathBuf {
    std::env::var_os("TENANTRY_TOOLS_DIR").map_or_else(
        || {
            let home = std::env::var_os("HOME").expect("HOME or TENANTRY_TOOLS_DIR");
            Path::new(&home).join(".cache").join("tenantry-tools")
        },
        PathBuf::from,
    )
}

/// The installed `{name}-{hash}` directory for the manifests `files` of `source`, installing
/// it unless `marker` (a path inside it) exists: the manifests are copied into a staging
/// directory beside it, `populate` installs there, and the directory is renamed into place
/// whole — another test process may be installing at the same time, and a half-written
/// directory must never look complete.
pub fn install_once(
    name: &str,
    source: &Path,
    files: &[&str],
    marker: &str,
    populate: impl FnOnce(&Path),
) -> PathBuf {
    let mut digest = Sha256::new();
    for file in files {
        digest.update(std::fs::read(source.join(file)).expect("read a tool manifest"));
    }
    let hash: String = digest.finalize()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let root = tools_dir();
    let target = root.join(format!("{name}-{hash}"));
    if target.join(marker).exists() {
        return target;
    }
    let staging = root.join(format!("{name}-staging-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&staging).expect("create the staging directory");
    for file in files {
        std::fs::copy(source.join(file), staging.join(file)).expect("copy a tool manifest");
    }
    populate(&staging);
    if std::fs::rename(&staging, &target).is_err() {
        // Another process got there first; its copy is complete (renamed whole).
        let _ = std::fs::remove_dir_all(&staging);
    }
    assert!(
        target.join(marker).exists(),
        "no {name} tools in {}",
        target.display()
    );
    target
}

/// `npm ci` of the copied `package.json` and `package-lock.json` in `dir`.
pub fn npm_ci(dir: &Path) {
    run(
        Command::new("npm")
            .args([
                "ci",
                "--ignore-scripts",
                "--no-audit",
                "--no-fund",
                "--silent",
            ])
            .current_dir(dir),
        "npm ci (Node.js and npm are needed)",
    );
}

/// A Python `venv/` in `dir` with the copied `requirements.txt` installed.
pub fn python_venv(dir: &Path) {
    run(
        Command::new("python3")
            .args(["-m", "venv", "venv"])
            .current_dir(dir),
        "python3 -m venv",
    );
    run(
        Command::new(dir.join("venv/bin/pip"))
            .args(["install", "--quiet", "--no-deps", "-r", "requirements.txt"])
            .current_dir(dir),
        "pip install -r requirements.txt",
    );
}

/// Marks a staging directory whose installation finished (the marker `.ci/run` writes too).
pub fn mark_complete(dir: &Path) {
    std::fs::write(dir.join("complete"), b"").expect("mark the install complete");
}

fn run(command: &mut Command, what: &str) {
    let out = command.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed (network needed once, then cached):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
