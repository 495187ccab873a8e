//! Imports: upload a CSV or JSON list of accounts, start a migration (the REST route's
//! `SubmitMigration`, environment sessions only) and watch its progress until it ends, with its
//! per-item errors.
//!
//! The upload becomes the REST body (`MigrateBody`), so it is checked and sent exactly as
//! `POST /tenants/resources/migrations/v1/tenants` would: a JSON file holds that body (or its
//! `tenants` array); a CSV file has a header row of the body's field names (`tenantId`, `name`,
//! `parentTenantId`, `website`, …) and one account per row.

use askama::Template;
use axum::{
    Router,
    extract::{Multipart, Path, State},
    response::Response,
    routing::get,
};
use futures::stream;
use serde_json::{Map, Value as Json};
use tenantry_proto::tenant::v1::GetMigrationStatusRequest;

use super::{Console, Layout, PageError, SignedIn, encode, render, see};
use crate::{
    error::ApiError,
    routes::migrations::{MigrateBody, MigrationItemBody, MigrationStatus},
    state::grpc,
};

pub fn router() -> Router<Console> {
    Router::new()
        .route("/imports", get(form).post(upload))
        .route("/imports/{id}", get(status))
}

#[derive(Template)]
#[template(path = "console/imports.html")]
struct ImportsPage {
    layout: Layout,
}

async fn form(session: SignedIn) -> Result<Response, PageError> {
    session.management()?;
    render(&ImportsPage {
        layout: session.layout("Imports", "Imports"),
    })
}

async fn upload(
    State(c): State<Console>,
    session: SignedIn,
    mut multipart: Multipart,
) -> Result<Response, PageError> {
    let p = session.management()?;
    let malformed = || ApiError::bad_request("the upload is not valid multipart/form-data");
    let mut file: Option<(String, Vec<u8>)> = None;
    while let Some(field) = multipart.next_field().await.map_err(|_| malformed())? {
        if field.name() == Some("file") {
            let name = field.file_name().unwrap_or_default().to_owned();
            let bytes = field.bytes().await.map_err(|_| malformed())?;
            file = Some((name, bytes.to_vec()));
        }
    }
    let Some((name, bytes)) = file.filter(|(_, b)| !b.is_empty()) else {
        return Err(
            ApiError::invalid_field("file", "choose a CSV or JSON file of accounts").into(),
        );
    };
    let text = String::from_utf8(bytes)
        .map_err(|_| ApiError::invalid_field("file", "must be UTF-8 text"))?;
    let body = parse_upload(&name, &text)?;
    let requests = body.into_requests()?;
    let out = c
        .app
        .migrations()
        .submit_migration(grpc(p, stream::iter(requests)))
        .await?
        .into_inner();
    Ok(see(&format!(
        "/console/imports/{}",
        encode(&out.migration_id)
    )))
}

/// The upload as the REST body: JSON (by name or content), else CSV.
fn parse_upload(name: &str, text: &str) -> Result<MigrateBody, ApiError> {
    let trimmed = text.trim_start_matches('\u{feff}').trim();
    let json = name.to_ascii_lowercase().ends_with(".json")
        || trimmed.starts_with('{')
        || trimmed.starts_with('[');
    if json {
        let value: Json = serde_json::from_str(trimmed)
            .map_err(|e| ApiError::invalid_field("file", format!("is not JSON: {e}")))?;
        let value = match value {
            // A bare list of accounts is the body's `tenants`.
            list @ Json::Array(_) => {
                let mut body = Map::new();
                body.insert("tenants".to_owned(), list);
                Json::Object(body)
            }
            other @ (Json::Null
            | Json::Bool(_)
            | Json::Number(_)
            | Json::String(_)
            | Json::Object(_)) => other,
        };
        return serde_json::from_value(value).map_err(|e| {
            ApiError::invalid_field("file", format!("is not a list of accounts: {e}"))
        });
    }
    let rows = parse_csv(trimmed).map_err(|e| ApiError::invalid_field("file", e))?;
    let mut rows = rows.into_iter();
    let header: Vec<String> = rows
        .next()
        .ok_or_else(|| ApiError::invalid_field("file", "is empty"))?
        .into_iter()
        .map(|h| h.trim().to_owned())
        .collect();
    let mut tenants = Vec::new();
    for (i, row) in rows.enumerate() {
        if row.iter().all(|cell| cell.trim().is_empty()) {
            continue;
        }
        let line = i + 2;
        if row.len() != header.len() {
            return Err(ApiError::invalid_field(
                "file",
                format!(
                    "line {line} has {} cells, the header {}",
                    row.len(),
                    header.len()
                ),
            ));
        }
        let mut account = Map::new();
        for (column, cell) in header.iter().zip(row) {
            let cell = cell.trim();
            if cell.is_empty() {
                continue;
            }
            let value = if column == "isReseller" {
                Json::Bool(cell.parse().map_err(|_| {
                    ApiError::invalid_field(
                        "file",
                        format!("line {line}: isReseller must be true or false"),
                    )
                })?)
            } else {
                Json::String(cell.to_owned())
            };
            account.insert(column.clone(), value);
        }
        // A row with only the ID is a bare ID, as the REST body allows.
        let item = match account.get("tenantId") {
            Some(Json::String(id)) if account.len() == 1 => MigrationItemBody::Id(id.clone()),
            Some(_) | None => MigrationItemBody::Account(Box::new(
                serde_json::from_value(Json::Object(account))
                    .map_err(|e| ApiError::invalid_field("file", format!("line {line}: {e}")))?,
            )),
        };
        tenants.push(item);
    }
    Ok(MigrateBody { tenants })
}

/// RFC 4180 CSV: commas, double-quoted cells (`""` inside), CRLF or LF line ends.
fn parse_csv(text: &str) -> Result<Vec<Vec<String>>, String> {
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut cell = String::new();
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    while let Some(ch) = chars.next() {
        match (quoted, ch) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                cell.push('"');
            }
            (true, '"') => quoted = false,
            (true, other) => cell.push(other),
            (false, '"') if cell.is_empty() => quoted = true,
            (false, ',') => row.push(std::mem::take(&mut cell)),
            (false, '\r') if chars.peek() == Some(&'\n') => {}
            (false, '\n') => {
                row.push(std::mem::take(&mut cell));
                rows.push(std::mem::take(&mut row));
            }
            (false, other) => cell.push(other),
        }
    }
    if quoted {
        return Err("has a quoted cell that is never closed".to_owned());
    }
    if !cell.is_empty() || !row.is_empty() {
        row.push(cell);
        rows.push(row);
    }
    Ok(rows)
}

#[derive(Template)]
#[template(path = "console/import.html")]
struct ImportPage {
    layout: Layout,
    href: String,
    status: MigrationStatus,
    done: bool,
    percent: u64,
}

async fn status(
    State(c): State<Console>,
    session: SignedIn,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    let p = session.management()?;
    let out = c
        .app
        .migrations()
        .get_migration_status(grpc(
            p,
            GetMigrationStatusRequest {
                migration_id: id.clone(),
                errors_page: Some(tenantry_proto::common::v1::PageRequest {
                    limit: Some(100),
                    offset: 0,
                }),
            },
        ))
        .await?
        .into_inner();
    let status = MigrationStatus::from_pb(out)?;
    let done = matches!(status.status.as_str(), "completed" | "failed");
    let percent = (status.processed_items * 100)
        .checked_div(status.total_items)
        .unwrap_or(100);
    render(&ImportPage {
        layout: session.layout("Import", "Imports"),
        href: format!("/console/imports/{}", encode(&id)),
        status,
        done,
        percent,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_cells_quote_commas_quotes_and_line_ends() {
        let rows = parse_csv("tenantId,name\r\nacme,\"Acme, \"\"Inc\"\"\"\nglobex,Globex").unwrap();
        assert_eq!(
            rows,
            vec![
                vec!["tenantId", "name"],
                vec!["acme", "Acme, \"Inc\""],
                vec!["globex", "Globex"],
            ]
        );
        assert!(parse_csv("a,\"b").is_err());
    }

    #[test]
    fn uploads_become_the_rest_body() {
        let body = parse_upload("a.csv", "tenantId,name\nacme,Acme\nbare,\n").unwrap();
        assert!(
            matches!(&body.tenants[0], MigrationItemBody::Account(a) if a.name.as_deref() == Some("Acme"))
        );
        assert!(matches!(&body.tenants[1], MigrationItemBody::Id(id) if id == "bare"));
        let body = parse_upload("a.json", r#"[{"tenantId": "a", "name": "A"}, "b"]"#).unwrap();
        assert_eq!(body.tenants.len(), 2);
        let body = parse_upload("x", r#"{"tenants": ["b"]}"#).unwrap();
        assert_eq!(body.tenants.len(), 1);
        let err = parse_upload("a.csv", "tenantId,colour\nacme,red\n").unwrap_err();
        assert!(err.body.message.contains("colour"), "{}", err.body.message);
        let err = parse_upload("a.csv", "tenantId,name\nacme\n").unwrap_err();
        assert!(err.body.message.contains("line 2"), "{}", err.body.message);
    }

    fn page(state: &str, processed: u64) -> String {
        let status = MigrationStatus {
            migration_id: "m1".into(),
            status: state.into(),
            total_items: 4,
            processed_items: processed,
            created_items: processed,
            skipped_items: 0,
            failed_items: 0,
            failure_message: None,
            created_at: None,
            started_at: None,
            finished_at: None,
            errors: Vec::new(),
            errors_metadata: crate::routes::ListMetadata::default(),
        };
        ImportPage {
            layout: Layout {
                title: "Import".into(),
                who: "test".into(),
                csrf: "t".into(),
                nav: Vec::new(),
            },
            href: "/console/imports/m1".into(),
            done: matches!(state, "completed" | "failed"),
            percent: processed * 25,
            status,
        }
        .render()
        .unwrap()
    }

    #[test]
    fn a_running_import_polls_its_status_and_a_finished_one_stops() {
        let running = page("running", 1);
        assert!(running.contains(r#"hx-trigger="every 1s""#), "{running}");
        assert!(running.contains(r#"value="1""#) && running.contains(r#"max="4""#));
        let done = page("completed", 4);
        assert!(!done.contains("hx-trigger"), "{done}");
    }
}
