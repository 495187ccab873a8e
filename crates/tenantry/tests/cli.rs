//! The all-in-one binary as a user runs it: `tenantry serve` and `tenantry migrate`.
#![expect(
    clippy::disallowed_methods,
    reason = "these tests drive a child process synchronously; blocking sleeps are intended"
)]

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::TcpStream,
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use sea_orm::{ConnectionTrait, Database, DbBackend, Statement};
use tenantry_common::testing;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

const BIN: &str = env!("CARGO_BIN_EXE_tenantry");

/// A `tenantry` command with a clean `TENANTRY_*` environment.
fn tenantry(data_dir: &Path) -> Command {
    let mut command = Command::new(BIN);
    for (key, _) in std::env::vars() {
        if key.starts_with("TENANTRY_") || key == "OTEL_EXPORTER_OTLP_ENDPOINT" {
            command.env_remove(key);
        }
    }
    command
        .env("TENANTRY_DATA_DIR", data_dir)
        .env("TENANTRY_LOG_FORMAT", "json")
        .stdin(Stdio::null());
    command
}

fn output_of(mut command: Command) -> (i32, String, String) {
    let out = command.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The exit code and stderr of a command that must stop at start; a server that started
/// instead (the value was accepted) is killed and the test fails.
fn refused_at_start(mut command: Command) -> (i32, String) {
    // Should it start after all, it takes no fixed port from anyone.
    for key in [
        "TENANTRY_HTTP_ADDR",
        "TENANTRY_TENANT_GRPC_ADDR",
        "TENANTRY_ENTITLEMENT_GRPC_ADDR",
    ] {
        command.env(key, "127.0.0.1:0");
    }
    let mut child = command
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the configuration was accepted: the server started");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn unknown_config_key_is_refused_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let mut command = tenantry(dir.path());
    command.arg("serve").env("TENANTRY_HTTP_PORT", "8080");
    let (code, _, stderr) = output_of(command);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("unknown key `http_port`"), "{stderr}");
    // Nothing was started or written.
    assert!(std::fs::read_dir(dir.path()).unwrap().next().is_none());
}

#[test]
fn bad_config_value_is_refused_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let mut command = tenantry(dir.path());
    command
        .arg("serve")
        .env("TENANTRY_TENANT_GRPC_ADDR", "localhost-ish");
    let (code, _, stderr) = output_of(command);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("tenant_grpc_addr"), "{stderr}");

    let mut command = tenantry(dir.path());
    command.arg("serve").env(
        "TENANTRY_ENTITLEMENT_DATABASE_URL",
        "mysql://root:pw-secret@db/e",
    );
    let (code, _, stderr) = output_of(command);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("entitlement_database_url"), "{stderr}");
    assert!(!stderr.contains("pw-secret"), "secret leaked: {stderr}");

    // A misspelt level used to start a server that logged nothing at all.
    let mut command = tenantry(dir.path());
    command.arg("serve").env("TENANTRY_LOG_LEVEL", "loud");
    let (code, stderr) = refused_at_start(command);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("`log_level`"), "{stderr}");

    // An empty client ID used to be a working credential.
    let mut command = tenantry(dir.path());
    command
        .arg("serve")
        .env("TENANTRY_CLIENT_ID", "")
        .env("TENANTRY_CLIENT_SECRET", "a-secret-long-enough-for-anyone");
    let (code, stderr) = refused_at_start(command);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("`client_id` must not be empty"), "{stderr}");
    assert!(!stderr.contains("long-enough"), "secret leaked: {stderr}");
    // Nothing was started or written.
    assert!(std::fs::read_dir(dir.path()).unwrap().next().is_none());
}

struct Server {
    child: Child,
    http: String,
    tenant: String,
    entitlement: String,
    banner: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_serve(data_dir: &Path) -> Server {
    start_serve_with(tenantry(data_dir), Stdio::null())
}

/// `command` (a `tenantry` command, perhaps wrapped) running `serve` on free ports.
fn start_serve_with(mut command: Command, stderr: Stdio) -> Server {
    let http = format!("127.0.0.1:{}", testing::free_port());
    let tenant = format!("127.0.0.1:{}", testing::free_port());
    let entitlement = format!("127.0.0.1:{}", testing::free_port());
    command
        .arg("serve")
        .env("TENANTRY_HTTP_ADDR", &http)
        .env("TENANTRY_TENANT_GRPC_ADDR", &tenant)
        .env("TENANTRY_ENTITLEMENT_GRPC_ADDR", &entitlement)
        .env("TENANTRY_SHUTDOWN_GRACE_MS", "5000")
        .stdout(Stdio::piped())
        .stderr(stderr);
    let mut child = command.spawn().unwrap();
    // The banner is printed once every listener is bound.
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut banner = String::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    // The banner ends with the line naming the credential variables.
    while !banner.contains("TENANTRY_CLIENT_SECRET") {
        let mut line = String::new();
        if stdout.read_line(&mut line).unwrap() == 0 {
            panic!("tenantry exited before serving; printed: {banner}");
        }
        banner.push_str(&line);
        assert!(Instant::now() < deadline, "no banner: {banner}");
    }
    // Keep reading the rest of the banner without blocking the test on a full pipe.
    std::thread::spawn(move || {
        let mut sink = String::new();
        let _ = stdout.read_to_string(&mut sink);
    });
    std::thread::sleep(Duration::from_millis(300));
    Server {
        child,
        http,
        tenant,
        entitlement,
        banner,
    }
}

/// A plain HTTP/1.1 GET: status code and body.
fn http_get(addr: &str, path: &str) -> (u16, String) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match TcpStream::connect(addr) {
            Ok(mut stream) => {
                write!(
                    stream,
                    "GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n"
                )
                .unwrap();
                let mut response = String::new();
                stream.read_to_string(&mut response).unwrap();
                let status = response
                    .split(' ')
                    .nth(1)
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                let body = response
                    .split_once("\r\n\r\n")
                    .map(|(_, b)| b.to_owned())
                    .unwrap_or_default();
                return (status, body);
            }
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => panic!("cannot reach {addr}: {e}"),
        }
    }
}

async fn grpc_serving(addr: &str) -> ServingStatus {
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = HealthClient::new(channel);
    client
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .status()
}

fn sigterm(child: &Child) {
    let ok = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
}

fn wait_exit(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "did not exit within {within:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_runs_all_three_servers_on_sqlite_and_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = start_serve(dir.path());

    assert!(server.banner.contains(&server.http), "{}", server.banner);
    assert!(server.banner.contains(&server.tenant), "{}", server.banner);
    assert!(
        server.banner.contains(&server.entitlement),
        "{}",
        server.banner
    );
    assert!(server.banner.contains("/auth/vendor"), "{}", server.banner);
    assert!(
        server.banner.contains("Development credentials"),
        "{}",
        server.banner
    );

    let (status, _) = http_get(&server.http, "/healthz");
    assert_eq!(status, 200);
    let (status, body) = http_get(&server.http, "/readyz");
    assert_eq!(status, 200, "{body}");
    assert_eq!(grpc_serving(&server.tenant).await, ServingStatus::Serving);
    assert_eq!(
        grpc_serving(&server.entitlement).await,
        ServingStatus::Serving
    );

    // Each service has its own embedded database, migrated at start.
    assert!(dir.path().join("tenant.db").is_file());
    assert!(dir.path().join("entitlement.db").is_file());

    sigterm(&server.child);
    let status = wait_exit(&mut server.child, Duration::from_secs(20));
    assert!(status.success(), "{status:?}");

    // Development credentials are generated once and reused on the next start. The banner goes
    // to a pipe here, so it names the file instead of printing the secret.
    let first = server.banner.clone();
    drop(server);
    let second = start_serve(dir.path());
    let client_id_line = |banner: &str| {
        banner
            .lines()
            .find(|l| l.trim_start().starts_with("clientId"))
            .map(str::to_owned)
            .unwrap_or_default()
    };
    assert!(!client_id_line(&first).is_empty(), "{first}");
    assert_eq!(client_id_line(&first), client_id_line(&second.banner));
    let secret = generated_secret(dir.path());
    assert!(
        !first.contains(&secret),
        "secret printed to a pipe: {first}"
    );
}

/// A first start with nothing wrong is quiet: no WARN or ERROR line (a warning printed at
/// every start teaches operators to ignore warnings).
#[tokio::test]
async fn a_first_start_on_sqlite_logs_no_warning() {
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("stderr.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut server = start_serve_with(tenantry(dir.path()), Stdio::from(log));
    let (status, body) = http_get(&server.http, "/readyz");
    assert_eq!(status, 200, "{body}");
    sigterm(&server.child);
    let status = wait_exit(&mut server.child, Duration::from_secs(20));
    assert!(status.success(), "{status:?}");

    let logs = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        logs.contains(r#""level":"INFO""#),
        "no logs captured: {logs}"
    );
    let loud: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains(r#""level":"WARN""#) || l.contains(r#""level":"ERROR""#))
        .collect();
    assert!(loud.is_empty(), "{loud:#?}");
}

/// The secret dev mode generated into `data_dir`.
fn generated_secret(data_dir: &Path) -> String {
    let file = std::fs::read(data_dir.join("gateway-credentials.json")).unwrap();
    let stored: serde_json::Value = serde_json::from_slice(&file).unwrap();
    let secret = stored["secret"].as_str().unwrap().to_owned();
    assert!(secret.len() >= 16, "{stored}");
    secret
}

/// Reads `path` until it holds `needle`, for at most a minute.
fn wait_for_text(path: &Path, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.contains(needle) {
            return text;
        }
        assert!(Instant::now() < deadline, "`{needle}` never came: {text}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_generated_secret_is_printed_on_a_terminal_only_and_never_logged() {
    // stdout and stderr are files, as under a process manager that keeps logs.
    let dir = tempfile::tempdir().unwrap();
    let logs = tempfile::tempdir().unwrap();
    let (out_path, err_path) = (logs.path().join("out"), logs.path().join("err"));
    let mut command = tenantry(dir.path());
    command
        .arg("serve")
        .env("TENANTRY_LOG_LEVEL", "debug")
        .env("TENANTRY_HTTP_ADDR", "127.0.0.1:0")
        .env("TENANTRY_TENANT_GRPC_ADDR", "127.0.0.1:0")
        .env("TENANTRY_ENTITLEMENT_GRPC_ADDR", "127.0.0.1:0")
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap());
    let mut child = command.spawn().unwrap();
    let guard = KillOnDrop(&mut child);
    let banner = wait_for_text(&out_path, "TENANTRY_CLIENT_SECRET");
    let secret = generated_secret(dir.path());
    assert!(
        !banner.contains(&secret),
        "secret written to a file: {banner}"
    );
    let file = dir.path().join("gateway-credentials.json");
    assert!(
        banner.contains(&file.display().to_string()),
        "the banner should say where the credentials are: {banner}"
    );
    sigterm(guard.0);
    let status = wait_exit(guard.0, Duration::from_secs(20));
    assert!(status.success(), "{status:?}");
    let logged = std::fs::read_to_string(&err_path).unwrap();
    assert!(logged.contains("rest gateway listening"), "{logged}");
    assert!(!logged.contains(&secret), "secret logged: {logged}");

    // On a terminal (a pseudo-terminal from `script`), the operator sees it once.
    let mut command = Command::new("script");
    let base = tenantry(dir.path());
    for (key, value) in base.get_envs() {
        match value {
            Some(value) => command.env(key, value),
            None => command.env_remove(key),
        };
    }
    command
        .args(["-qfec", &format!("{BIN} serve"), "/dev/null"])
        .env("TENANTRY_HTTP_ADDR", "127.0.0.1:0")
        .env("TENANTRY_TENANT_GRPC_ADDR", "127.0.0.1:0")
        .env("TENANTRY_ENTITLEMENT_GRPC_ADDR", "127.0.0.1:0")
        .stdin(Stdio::piped())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(Stdio::null());
    let mut child = command.spawn().unwrap();
    let guard = KillOnDrop(&mut child);
    let banner = wait_for_text(&out_path, "TENANTRY_CLIENT_SECRET");
    assert!(
        banner.contains(&secret),
        "no secret on the terminal: {banner}"
    );
    drop(guard);
}

/// Kills the child when the test ends, however it ends.
struct KillOnDrop<'a>(&'a mut Child);

impl Drop for KillOnDrop<'_> {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A plain HTTP/1.1 request with a JSON body: status code and body.
fn http_send(
    addr: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .write_all(request_head(addr, method, path, token, body.len()).as_bytes())
        .unwrap();
    stream.write_all(body.as_bytes()).unwrap();
    read_response(stream)
}

fn request_head(addr: &str, method: &str, path: &str, token: Option<&str>, len: usize) -> String {
    let auth = token
        .map(|t| format!("authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\n{auth}content-type: application/json\r\n\
         content-length: {len}\r\nconnection: close\r\n\r\n"
    )
}

fn read_response(mut stream: TcpStream) -> (u16, String) {
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// An environment token for the development credentials in `data_dir`.
fn env_token(http: &str, data_dir: &Path) -> String {
    let file = std::fs::read(data_dir.join("gateway-credentials.json")).unwrap();
    let stored: serde_json::Value = serde_json::from_slice(&file).unwrap();
    let body = serde_json::json!({"clientId": stored["clientId"], "secret": stored["secret"]});
    let (status, body) = http_send(http, "POST", "/auth/vendor", None, &body.to_string());
    assert_eq!(status, 200, "{body}");
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    body["token"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn rest_requests_in_flight_at_sigterm_complete_and_serve_exits_within_the_grace() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = start_serve(dir.path());
    let token = env_token(&server.http, dir.path());

    // Account creations whose bodies are half sent: the gateway holds them, and each makes its
    // internal call to the tenant service only once the rest arrives, after SIGTERM.
    const IN_FLIGHT: usize = 24;
    let mut pending = Vec::new();
    for i in 0..IN_FLIGHT {
        let body = format!(r#"{{"tenantId": "in-flight-{i}", "name": "In flight {i}"}}"#);
        let (first, rest) = body.split_at(body.len() / 2);
        let mut stream = TcpStream::connect(&server.http).unwrap();
        let head = request_head(
            &server.http,
            "POST",
            "/tenants/resources/tenants/v1",
            Some(&token),
            body.len(),
        );
        stream.write_all(head.as_bytes()).unwrap();
        stream.write_all(first.as_bytes()).unwrap();
        pending.push((stream, rest.to_owned()));
    }
    std::thread::sleep(Duration::from_millis(300));
    let terminated = Instant::now();
    sigterm(&server.child);
    // Shutdown is under way once the gateway stops accepting connections.
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(&server.http).is_ok() {
        assert!(
            Instant::now() < deadline,
            "the gateway kept accepting after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(200));

    let mut statuses = Vec::new();
    for (mut stream, rest) in pending {
        stream.write_all(rest.as_bytes()).unwrap();
        statuses.push(read_response(stream));
    }
    let failed: Vec<_> = statuses
        .iter()
        .filter(|(status, _)| *status != 201)
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {IN_FLIGHT} in-flight requests failed: {failed:?}",
        failed.len()
    );

    // ...and the drain stays inside the grace period (5 s in `start_serve_with`) as a whole.
    let status = wait_exit(
        &mut server.child,
        Duration::from_secs(7).saturating_sub(terminated.elapsed()),
    );
    assert!(status.success(), "{status:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn on_one_cpu_the_single_threaded_runtime_serves_everything_and_stops_cleanly() {
    // Pinned to one CPU, the binaries run tokio's single-threaded scheduler.
    let dir = tempfile::tempdir().unwrap();
    let mut command = Command::new("taskset");
    command.args(["-c", "0", BIN]);
    let base = tenantry(dir.path());
    for (key, value) in base.get_envs() {
        match value {
            Some(value) => command.env(key, value),
            None => command.env_remove(key),
        };
    }
    command
        .env_remove("TOKIO_WORKER_THREADS")
        .stdin(Stdio::null());
    let mut server = start_serve_with(command, Stdio::null());

    let (status, body) = http_get(&server.http, "/readyz");
    assert_eq!(status, 200, "{body}");
    assert_eq!(grpc_serving(&server.tenant).await, ServingStatus::Serving);
    assert_eq!(
        grpc_serving(&server.entitlement).await,
        ServingStatus::Serving
    );
    let (status, body) = http_get(&server.http, "/openapi.json");
    assert_eq!(status, 200);
    assert!(body.contains("is-entitled-to"), "{body}");

    sigterm(&server.child);
    let status = wait_exit(&mut server.child, Duration::from_secs(20));
    assert!(status.success(), "{status:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn migrate_creates_each_service_schema_on_postgres_and_is_repeatable() {
    let dir = tempfile::tempdir().unwrap();
    let url = testing::postgres().create_database().await;
    for _ in 0..2 {
        let mut command = tenantry(dir.path());
        command
            .args(["migrate", "--service", "all"])
            .env("TENANTRY_TENANT_DATABASE_URL", &url)
            .env("TENANTRY_ENTITLEMENT_DATABASE_URL", &url);
        let (code, _, stderr) = output_of(command);
        assert_eq!(code, 0, "{stderr}");
    }
    let db = Database::connect(url).await.unwrap();
    for schema in ["tenant", "entitlement"] {
        let row = db
            .query_one_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                "SELECT count(*) AS n FROM information_schema.tables WHERE table_schema = $1",
                [schema.into()],
            ))
            .await
            .unwrap()
            .unwrap();
        let tables: i64 = row.try_get("", "n").unwrap();
        assert!(tables >= 2, "schema {schema} has {tables} tables");
    }
    // Nothing leaked into `public`.
    let row = db
        .query_one_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT count(*) AS n FROM information_schema.tables WHERE table_schema = 'public'",
        ))
        .await
        .unwrap()
        .unwrap();
    let public: i64 = row.try_get("", "n").unwrap();
    assert_eq!(public, 0);
}
