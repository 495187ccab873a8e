//! Frontegg's own npm packages for the tests that run them (`tests/frontegg/`: a pinned
//! `package.json` and `package-lock.json`). Installed once with `npm ci` into a cache directory
//! named after the manifests' SHA-256, so a later run finds them without the network. `.ci/run`
//! installs into the same directory (it computes the name with `sha256sum`), so CI's tests
//! never reach npm themselves.

use std::{
    path::{Path, PathBuf},
    sync::OnceLock,
};

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
    crate::tools::install_once(
        "frontegg",
        &dir(),
        &["package.json", "package-lock.json"],
        "node_modules/@frontegg/client/package.json",
        crate::tools::npm_ci,
    )
    .join("node_modules")
}
