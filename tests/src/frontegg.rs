//! Frontegg's own npm packages for the tests that run them (`tests/frontegg/`: a pinned
//! `package.json` and `package-lock.json`). Installed once with `npm ci` into a cache directory
//! named after the manifests' SHA-256, so a later run finds them without the network. `.ci/run`
//! installs into the same directory (it computes the name with `sha256sum`), so CI's tests
//! never reach npm themselves.

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    process::Command,
    sync::OnceLock,
};

use sha2::{Digest, Sha256};

/// `tests/frontegg/`: the manifest, the lock file and the Node scripts.
pub fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("frontegg")
}

/// A script of `tests/frontegg/`.
pub fn script(name: &str) -> PathBuf {
    dir().join(name)
}

/// The `node_modules` directory holding the pinned packages, installing them on first use
/// (`TENANTRY_TOOLS_DIR`, else `~/.cache/tenantry-tools`, as `.ci/run` uses).
pub fn node_modules() -> PathBuf {
    static INSTALLED: OnceLock<PathBuf> = OnceLock::new();
    INSTALLED.get_or_init(install).clone()
}

fn install() -> PathBuf {
    // `cat package.json package-lock.json | sha256sum`, its first 16 hex digits (`.ci/run`).
    let mut hasher = Sha256::new();
    for file in ["package.json", "package-lock.json"] {
        hasher.update(std::fs::read(dir().join(file)).expect("read tests/frontegg's manifests"));
    }
    let digest = hasher
        .finalize()
        .iter()
        .take(8)
        .fold(String::new(), |mut hex, byte| {
            let _ = write!(hex, "{byte:02x}");
            hex
        });
    let tools = std::env::var_os("TENANTRY_TOOLS_DIR").map_or_else(
        || {
            let home = std::env::var_os("HOME").expect("HOME or TENANTRY_TOOLS_DIR");
            Path::new(&home).join(".cache").join("tenantry-tools")
        },
        PathBuf::from,
    );
    let target = tools.join(format!("frontegg-{digest}"));
    let modules = target.join("node_modules");
    if modules.join("@frontegg/client/package.json").is_file() {
        return modules;
    }
    // Installed beside the target, then renamed into place: tests in other processes may be
    // installing at the same time, and a half-written directory must never look complete.
    let staging = tools.join(format!(
        "frontegg-staging-{}",
        uuid::Uuid::now_v7().simple()
    ));
    std::fs::create_dir_all(&staging).expect("create the npm staging directory");
    for file in ["package.json", "package-lock.json"] {
        std::fs::copy(dir().join(file), staging.join(file)).expect("copy the npm manifest");
    }
    let out = Command::new("npm")
        .args([
            "ci",
            "--ignore-scripts",
            "--no-audit",
            "--no-fund",
            "--silent",
        ])
        .current_dir(&staging)
        .output()
        .expect("run npm (Node.js and npm are needed for the Frontegg SDK tests)");
    assert!(
        out.status.success(),
        "npm ci of tests/frontegg failed (network needed once, then cached in {}):\n{}",
        target.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    if std::fs::rename(&staging, &target).is_err() {
        // Another process got there first; its copy is complete (renamed whole).
        let _ = std::fs::remove_dir_all(&staging);
    }
    assert!(
        modules.join("@frontegg/client/package.json").is_file(),
        "npm ci left no @frontegg/client in {}",
        modules.display()
    );
    modules
}
