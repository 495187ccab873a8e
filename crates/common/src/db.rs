//! Database connection and database-error classification, shared by both services.
//!
//! PostgreSQL in production (each service in its own schema, put on `search_path` so neither
//! service's SQL names a schema), SQLite as the zero-setup default.

use std::{sync::Arc, time::Duration};

use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend, DbErr, RuntimeErr,
    SqlErr, Statement, TransactionTrait, sqlx,
};
use tokio::sync::watch;

/// Which engine a URL names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    Postgres,
    Sqlite,
}

impl Engine {
    pub fn of(url: &str) -> Option<Self> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Some(Self::Postgres)
        } else if url.starts_with("sqlite:") {
            Some(Self::Sqlite)
        } else {
            None
        }
    }
}

/// How to reach one service's database.
#[derive(Clone, Debug)]
pub struct DbSettings {
    pub url: String,
    /// The service's own schema (PostgreSQL only).
    pub schema: String,
    pub max_connections: u32,
    pub acquire_timeout: Duration,
    /// Shown in `pg_stat_activity`.
    pub application_name: String,
}

impl DbSettings {
    /// The tenant service's database, as configured.
    pub fn tenant(config: &crate::Config) -> Self {
        Self::service(
            config,
            config.tenant_database(),
            &config.tenant_db_schema,
            "tenantry-tenant",
        )
    }

    /// The entitlement service's database, as configured.
    pub fn entitlement(config: &crate::Config) -> Self {
        Self::service(
            config,
            config.entitlement_database(),
            &config.entitlement_db_schema,
            "tenantry-entitlement",
        )
    }

    fn service(config: &crate::Config, url: String, schema: &str, application: &str) -> Self {
        Self {
            url,
            schema: schema.to_owned(),
            max_connections: config.db_max_connections,
            acquire_timeout: config.db_acquire_timeout(),
            application_name: application.to_owned(),
        }
    }
}

/// Connects, creating the SQLite file's directory or the PostgreSQL schema when missing, and
/// pins the session's `search_path` to the service's schema.
pub async fn connect(settings: &DbSettings) -> Result<DatabaseConnection, DbErr> {
    let engine = Engine::of(&settings.url).ok_or_else(|| {
        DbErr::Custom("database URL must start with postgres://, postgresql:// or sqlite:".into())
    })?;
    match engine {
        Engine::Postgres => ensure_schema(settings).await?,
        Engine::Sqlite => prepare_sqlite_files(&settings.url)?,
    }
    let mut options = ConnectOptions::new(settings.url.clone());
    options
        .max_connections(settings.max_connections)
        .min_connections(0)
        .acquire_timeout(settings.acquire_timeout)
        .connect_timeout(settings.acquire_timeout)
        // A ping on every acquire was a round trip more on every transaction (a consumption
        // group's single statement became two); only a connection idle long enough for the
        // server, a proxy or a firewall to have dropped it is pinged. A hot one found broken
        // fails its statement, as it would if it broke right after a ping.
        .test_before_acquire_if_idle_for(Duration::from_secs(30))
        .sqlx_logging(false);
    match engine {
        Engine::Postgres => {
            options
                .set_schema_search_path(settings.schema.clone())
                .set_application_name(settings.application_name.clone())
                .map_sqlx_postgres_pool_opts(|o| {
                    o.after_release(|conn, _| Box::pin(outside_transaction(conn)))
                });
        }
        Engine::Sqlite => {
            // WAL lets readers proceed during a write; the busy timeout turns lock contention into
            // waiting rather than SQLITE_BUSY errors; foreign keys are off by default in SQLite.
            options
                .map_sqlx_sqlite_opts(|o| {
                    o.journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
                        .synchronous(sqlx::sqlite::SqliteSynchronous::Normal)
                        .busy_timeout(Duration::from_secs(10))
                        .foreign_keys(true)
                })
                .map_sqlx_sqlite_pool_opts(|o| {
                    o.after_release(|conn, _| Box::pin(outside_transaction(conn)))
                });
        }
    }
    Database::connect(options).await
}

/// Whether a connection coming back to the pool may be reused: only outside a transaction.
/// One whose COMMIT or ROLLBACK failed is still inside one as far as the driver knows (SQLite
/// rolls a transaction back by itself on a full disk or an I/O error, so the driver's ROLLBACK
/// fails too): reused, its next "transaction" would be a savepoint inside one that never
/// commits, acknowledging writes that a restart discards. Such a connection is closed instead.
async fn outside_transaction<C: sqlx::Connection>(conn: &mut C) -> Result<bool, sqlx::Error> {
    if conn.is_in_transaction() {
        // A transaction dropped without COMMIT queues its ROLLBACK on the connection; a round
        // trip lets it run before we judge.
        conn.ping().await?;
    }
    if conn.is_in_transaction() {
        tracing::warn!("a pooled database connection is still inside a transaction; closing it");
        return Ok(false);
    }
    Ok(true)
}

async fn ensure_schema(settings: &DbSettings) -> Result<(), DbErr> {
    let mut options = ConnectOptions::new(settings.url.clone());
    options
        .max_connections(1)
        .acquire_timeout(settings.acquire_timeout)
        .connect_timeout(settings.acquire_timeout)
        .sqlx_logging(false);
    let admin = Database::connect(options).await?;
    // Replicas starting together on a fresh database would race: CREATE SCHEMA IF NOT EXISTS
    // is not atomic in PostgreSQL (the loser fails on pg_namespace's unique index). An advisory
    // lock per schema name serializes the creators; each looks again once it holds the lock.
    let txn = admin.begin().await?;
    txn.execute_raw(Statement::from_sql_and_values(
        DbBackend::Postgres,
        "SELECT pg_advisory_xact_lock(hashtext('tenantry.schema.' || $1))",
        [settings.schema.clone().into()],
    ))
    .await?;
    // Look before creating: a role without CREATE on the database may still own its schema
    // (created by an operator), and CREATE SCHEMA IF NOT EXISTS checks the privilege first.
    let exists = txn
        .query_one_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT 1 AS one FROM pg_namespace WHERE nspname = $1",
            [settings.schema.clone().into()],
        ))
        .await?
        .is_some();
    if !exists {
        let sql = format!(
            "CREATE SCHEMA IF NOT EXISTS {}",
            quote_ident(&settings.schema)
        );
        txn.execute_unprepared(&sql).await?;
    }
    txn.commit().await?;
    admin.close().await
}

/// Prepares a SQLite database's files: its directory created owner-only (0700), the database
/// file created owner-only (0600) before SQLite opens it (its `-wal` and `-shm` files inherit
/// that), and files an older version left readable by others tightened to 0600.
fn prepare_sqlite_files(url: &str) -> Result<(), DbErr> {
    let path = url
        .trim_start_matches("sqlite://")
        .trim_start_matches("sqlite:");
    let path = path.split('?').next().unwrap_or_default();
    if path.is_empty() || path == ":memory:" {
        return Ok(());
    }
    let path = std::path::Path::new(path);
    let fail = |what: &str, p: &std::path::Path, e: std::io::Error| {
        DbErr::Custom(format!("cannot {what} {}: {e}", p.display()))
    };
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
    {
        crate::files::create_private_dir(dir)
            .map_err(|e| fail("create database directory", dir, e))?;
    }
    crate::files::create_private_file(path).map_err(|e| fail("create database file", path, e))?;
    for suffix in ["", "-wal", "-shm"] {
        let mut file = path.as_os_str().to_owned();
        file.push(suffix);
        let file = std::path::PathBuf::from(file);
        crate::files::restrict_to_owner(&file)
            .map_err(|e| fail("restrict permissions of", &file, e))?;
    }
    Ok(())
}

/// Applies a service's migrations on `conn`. On PostgreSQL they run in one transaction holding an
/// advisory lock named after the schema and migration table, so replicas (or a migration Job and
/// a replica) starting together do not race; SQLite has a single writer anyway.
pub async fn migrate<M: sea_orm_migration::MigratorTrait>(
    conn: &DatabaseConnection,
) -> Result<(), DbErr> {
    if conn.get_database_backend() != DbBackend::Postgres {
        return M::up(conn, None).await;
    }
    let txn = conn.begin().await?;
    txn.execute_raw(Statement::from_sql_and_values(
        DbBackend::Postgres,
        "SELECT pg_advisory_xact_lock(hashtext(current_schema() || '.' || $1))",
        [M::migration_table_name().to_string().into()],
    ))
    .await?;
    M::up(&txn, None).await?;
    txn.commit().await
}

/// A PostgreSQL array literal (`{"a","b",NULL}`), bound as ONE text parameter and cast to the
/// column's array type in SQL (`$1::text[]`): sea-orm binds no arrays here, and one array
/// parameter costs the server one parse where a thousand placeholders cost a thousand binds
/// and a plan that grows with the list.
#[derive(Debug)]
pub struct PgArrayLiteral(String);

impl PgArrayLiteral {
    /// For `items` elements of about `width` bytes each.
    pub fn with_capacity(items: usize, width: usize) -> Self {
        let mut s = String::with_capacity(2 + items * (width + 3));
        s.push('{');
        Self(s)
    }

    /// Every item of `values`, quoted.
    pub fn of<'a>(values: impl ExactSizeIterator<Item = &'a str>) -> sea_orm::Value {
        let mut array = Self::with_capacity(values.len(), 24);
        for v in values {
            array.push(Some(v));
        }
        array.finish()
    }

    fn sep(&mut self) {
        if self.0.len() > 1 {
            self.0.push(',');
        }
    }

    /// A string element (quoted and escaped), or NULL.
    pub fn push(&mut self, value: Option<&str>) {
        self.sep();
        match value {
            None => self.0.push_str("NULL"),
            Some(v) => {
                self.0.push('"');
                // Runs without a quote or backslash are copied whole (a JSON value is mostly
                // such runs); both are one byte, so `i + 1` is a character boundary.
                let mut rest = v;
                while let Some(i) = rest.find(['"', '\\']) {
                    self.0.push_str(&rest[..i]);
                    self.0.push('\\');
                    self.0.push_str(&rest[i..=i]);
                    rest = &rest[i + 1..];
                }
                self.0.push_str(rest);
                self.0.push('"');
            }
        }
    }

    /// An element written by `write` as-is: only for forms that never need quoting (UUIDs,
    /// ISO 8601 times, numbers).
    pub fn push_plain(&mut self, write: impl FnOnce(&mut String)) {
        self.sep();
        write(&mut self.0);
    }

    /// A NULL element.
    pub fn push_null(&mut self) {
        self.sep();
        self.0.push_str("NULL");
    }

    /// A UUID element (never needs quoting).
    pub fn push_uuid(&mut self, id: uuid::Uuid) {
        self.push_plain(|s| {
            s.push_str(
                id.hyphenated()
                    .encode_lower(&mut uuid::Uuid::encode_buffer()),
            )
        });
    }

    /// An integer element.
    pub fn push_int(&mut self, value: i64) {
        self.push_plain(|s| s.push_str(itoa::Buffer::new().format(value)));
    }

    /// A time element, ISO 8601 in UTC with microseconds (PostgreSQL's precision), or NULL.
    pub fn push_time(&mut self, at: Option<chrono::DateTime<chrono::Utc>>) {
        match at {
            None => self.push_null(),
            Some(t) => self.push_plain(|s| push_iso_micros(s, t)),
        }
    }

    /// The text parameter.
    pub fn finish(mut self) -> sea_orm::Value {
        self.0.push('}');
        sea_orm::Value::from(self.0)
    }
}

/// `YYYY-MM-DDTHH:MM:SS.ffffffZ`, written digit by digit (`write!` cost more than the rest of
/// a row's encoding put together); years outside 0..=9999 (which chrono allows and nothing
/// here produces) fall back to chrono's own formatting.
fn push_iso_micros(s: &mut String, t: chrono::DateTime<chrono::Utc>) {
    use chrono::{Datelike, Timelike};
    let year = t.year();
    if !(0..=9999).contains(&year) {
        s.push_str(&t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true));
        return;
    }
    let mut out = [0u8; 27];
    let mut put = |at: usize, width: usize, mut value: u32| {
        for i in (at..at + width).rev() {
            out[i] = b'0' + (value % 10) as u8;
            value /= 10;
        }
    };
    put(0, 4, year.unsigned_abs());
    put(5, 2, t.month());
    put(8, 2, t.day());
    put(11, 2, t.hour());
    put(14, 2, t.minute());
    put(17, 2, t.second());
    put(20, 6, t.timestamp_subsec_micros().min(999_999));
    for (i, c) in [
        (4, b'-'),
        (7, b'-'),
        (10, b'T'),
        (13, b':'),
        (16, b':'),
        (19, b'.'),
        (26, b'Z'),
    ] {
        out[i] = c;
    }
    s.extend(out.iter().map(|&b| char::from(b)));
}

/// Quotes a PostgreSQL identifier.
pub fn quote_ident(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// What a database error means for the caller. Storage layers map this to their domain error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DbFailure {
    /// A unique constraint refused the write; carries the constraint or index name when known.
    UniqueViolation(String),
    /// A foreign key refused the write.
    ForeignKeyViolation(String),
    /// A concurrent transaction won (serialization failure or deadlock): retrying may succeed.
    Conflict,
    /// The database cannot be reached or is shutting down: UNAVAILABLE, retry later.
    Unavailable,
    /// The database's storage is full (SQLite FULL, PostgreSQL 53100): nothing was written.
    StorageFull,
    /// The database's storage failed (SQLite IOERR, PostgreSQL 58030 and the other class 53
    /// resource errors): nothing was written.
    StorageFailed,
    /// Anything else: a bug or a broken database; logged, returned as INTERNAL.
    Other,
}

/// Classifies a database error without exposing its SQL text.
#[expect(
    clippy::wildcard_enum_match_arm,
    reason = "DbErr is non_exhaustive; every other kind is not retryable"
)]
pub fn classify(err: &DbErr) -> DbFailure {
    match err.sql_err() {
        Some(SqlErr::UniqueConstraintViolation(detail)) => {
            return DbFailure::UniqueViolation(constraint_name(err).unwrap_or(detail));
        }
        Some(SqlErr::ForeignKeyConstraintViolation(detail)) => {
            return DbFailure::ForeignKeyViolation(constraint_name(err).unwrap_or(detail));
        }
        Some(_) | None => {}
    }
    let runtime = match err {
        DbErr::ConnectionAcquire(_) | DbErr::Conn(_) => return DbFailure::Unavailable,
        DbErr::Exec(r) | DbErr::Query(r) => r,
        _ => return DbFailure::Other,
    };
    let RuntimeErr::SqlxError(sqlx_err) = runtime else {
        return DbFailure::Other;
    };
    classify_sqlx(sqlx_err)
}

/// Classifies an error from the sqlx connection used directly (LISTEN/NOTIFY, COPY).
#[expect(
    clippy::wildcard_enum_match_arm,
    reason = "sqlx::Error is non_exhaustive; every other kind is not retryable"
)]
pub fn classify_sqlx(err: &sqlx::Error) -> DbFailure {
    match err {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_) => DbFailure::Unavailable,
        sqlx::Error::Database(db) => {
            let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
            if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some()
                && let Some(fault) = sqlite_storage_fault(&code)
            {
                return fault;
            }
            match code.as_str() {
                "53100" => DbFailure::StorageFull,
                "58030" => DbFailure::StorageFailed,
                "40001" | "40P01" => DbFailure::Conflict,
                // SQLITE_BUSY / SQLITE_LOCKED: the busy timeout ran out.
                "5" | "6" | "517" | "262" => DbFailure::Conflict,
                "23505" | "2067" | "1555" => {
                    DbFailure::UniqueViolation(db.constraint().unwrap_or_default().to_owned())
                }
                "23503" | "787" => {
                    DbFailure::ForeignKeyViolation(db.constraint().unwrap_or_default().to_owned())
                }
                // Class 08 connection exceptions, admin shutdown, cannot connect now, too many
                // connections, read-only standby after a failover.
                c if c.starts_with("08")
                    || c == "57P01"
                    || c == "57P02"
                    || c == "57P03"
                    || c == "53300"
                    || c == "25006" =>
                {
                    DbFailure::Unavailable
                }
                // Class 53 insufficient resources: out of memory, configuration limits.
                c if c.starts_with("53") => DbFailure::StorageFailed,
                _ => DbFailure::Other,
            }
        }
        _ => DbFailure::Other,
    }
}

/// SQLite's (extended) result code as a storage fault: SQLITE_FULL (13) and the SQLITE_IOERR
/// family (10 in the low byte).
fn sqlite_storage_fault(code: &str) -> Option<DbFailure> {
    let code: u32 = code.parse().ok()?;
    match code & 0xff {
        13 => Some(DbFailure::StorageFull),
        10 => Some(DbFailure::StorageFailed),
        _ => None,
    }
}

/// Which way a database's storage refused a write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StorageFault {
    /// Out of space.
    Full,
    /// An I/O error or another exhausted resource.
    Failed,
}

impl StorageFault {
    /// The fault a classified error names, if any.
    pub fn of(failure: &DbFailure) -> Option<Self> {
        match failure {
            DbFailure::StorageFull => Some(Self::Full),
            DbFailure::StorageFailed => Some(Self::Failed),
            DbFailure::UniqueViolation(_)
            | DbFailure::ForeignKeyViolation(_)
            | DbFailure::Conflict
            | DbFailure::Unavailable
            | DbFailure::Other => None,
        }
    }
}

/// An error that says by its type (never by its text) whether storage refused a write.
pub trait StorageFaultSource {
    fn storage_fault(&self) -> Option<StorageFault>;
}

/// Whether a service's storage takes writes: a write refused for a [`StorageFault`] sets the
/// fault (the service reports NOT_SERVING), a probe write that commits clears it. Cheap to clone.
#[derive(Clone, Debug)]
pub struct StorageHealth {
    fault: Arc<watch::Sender<Option<StorageFault>>>,
}

impl Default for StorageHealth {
    fn default() -> Self {
        Self::new()
    }
}

impl StorageHealth {
    pub fn new() -> Self {
        Self {
            fault: Arc::new(watch::channel(None).0),
        }
    }

    /// Records a refused write.
    pub fn fault(&self, fault: StorageFault) {
        self.fault.send_if_modified(|current| {
            let changed = current.is_none();
            if changed {
                tracing::error!(
                    ?fault,
                    "database storage refused a write; reporting NOT_SERVING"
                );
            }
            *current = Some(fault);
            changed
        });
    }

    /// Records `err`'s fault, if it names one: a background task's refused write makes the
    /// service unready as a request's does, until a probe write commits.
    pub fn report(&self, err: &impl StorageFaultSource) {
        if let Some(fault) = err.storage_fault() {
            self.fault(fault);
        }
    }

    /// Records a write that committed.
    pub fn recovered(&self) {
        self.fault.send_if_modified(|current| {
            let changed = current.is_some();
            if changed {
                tracing::info!("database storage takes writes again; reporting SERVING");
            }
            *current = None;
            changed
        });
    }

    /// The current fault, if any.
    pub fn current(&self) -> Option<StorageFault> {
        *self.fault.borrow()
    }

    /// Follows the fault as it changes.
    pub fn subscribe(&self) -> watch::Receiver<Option<StorageFault>> {
        self.fault.subscribe()
    }
}

/// The table a storage probe writes, created by each service's migrations.
pub const STORAGE_PROBE_TABLE: &str = "storage_probe";

/// One write that must find new space to commit: a 64 KiB incompressible row replacing the
/// last one in [`STORAGE_PROBE_TABLE`]. Run while a [`StorageFault`] stands, to see it end.
pub async fn probe_write(conn: &DatabaseConnection) -> Result<(), DbErr> {
    let sql = if conn.get_database_backend() == DbBackend::Postgres {
        "INSERT INTO storage_probe (id, filler) \
             SELECT 1, decode(string_agg(md5(random()::text), ''), 'hex') \
             FROM generate_series(1, 4096) \
             ON CONFLICT (id) DO UPDATE SET filler = excluded.filler"
    } else {
        "INSERT INTO storage_probe (id, filler) VALUES (1, randomblob(65536)) \
         ON CONFLICT (id) DO UPDATE SET filler = excluded.filler"
    };
    conn.execute_unprepared(sql).await.map(|_| ())
}

#[expect(
    clippy::wildcard_enum_match_arm,
    reason = "only database errors carry a constraint name"
)]
fn constraint_name(err: &DbErr) -> Option<String> {
    let (DbErr::Exec(RuntimeErr::SqlxError(e)) | DbErr::Query(RuntimeErr::SqlxError(e))) = err
    else {
        return None;
    };
    match e.as_ref() {
        sqlx::Error::Database(db) => db.constraint().map(str::to_owned),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use chrono::{SecondsFormat, TimeZone, Utc};

    use super::*;

    #[test]
    fn timestamps_are_written_as_chrono_writes_them() {
        let cases = [
            Utc.timestamp_opt(0, 0).unwrap(),
            Utc.timestamp_opt(1_796_230_157, 138_944_000).unwrap(),
            Utc.with_ymd_and_hms(9999, 12, 31, 23, 59, 59).unwrap()
                + chrono::Duration::microseconds(999_999),
            Utc.with_ymd_and_hms(1, 2, 3, 4, 5, 6).unwrap() + chrono::Duration::microseconds(7),
            Utc.with_ymd_and_hms(12_000, 1, 1, 0, 0, 0).unwrap(),
        ];
        for t in cases {
            let mut s = String::new();
            push_iso_micros(&mut s, t);
            assert_eq!(s, t.to_rfc3339_opts(SecondsFormat::Micros, true), "{t:?}");
        }
    }

    #[test]
    fn array_literals_quote_strings_and_keep_plain_elements() {
        let mut a = PgArrayLiteral::with_capacity(4, 8);
        a.push(Some(r#"a"b\c"#));
        a.push(None);
        a.push_plain(|s| s.push_str("2026-01-01T00:00:00.000000Z"));
        a.push_null();
        assert_eq!(
            a.finish(),
            sea_orm::Value::from(r#"{"a\"b\\c",NULL,2026-01-01T00:00:00.000000Z,NULL}"#.to_owned())
        );
        assert_eq!(
            PgArrayLiteral::of(["x", "y"].into_iter()),
            sea_orm::Value::from(r#"{"x","y"}"#.to_owned())
        );
        assert_eq!(
            PgArrayLiteral::of([r#"ö"\"é\"#, r#"""#, ""].into_iter()),
            sea_orm::Value::from(r#"{"ö\"\\\"é\\","\"",""}"#.to_owned())
        );
    }

    #[test]
    fn engine_is_recognised_from_the_url() {
        assert_eq!(Engine::of("postgres://u@h/db"), Some(Engine::Postgres));
        assert_eq!(Engine::of("postgresql://u@h/db"), Some(Engine::Postgres));
        assert_eq!(
            Engine::of("sqlite://./data/x.db?mode=rwc"),
            Some(Engine::Sqlite)
        );
        assert_eq!(Engine::of("mysql://x"), None);
    }

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote_ident("tenant"), "\"tenant\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }

    #[test]
    fn lost_connections_are_unavailable() {
        let err = DbErr::Conn(RuntimeErr::SqlxError(std::sync::Arc::new(
            sqlx::Error::PoolTimedOut,
        )));
        assert_eq!(classify(&err), DbFailure::Unavailable);
        let err = DbErr::Query(RuntimeErr::SqlxError(std::sync::Arc::new(sqlx::Error::Io(
            std::io::Error::from(std::io::ErrorKind::ConnectionReset),
        ))));
        assert_eq!(classify(&err), DbFailure::Unavailable);
    }

    #[test]
    fn sqlite_full_and_io_errors_are_storage_faults() {
        assert_eq!(sqlite_storage_fault("13"), Some(DbFailure::StorageFull));
        // SQLITE_IOERR_WRITE, SQLITE_IOERR_FSYNC, SQLITE_IOERR_SHMSIZE.
        for code in ["10", "778", "1034", "4874"] {
            assert_eq!(sqlite_storage_fault(code), Some(DbFailure::StorageFailed));
        }
        // SQLITE_BUSY, SQLITE_CONSTRAINT_UNIQUE.
        assert_eq!(sqlite_storage_fault("5"), None);
        assert_eq!(sqlite_storage_fault("2067"), None);
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn sqlite_files_and_their_directory_are_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let settings = |file: &str| DbSettings {
            url: crate::config::sqlite_url(&data.join(file)),
            schema: "unused".into(),
            max_connections: 2,
            acquire_timeout: Duration::from_secs(5),
            application_name: "test".into(),
        };
        let db = connect(&settings("x.db")).await.unwrap();
        db.execute_unprepared("CREATE TABLE t (k TEXT PRIMARY KEY)")
            .await
            .unwrap();
        db.execute_unprepared("INSERT INTO t VALUES ('a')")
            .await
            .unwrap();
        assert_eq!(mode(&data), 0o700, "data directory");
        for file in ["x.db", "x.db-wal", "x.db-shm"] {
            assert_eq!(mode(&data.join(file)), 0o600, "{file}");
        }
        db.close().await.unwrap();

        // A database an older version left world-readable is tightened at the next start.
        std::fs::write(data.join("old.db"), b"").unwrap();
        std::fs::set_permissions(data.join("old.db"), std::fs::Permissions::from_mode(0o644))
            .unwrap();
        let db = connect(&settings("old.db")).await.unwrap();
        assert_eq!(mode(&data.join("old.db")), 0o600);
        db.close().await.unwrap();
    }

    #[tokio::test]
    async fn sqlite_unique_violation_is_classified() {
        let dir = tempfile::tempdir().unwrap();
        let url = crate::config::sqlite_url(&dir.path().join("nested/x.db"));
        let db = connect(&DbSettings {
            url,
            schema: "unused".into(),
            max_connections: 2,
            acquire_timeout: Duration::from_secs(5),
            application_name: "test".into(),
        })
        .await
        .unwrap();
        db.execute_unprepared("CREATE TABLE t (k TEXT PRIMARY KEY)")
            .await
            .unwrap();
        db.execute_unprepared("INSERT INTO t VALUES ('a')")
            .await
            .unwrap();
        let err = db
            .execute_unprepared("INSERT INTO t VALUES ('a')")
            .await
            .unwrap_err();
        assert!(matches!(classify(&err), DbFailure::UniqueViolation(_)));
    }
}
