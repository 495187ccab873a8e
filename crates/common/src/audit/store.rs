//! The audit log's table (`audit_log`, created by each service's own migration in its own
//! schema): entries are inserted in the transaction of the write they record and never
//! updated (a trigger refuses it); only [`prune`] deletes, for retention.

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, DbBackend, DbErr, QueryResult, Statement, Value};

use super::{
    AuditEntry, AuditPage, AuditQuery, AuditRecord, ExportQuery, RequestContext, page_token,
};

/// The table's definition, the same in both services' schemas: `CREATE` statements for a
/// migration of `backend`.
pub fn create_statements(backend: DbBackend) -> Vec<String> {
    let postgres = backend == DbBackend::Postgres;
    let key = if postgres {
        "sequence BIGSERIAL PRIMARY KEY"
    } else {
        // AUTOINCREMENT: a pruned sequence is never handed out again.
        "sequence INTEGER PRIMARY KEY AUTOINCREMENT"
    };
    let mut statements = vec![
        format!(
            "CREATE TABLE audit_log (
                {key},
                at_micros BIGINT NOT NULL,
                actor TEXT NOT NULL,
                action TEXT NOT NULL,
                resource_type TEXT NOT NULL,
                resource_id TEXT NOT NULL,
                account_id TEXT,
                before_json TEXT NOT NULL,
                after_json TEXT NOT NULL,
                request_id TEXT,
                trace_id TEXT
            )"
        ),
        "CREATE INDEX audit_log_at ON audit_log (at_micros)".into(),
        "CREATE INDEX audit_log_resource ON audit_log (resource_type, resource_id, sequence)"
            .into(),
        "CREATE INDEX audit_log_actor ON audit_log (actor, sequence)".into(),
    ];
    if postgres {
        statements.push(
            "CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN RAISE EXCEPTION 'audit entries are never changed'; END $$"
                .into(),
        );
        statements.push(
            "CREATE TRIGGER audit_log_append_only BEFORE UPDATE ON audit_log
             FOR EACH ROW EXECUTE FUNCTION audit_log_append_only()"
                .into(),
        );
    } else {
        statements.push(
            "CREATE TRIGGER audit_log_append_only BEFORE UPDATE ON audit_log
             BEGIN SELECT RAISE(ABORT, 'audit entries are never changed'); END"
                .into(),
        );
    }
    statements
}

/// The statements that undo [`create_statements`].
pub fn drop_statements(backend: DbBackend) -> Vec<String> {
    let mut statements = vec!["DROP TABLE IF EXISTS audit_log".to_owned()];
    if backend == DbBackend::Postgres {
        statements.push("DROP FUNCTION IF EXISTS audit_log_append_only()".into());
    }
    statements
}

/// Rows per INSERT statement (11 values each, far below either database's parameter limit).
const INSERT_CHUNK: usize = 500;

/// Stores `entries` made by `context` at `time`, on `conn` (the write's transaction).
pub async fn insert<C: ConnectionTrait>(
    conn: &C,
    entries: &[AuditEntry],
    context: &RequestContext,
    time: DateTime<Utc>,
) -> Result<(), DbErr> {
    let backend = conn.get_database_backend();
    let at = time.timestamp_micros();
    for chunk in entries.chunks(INSERT_CHUNK) {
        let mut sql = String::from(
            "INSERT INTO audit_log (at_micros, actor, action, resource_type, resource_id, \
             account_id, before_json, after_json, request_id, trace_id) VALUES ",
        );
        let mut values: Vec<Value> = Vec::with_capacity(chunk.len() * 10);
        for (i, entry) in chunk.iter().enumerate() {
            if i > 0 {
                sql.push_str(", ");
            }
            sql.push_str("(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)");
            values.extend([
                at.into(),
                context.actor.clone().into(),
                entry.action.into(),
                entry.resource_type.into(),
                entry.resource_id.clone().into(),
                entry.account_id.clone().into(),
                entry.before.to_string().into(),
                entry.after.to_string().into(),
                context.request_id.clone().into(),
                context.trace_id.clone().into(),
            ]);
        }
        conn.execute_raw(statement(backend, &sql, values)).await?;
    }
    Ok(())
}

const COLUMNS: &str = "sequence, at_micros, actor, action, resource_type, resource_id, \
                       account_id, before_json, after_json, request_id, trace_id";

/// A page of entries matching `query`, newest first.
pub async fn list<C: ConnectionTrait>(conn: &C, query: &AuditQuery) -> Result<AuditPage, DbErr> {
    let mut conditions = Vec::new();
    let mut values: Vec<Value> = Vec::new();
    for (column, value) in [
        ("resource_type", &query.resource_type),
        ("resource_id", &query.resource_id),
        ("actor", &query.actor),
        ("action", &query.action),
    ] {
        if let Some(value) = value {
            conditions.push(format!("{column} = ?"));
            values.push(value.clone().into());
        }
    }
    if let Some(from) = query.from {
        conditions.push("at_micros >= ?".into());
        values.push(from.timestamp_micros().into());
    }
    if let Some(to) = query.to {
        conditions.push("at_micros < ?".into());
        values.push(to.timestamp_micros().into());
    }
    if let Some(before) = query.before_sequence {
        conditions.push("sequence < ?".into());
        values.push(signed(before).into());
    }
    let filter = if conditions.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", conditions.join(" AND "))
    };
    // One more than the page: whether a next page exists, without counting.
    values.push(i64::from(query.limit + 1).into());
    let sql = format!("SELECT {COLUMNS} FROM audit_log {filter} ORDER BY sequence DESC LIMIT ?");
    let rows = conn
        .query_all_raw(statement(conn.get_database_backend(), &sql, values))
        .await?;
    let mut records = rows.iter().map(record).collect::<Result<Vec<_>, _>>()?;
    let more = records.len() > query.limit as usize;
    records.truncate(query.limit as usize);
    let next_page_token = more
        .then(|| records.last().map(|r| page_token(r.sequence)))
        .flatten();
    Ok(AuditPage {
        records,
        next_page_token,
    })
}

/// Up to `limit` entries of `export` after `after_sequence`, oldest first: one chunk of an
/// export.
pub async fn export_chunk<C: ConnectionTrait>(
    conn: &C,
    export: &ExportQuery,
    after_sequence: u64,
    limit: u32,
) -> Result<Vec<AuditRecord>, DbErr> {
    let mut conditions = vec!["sequence > ?", "at_micros >= ?", "at_micros < ?"];
    let mut values: Vec<Value> = vec![
        signed(after_sequence).into(),
        export.from.timestamp_micros().into(),
        export.to.timestamp_micros().into(),
    ];
    for (condition, value) in [
        ("resource_type = ?", &export.resource_type),
        ("resource_id = ?", &export.resource_id),
        ("actor = ?", &export.actor),
        ("action = ?", &export.action),
    ] {
        if let Some(value) = value {
            conditions.push(condition);
            values.push(value.clone().into());
        }
    }
    values.push(i64::from(limit).into());
    let sql = format!(
        "SELECT {COLUMNS} FROM audit_log WHERE {} ORDER BY sequence LIMIT ?",
        conditions.join(" AND ")
    );
    let rows = conn
        .query_all_raw(statement(conn.get_database_backend(), &sql, values))
        .await?;
    rows.iter().map(record).collect()
}

/// Deletes up to `batch` entries older than `before`; returns how many it deleted. The only
/// delete of the table: retention.
pub async fn prune<C: ConnectionTrait>(
    conn: &C,
    before: DateTime<Utc>,
    batch: u64,
) -> Result<u64, DbErr> {
    let sql = "DELETE FROM audit_log WHERE sequence IN \
               (SELECT sequence FROM audit_log WHERE at_micros < ? ORDER BY sequence LIMIT ?)";
    let result = conn
        .execute_raw(statement(
            conn.get_database_backend(),
            sql,
            vec![before.timestamp_micros().into(), signed(batch).into()],
        ))
        .await?;
    Ok(result.rows_affected())
}

fn record(row: &QueryResult) -> Result<AuditRecord, DbErr> {
    let json = |column: &str| -> Result<serde_json::Value, DbErr> {
        let text: String = row.try_get("", column)?;
        serde_json::from_str(&text).map_err(|e| DbErr::Type(format!("{column}: {e}")))
    };
    let sequence: i64 = row.try_get("", "sequence")?;
    let at: i64 = row.try_get("", "at_micros")?;
    Ok(AuditRecord {
        sequence: u64::try_from(sequence).unwrap_or_default(),
        time: DateTime::from_timestamp_micros(at).unwrap_or_default(),
        actor: row.try_get("", "actor")?,
        action: row.try_get("", "action")?,
        resource_type: row.try_get("", "resource_type")?,
        resource_id: row.try_get("", "resource_id")?,
        account_id: row.try_get("", "account_id")?,
        before: json("before_json")?,
        after: json("after_json")?,
        request_id: row.try_get("", "request_id")?,
        trace_id: row.try_get("", "trace_id")?,
    })
}

fn signed(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// A statement written with `?` placeholders, numbered for PostgreSQL (our SQL has no other `?`).
fn statement(backend: DbBackend, sql: &str, values: Vec<Value>) -> Statement {
    let sql = if backend == DbBackend::Postgres {
        let mut out = String::with_capacity(sql.len() + 16);
        let mut n = 0;
        for c in sql.chars() {
            if c == '?' {
                n += 1;
                out.push('$');
                out.push_str(&n.to_string());
            } else {
                out.push(c);
            }
        }
        out
    } else {
        sql.to_owned()
    };
    Statement::from_sql_and_values(backend, sql, values)
}
