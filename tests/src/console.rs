//! The console's browser journey tools: Selenium (PyPI, pinned in
//! `tests/console/requirements.txt`) and axe-core (npm, pinned by
//! `tests/console/package-lock.json`), installed once into `console-{hash}` under the tools
//! directory — the directory `.ci/run` installs into — and Debian's `chromium` and
//! `chromium-driver`, which must be installed (`.ci/run` installs them with apt).

use std::{
    io::Write as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::OnceLock,
};

/// `tests/console/`.
pub fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("console")
}

fn tools() -> PathBuf {
    static INSTALLED: OnceLock<PathBuf> = OnceLock::new();
    INSTALLED
        .get_or_init(|| {
            crate::tools::install_once(
                "console",
                &dir(),
                &["package.json", "package-lock.json", "requirements.txt"],
                "complete",
                |staging| {
                    crate::tools::npm_ci(staging);
                    crate::tools::python_venv(staging);
                    crate::tools::mark_complete(staging);
                },
            )
        })
        .clone()
}

/// The Chromium and chromium-driver binaries; a clear failure when they are missing (the
/// browser test must never pass without a browser).
pub fn browser() -> (PathBuf, PathBuf) {
    let find = |names: &[&str]| {
        names
            .iter()
            .map(|n| Path::new("/usr/bin").join(n))
            .find(|p| p.is_file())
    };
    let chromium = find(&["chromium", "chromium-browser", "google-chrome"]);
    let driver = find(&["chromedriver", "chromium-driver"]);
    match (chromium, driver) {
        (Some(c), Some(d)) => (c, d),
        _ => panic!(
            "the console's browser test needs Chromium and its WebDriver: \
             `apt-get install chromium chromium-driver` (.ci/run installs them)"
        ),
    }
}

/// Runs `tests/console/journey.py` with `input` on its stdin; its stdout on success, else a
/// panic with its output.
pub fn run_journey(input: &serde_json::Value) -> String {
    let tools = tools();
    let mut child = Command::new(tools.join("venv/bin/python"))
        .arg(dir().join("journey.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the console journey (python3)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.to_string().as_bytes())
        .expect("write the journey's input");
    let out = child.wait_with_output().expect("wait for the journey");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    // The journey's timeline, shown with the test's output.
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success(),
        "the console journey failed:\n{}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// axe-core's browser bundle.
pub fn axe_js() -> PathBuf {
    tools().join("node_modules/axe-core/axe.min.js")
}
