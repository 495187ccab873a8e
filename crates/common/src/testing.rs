//! Test support: a real PostgreSQL for every test run, and throwaway SQLite files.
//!
//! With `TEST_DATABASE_URL` set (a URL whose role may `CREATE DATABASE`), tests use that server.
//! Otherwise the first test process of a run starts an ephemeral cluster with `initdb`/`pg_ctl`
//! on a free loopback port; later processes of the same run (nextest runs each test in its own
//! process, `NEXTEST_RUN_ID` names the run) find it through a file in the temp directory. A
//! watchdog process stops and removes the cluster when the run's process exits. Each test gets a
//! database of its own, so tests never see each other's rows.

use std::{
    fs::{self, File},
    io::Write,
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::OnceLock,
    time::Duration,
};

use sea_orm::{ConnectionTrait, Database};

use crate::config::sqlite_url;

/// A PostgreSQL server the tests of this run share.
#[derive(Clone, Debug)]
pub struct TestPostgres {
    /// `postgres://…/postgres`, for administration.
    admin_url: String,
}

/// The run's PostgreSQL, started on first use.
pub fn postgres() -> &'static TestPostgres {
    static PG: OnceLock<TestPostgres> = OnceLock::new();
    PG.get_or_init(|| match std::env::var("TEST_DATABASE_URL") {
        Ok(url) if !url.is_empty() => TestPostgres { admin_url: url },
        _ => start_or_join_cluster().unwrap_or_else(|e| {
            panic!(
                "test PostgreSQL unavailable: {e}\n\
                 install the PostgreSQL server binaries (initdb, pg_ctl) or set TEST_DATABASE_URL"
            )
        }),
    })
}

/// Runs `sql` on the database at `database_url`: for tests that stage what no request can
/// produce on its own (another replica's commit caught half-way, a damaged row).
pub async fn execute(database_url: &str, sql: &str) {
    let conn = Database::connect(database_url.to_owned())
        .await
        .expect("connect to test database");
    conn.execute_unprepared(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    conn.close().await.expect("close test connection");
}

impl TestPostgres {
    /// Creates an empty database for one test and returns its URL.
    pub async fn create_database(&self) -> String {
        let name = format!("t_{}", uuid::Uuid::now_v7().simple());
        let admin = Database::connect(self.admin_url.clone())
            .await
            .expect("connect to test PostgreSQL");
        admin
            .execute_unprepared(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create test database");
        admin.close().await.expect("close admin connection");
        self.url_for(&name)
    }

    /// Creates a login role (password = name) and returns `(role, url)` for `database` as it.
    pub async fn create_role(&self, database_url: &str, role: &str) -> String {
        let admin = Database::connect(database_url.to_owned())
            .await
            .expect("connect to test database");
        admin
            .execute_unprepared(&format!(
                "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{role}') \
                 THEN CREATE ROLE {role} LOGIN PASSWORD '{role}'; END IF; END $$"
            ))
            .await
            .expect("create role");
        admin.close().await.expect("close admin connection");
        let (prefix, rest) = database_url
            .split_once("://")
            .expect("database URL has a scheme");
        let host_and_db = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
        format!("{prefix}://{role}:{role}@{host_and_db}")
    }

    /// The URL of database `name` on this server.
    pub fn url_for(&self, name: &str) -> String {
        let (base, _db) = self
            .admin_url
            .rsplit_once('/')
            .expect("admin URL names a database");
        let query = self
            .admin_url
            .split_once('?')
            .map(|(_, q)| format!("?{q}"))
            .unwrap_or_default();
        format!("{base}/{name}{query}")
    }

    /// The administrative URL (database `postgres`).
    pub fn admin_url(&self) -> &str {
        &self.admin_url
    }

    /// The `host:port` the server listens on.
    pub fn address(&self) -> String {
        let after_at = self.admin_url.rsplit_once('@').map_or_else(
            || self.admin_url.split_once("://").map_or("", |(_, r)| r),
            |(_, r)| r,
        );
        after_at.split('/').next().unwrap_or_default().to_owned()
    }
}

/// A SQLite database in a temporary directory, removed when the returned guard drops.
pub fn sqlite() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = sqlite_url(&dir.path().join("test.db"));
    (dir, url)
}

/// A directory on a tmpfs of `bytes` bytes, for storage-exhaustion tests: [`SizeLimitedDir::fill`]
/// takes the remaining space with a filler file, [`SizeLimitedDir::free`] gives it back.
/// Mounting needs root (CI runs as root); unmounted when dropped.
#[derive(Debug)]
pub struct SizeLimitedDir {
    dir: tempfile::TempDir,
}

impl SizeLimitedDir {
    /// Mounts the tmpfs, or explains why it cannot.
    pub fn mount(bytes: u64) -> Result<Self, String> {
        let dir = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
        let output = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={bytes},mode=0700"),
                "tmpfs",
            ])
            .arg(dir.path())
            .output()
            .map_err(|e| format!("run mount: {e}"))?;
        if !output.status.success() {
            return Err(format!(
                "mount -t tmpfs failed (root is needed): {}",
                String::from_utf8_lossy(&output.stderr).trim()
            ));
        }
        Ok(Self { dir })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    fn filler(&self) -> PathBuf {
        self.dir.path().join("filler")
    }

    /// Writes a filler file until the file system refuses (ENOSPC): no byte is left.
    pub fn fill(&self) {
        let mut file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.filler())
            .expect("open filler");
        let chunk = vec![0xa5_u8; 4096];
        loop {
            match file.write(&chunk) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(28) => break,
                Err(e) => panic!("fill {}: {e}", self.path().display()),
            }
        }
        // Byte-sized tails, so not even a partial page is left.
        while let Ok(1) = file.write(&chunk[..1]) {}
    }

    /// Removes the filler file.
    pub fn free(&self) {
        fs::remove_file(self.filler()).expect("remove filler");
    }
}

impl Drop for SizeLimitedDir {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// A free loopback port (bound and released; callers bind it again at once).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free loopback port")
}

fn start_or_join_cluster() -> Result<TestPostgres, String> {
    let run = std::env::var("NEXTEST_RUN_ID")
        .ok()
        .filter(|r| !r.is_empty());
    // Under nextest the runner (our parent) outlives every test process of the run.
    let (key, watched_pid) = match run {
        Some(run) => (run, std::os::unix::process::parent_id()),
        None => (format!("pid{}", std::process::id()), std::process::id()),
    };
    let base = std::env::temp_dir().join(format!("tenantry-pg-{key}"));
    fs::create_dir_all(&base).map_err(|e| format!("create {}: {e}", base.display()))?;
    let lock = File::create(base.join("lock")).map_err(|e| format!("lock file: {e}"))?;
    lock.lock().map_err(|e| format!("lock: {e}"))?;
    let ready = base.join("ready");
    if let Ok(addr) = fs::read_to_string(&ready)
        && let Ok(addr) = addr.trim().parse::<SocketAddr>()
        && TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok()
    {
        return Ok(cluster_at(addr));
    }
    let addr = start_cluster(&base, watched_pid)?;
    fs::write(&ready, addr.to_string()).map_err(|e| format!("write ready file: {e}"))?;
    Ok(cluster_at(addr))
}

/// A PostgreSQL cluster of one test's own, for tests that stop and restart the server (the
/// shared one must stay up for the other tests). Stopped and removed on drop.
#[derive(Debug)]
pub struct DedicatedPostgres {
    base: PathBuf,
    addr: SocketAddr,
    root: bool,
    pg_ctl: PathBuf,
}

impl DedicatedPostgres {
    /// Starts a fresh cluster on a free loopback port.
    pub fn start() -> Self {
        let base = std::env::temp_dir().join(format!(
            "tenantry-pg-dedicated-{}",
            uuid::Uuid::now_v7().simple()
        ));
        fs::create_dir_all(&base).expect("create cluster dir");
        let addr = start_cluster(&base, std::process::id())
            .unwrap_or_else(|e| panic!("dedicated test PostgreSQL: {e}"));
        Self {
            base,
            addr,
            root: is_root(),
            pg_ctl: pg_bin("pg_ctl").expect("pg_ctl"),
        }
    }

    /// The server, for creating databases and roles on it.
    pub fn server(&self) -> TestPostgres {
        cluster_at(self.addr)
    }

    /// Stops the server, disconnecting every client and aborting open transactions. Committed
    /// data is kept (a fast shutdown: with `synchronous_commit=off` an immediate one could lose
    /// the last commits, which is not the outage being simulated).
    pub fn stop(&self) {
        let mut stop = pg_command(self.root, &self.pg_ctl);
        stop.arg("-D")
            .arg(self.base.join("data"))
            .args(["-m", "fast", "-w", "stop"]);
        run(stop, "pg_ctl stop").expect("stop dedicated PostgreSQL");
    }

    /// Starts the stopped server again on the same port.
    pub fn restart(&self) {
        let data = self.base.join("data");
        let mut start = pg_command(self.root, &self.pg_ctl);
        start
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(data.join("server.log"))
            .args([
                "-w",
                "-t",
                "60",
                "-o",
                &server_options(self.addr.port()),
                "start",
            ]);
        start.stdout(Stdio::null());
        run(start, "pg_ctl start").expect("restart dedicated PostgreSQL");
    }
}

impl Drop for DedicatedPostgres {
    fn drop(&mut self) {
        let mut stop = pg_command(self.root, &self.pg_ctl);
        stop.arg("-D")
            .arg(self.base.join("data"))
            .args(["-m", "immediate", "stop"]);
        let _ = stop
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = fs::remove_dir_all(&self.base);
    }
}

fn server_options(port: u16) -> String {
    format!(
        "-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories='' \
         -c fsync=off -c synchronous_commit=off -c full_page_writes=off \
         -c max_connections=400 -c shared_buffers=64MB"
    )
}

fn cluster_at(addr: SocketAddr) -> TestPostgres {
    TestPostgres {
        admin_url: format!("postgres://postgres@{addr}/postgres"),
    }
}

fn pg_bin(name: &str) -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return Ok(candidate);
            }
        }
    }
    let mut versions: Vec<PathBuf> = fs::read_dir("/usr/lib/postgresql")
        .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    versions.sort();
    versions
        .into_iter()
        .rev()
        .map(|v| v.join("bin").join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| format!("`{name}` not found on PATH or under /usr/lib/postgresql/*/bin"))
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// `initdb` refuses to run as root: as root, run the PostgreSQL tools as `postgres`.
fn pg_command(root: bool, bin: &Path) -> Command {
    if root {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bin);
        c
    } else {
        Command::new(bin)
    }
}

fn run(mut command: Command, what: &str) -> Result<(), String> {
    let out = command
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{what}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{what} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn start_cluster(base: &Path, watched_pid: u32) -> Result<SocketAddr, String> {
    let initdb = pg_bin("initdb")?;
    let pg_ctl = pg_bin("pg_ctl")?;
    let root = is_root();
    let data = base.join("data");
    if data.exists() {
        fs::remove_dir_all(&data).map_err(|e| format!("remove stale data dir: {e}"))?;
    }
    fs::create_dir_all(&data).map_err(|e| format!("create data dir: {e}"))?;
    if root {
        run(
            {
                let mut c = Command::new("chown");
                c.args(["-R", "postgres:postgres"]).arg(base);
                c
            },
            "chown data dir to postgres",
        )?;
    }
    let mut init = pg_command(root, &initdb);
    init.arg("-D").arg(&data).args([
        "-U",
        "postgres",
        "--auth=trust",
        "--encoding=UTF8",
        "--locale=C",
        "--no-sync",
    ]);
    run(init, "initdb")?;

    let mut last_error = String::new();
    for _ in 0..5 {
        let port = free_port();
        let options = server_options(port);
        let mut start = pg_command(root, &pg_ctl);
        start
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(data.join("server.log"))
            .args(["-w", "-t", "60", "-o", &options, "start"]);
        start.stdout(Stdio::null()).stderr(Stdio::piped());
        match run(start, "pg_ctl start") {
            Ok(()) => {
                spawn_watchdog(root, &pg_ctl, base, &data, watched_pid)?;
                return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
            }
            Err(e) => last_error = e,
        }
    }
    let log = fs::read_to_string(data.join("server.log")).unwrap_or_default();
    Err(format!("{last_error}\n{log}"))
}

/// A detached shell that waits for the run to end, then stops and deletes the cluster.
fn spawn_watchdog(
    root: bool,
    pg_ctl: &Path,
    base: &Path,
    data: &Path,
    watched_pid: u32,
) -> Result<(), String> {
    let stop = if root {
        format!(
            "runuser -u postgres -- '{}' -D '{}' -m immediate stop",
            pg_ctl.display(),
            data.display()
        )
    } else {
        format!(
            "'{}' -D '{}' -m immediate stop",
            pg_ctl.display(),
            data.display()
        )
    };
    let script = format!(
        "while kill -0 {watched_pid} 2>/dev/null; do sleep 1; done; {stop} >/dev/null 2>&1; rm -rf '{}'",
        base.display()
    );
    let mut file = File::create(base.join("watchdog.sh")).map_err(|e| e.to_string())?;
    file.write_all(script.as_bytes())
        .map_err(|e| e.to_string())?;
    // setsid: leave the test's process group so a runner cleaning it up does not take the
    // watchdog along; null stdio so the runner does not wait for our pipes to close.
    Command::new("setsid")
        .arg("sh")
        .arg(base.join("watchdog.sh"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("spawn watchdog: {e}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_for_replaces_the_database_name() {
        let pg = TestPostgres {
            admin_url: "postgres://postgres@127.0.0.1:5555/postgres".into(),
        };
        assert_eq!(pg.url_for("t_1"), "postgres://postgres@127.0.0.1:5555/t_1");
        assert_eq!(pg.address(), "127.0.0.1:5555");
    }
}
