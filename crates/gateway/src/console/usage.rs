//! Usage: an account's meters of the metered features — usage, balance, overage, the period and
//! its next reset, the plan allowance, the credits in burn-down order with what remains of
//! each — with credit grants added and voided. The REST metering routes are environment-only
//! (`Management`), and so is every page and form here: a user session is 403.

use std::collections::HashMap;

use askama::Template;
use axum::{
    Form, Router,
    extract::{Path, Query, State},
    response::Response,
    routing::{get, post},
};
use chrono::{DateTime, Days, Utc};
use serde::Deserialize;
use tenantry_proto::{
    entitlement::v1::{
        self as pb, AllocationType, CreateCreditGrantRequest, GetMeterRequest,
        GetUsageHistoryRequest, ListCreditGrantsRequest, Rollover, UsageWindowSize,
        VoidCreditGrantRequest, allocation::Kind,
    },
    tenant::v1::GetAccountRequest,
};

use super::{
    Console, Layout, PageError, SignedIn, account_href, catalogue::list_features, encode, render,
    see, write_then_see,
};
use crate::{
    auth::Principal, convert::opt_timestamp, error::ApiError, routes::features::aggregation_name,
    state::grpc,
};

pub fn router() -> Router<Console> {
    Router::new()
        .route("/usage", get(usage_home))
        .route("/accounts/{id}/usage", get(account_usage))
        .route("/accounts/{id}/usage/credit-grants", post(grant_credits))
        .route(
            "/accounts/{id}/usage/credit-grants/{grant}/void",
            post(void_credits),
        )
}

/// The plan allowance's place among the credits (`CreditRemaining.id`).
const ALLOWANCE_ID: &str = "00000000-0000-0000-0000-000000000000";

/// An account's usage page.
fn usage_href(tenant_id: &str) -> String {
    format!("{}/usage", account_href(tenant_id))
}

// ---------------------------------------------------------------------------------------------
// The Usage entry: pick an account, see the metered features.

#[derive(Deserialize)]
pub struct UsageQuery {
    tenant_id: Option<String>,
}

pub struct MeteredRow {
    pub key: String,
    pub name: String,
    pub unit: String,
    pub recurrence: String,
    pub href: String,
}

#[derive(Template)]
#[template(path = "console/usage.html")]
struct UsageHome {
    layout: Layout,
    features: Vec<MeteredRow>,
}

async fn usage_home(
    State(c): State<Console>,
    session: SignedIn,
    Query(q): Query<UsageQuery>,
) -> Result<Response, PageError> {
    let p = session.management()?;
    if let Some(id) = q
        .tenant_id
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty())
    {
        return Ok(see(&usage_href(&id)));
    }
    let features = list_features(&c, p)
        .await?
        .into_iter()
        .filter(|f| f.allocation_type() == AllocationType::Metered)
        .map(|f| {
            let metering = f.metering.clone().unwrap_or_default();
            MeteredRow {
                href: format!("/console/features/{}", encode(&f.id)),
                key: f.key,
                name: f.name,
                unit: metering.unit,
                recurrence: metering.recurrence,
            }
        })
        .collect();
    render(&UsageHome {
        layout: session.layout("Usage", "Usage"),
        features,
    })
}

// ---------------------------------------------------------------------------------------------
// An account's meters.

/// One credit as it burns down this period.
pub struct CreditRow {
    pub label: String,
    pub priority: String,
    pub amount: String,
    pub remaining: String,
    pub expires: String,
    pub rollover: String,
}

/// One credit grant of the account, whatever its state.
pub struct GrantRow {
    pub id: String,
    pub amount: i64,
    pub priority: u32,
    pub effective: String,
    pub expires: String,
    pub rollover: String,
    pub status: &'static str,
    /// The void form's action, while the grant can still be drawn on.
    pub void_action: Option<String>,
}

/// Days the usage chart shows, today's included.
const CHART_DAYS: u64 = 30;
/// The chart's drawing area in SVG units (the `viewBox` is 600 × 200).
const PLOT_LEFT: f64 = 44.0;
const PLOT_RIGHT: f64 = 592.0;
const PLOT_TOP: f64 = 12.0;
const PLOT_BOTTOM: f64 = 168.0;

/// One day's bar.
pub struct Bar {
    pub x: String,
    pub y: String,
    pub width: String,
    pub height: String,
    pub label: String,
}

/// A meter's daily usage over the last [`CHART_DAYS`] days, drawn on the server as SVG bars
/// (no script: the CSP allows none inline, and none is needed).
pub struct Chart {
    pub summary: String,
    pub max: i64,
    pub first_day: String,
    pub last_day: String,
    pub bars: Vec<Bar>,
}

impl Chart {
    fn new(unit: &str, windows: &[(DateTime<Utc>, i64)]) -> Self {
        let max = windows.iter().map(|(_, u)| *u).max().unwrap_or(0).max(0);
        let total: i64 = windows.iter().map(|(_, u)| *u).fold(0, i64::saturating_add);
        let day = |t: &DateTime<Utc>| t.format("%Y-%m-%d").to_string();
        let slot = (PLOT_RIGHT - PLOT_LEFT) / (windows.len().max(1) as f64);
        let bars = windows
            .iter()
            .enumerate()
            .map(|(i, (start, usage))| {
                // Scaled to the busiest day; a day with usage keeps a visible sliver.
                let height = if max == 0 || *usage <= 0 {
                    0.0
                } else {
                    ((*usage as f64) / (max as f64) * (PLOT_BOTTOM - PLOT_TOP)).max(1.0)
                };
                Bar {
                    x: format!("{:.1}", PLOT_LEFT + slot * i as f64 + slot * 0.1),
                    y: format!("{:.1}", PLOT_BOTTOM - height),
                    width: format!("{:.1}", slot * 0.8),
                    height: format!("{height:.1}"),
                    label: format!("{}: {usage} {unit}", day(start)),
                }
            })
            .collect();
        let peak = windows
            .iter()
            .filter(|(_, u)| *u == max && max > 0)
            .map(|(t, _)| day(t))
            .next();
        Self {
            summary: match peak {
                Some(peak) => format!(
                    "{total} {unit} over the last {} days, at most {max} a day ({peak})",
                    windows.len()
                ),
                None => format!("No usage over the last {} days", windows.len()),
            },
            max,
            first_day: windows.first().map(|(t, _)| day(t)).unwrap_or_default(),
            last_day: windows.last().map(|(t, _)| day(t)).unwrap_or_default(),
            bars,
        }
    }
}

/// The daily usage of the last [`CHART_DAYS`] days (UTC), today's included.
async fn daily_usage(
    c: &Console,
    p: &Principal,
    tenant_id: &str,
    feature_key: &str,
    now: DateTime<Utc>,
) -> Result<Vec<(DateTime<Utc>, i64)>, PageError> {
    let today = now
        .date_naive()
        .and_hms_opt(0, 0, 0)
        .unwrap_or_default()
        .and_utc();
    let to = today.checked_add_days(Days::new(1)).unwrap_or(now);
    let from = today
        .checked_sub_days(Days::new(CHART_DAYS - 1))
        .unwrap_or(today);
    let stamp = |t: DateTime<Utc>| prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: 0,
    };
    let history = c
        .app
        .metering()
        .get_usage_history(grpc(
            p,
            GetUsageHistoryRequest {
                tenant_id: tenant_id.to_owned(),
                feature_key: feature_key.to_owned(),
                from: Some(stamp(from)),
                to: Some(stamp(to)),
                window: UsageWindowSize::Day.into(),
                user_id: None,
            },
        ))
        .await?
        .into_inner();
    Ok(history
        .windows
        .into_iter()
        .filter_map(|w| Some((time(w.start)?, w.usage)))
        .collect())
}

pub struct MeterCard {
    pub index: usize,
    pub key: String,
    pub name: String,
    pub unit: String,
    pub recurrence: String,
    pub aggregation: &'static str,
    pub soft_limit: bool,
    pub usage: i64,
    pub balance: String,
    pub overage: i64,
    pub allowance: String,
    pub period_start: String,
    pub period_end: String,
    pub credits: Vec<CreditRow>,
    pub grants: Vec<GrantRow>,
    pub chart: Chart,
}

#[derive(Template)]
#[template(path = "console/account_usage.html")]
struct AccountUsage {
    layout: Layout,
    tenant_id: String,
    name: String,
    account_href: String,
    grant_action: String,
    meters: Vec<MeterCard>,
}

fn allowance_text(a: Option<&pb::Allocation>) -> String {
    match a.and_then(|a| a.kind.as_ref()) {
        Some(Kind::MaxCountAllocation(m)) if m.unlimited => "unlimited".to_owned(),
        Some(Kind::MaxCountAllocation(m)) => m.value.to_string(),
        Some(Kind::BoolAllocation(_)) | None => "none".to_owned(),
    }
}

fn rollover_text(r: Option<&Rollover>) -> String {
    match r {
        Some(r) => format!("min {}, max {}", r.min, r.max),
        None => "all that remains".to_owned(),
    }
}

fn time(ts: Option<prost_types::Timestamp>) -> Option<DateTime<Utc>> {
    ts.and_then(|t| DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).unwrap_or(0)))
}

fn grant_row(tenant_id: &str, g: &pb::CreditGrant, now: DateTime<Utc>) -> GrantRow {
    let status = if g.voided_at.is_some() {
        "voided"
    } else if time(g.expires_at).is_some_and(|t| t <= now) {
        "expired"
    } else if time(g.effective_at).is_some_and(|t| t > now) {
        "scheduled"
    } else {
        "active"
    };
    GrantRow {
        id: g.id.clone(),
        amount: g.amount,
        priority: g.priority,
        effective: opt_timestamp(g.effective_at).unwrap_or_default(),
        expires: opt_timestamp(g.expires_at).unwrap_or_else(|| "never".to_owned()),
        rollover: rollover_text(g.rollover.as_ref()),
        void_action: matches!(status, "active" | "scheduled").then(|| {
            format!(
                "{}/credit-grants/{}/void",
                usage_href(tenant_id),
                encode(&g.id)
            )
        }),
        status,
    }
}

async fn meter_card(
    c: &Console,
    p: &Principal,
    tenant_id: &str,
    index: usize,
    feature: pb::Feature,
    grants: &[pb::CreditGrant],
    now: DateTime<Utc>,
) -> Result<MeterCard, PageError> {
    let view = c
        .app
        .metering()
        .get_meter(grpc(
            p,
            GetMeterRequest {
                tenant_id: tenant_id.to_owned(),
                feature_key: feature.key.clone(),
                min_revision: 0,
            },
        ))
        .await?
        .into_inner();
    let meter = view.meter.unwrap_or_default();
    let metering = feature.metering.clone().unwrap_or_default();
    let chart = Chart::new(
        &metering.unit,
        &daily_usage(c, p, tenant_id, &feature.key, now).await?,
    );
    let allowance = allowance_text(view.allowance.as_ref());
    let by_id: HashMap<&str, &pb::CreditGrant> =
        grants.iter().map(|g| (g.id.as_str(), g)).collect();
    let credits = view
        .credits
        .iter()
        .map(|credit| {
            let remaining = credit
                .remaining
                .map_or_else(|| "unlimited".to_owned(), |r| r.to_string());
            match by_id.get(credit.id.as_str()) {
                Some(g) => CreditRow {
                    label: format!("credit grant {}", g.id),
                    priority: g.priority.to_string(),
                    amount: g.amount.to_string(),
                    remaining,
                    expires: opt_timestamp(g.expires_at).unwrap_or_else(|| "never".to_owned()),
                    rollover: rollover_text(g.rollover.as_ref()),
                },
                None => CreditRow {
                    label: if credit.id == ALLOWANCE_ID {
                        "plan allowance".to_owned()
                    } else {
                        format!("credit {}", credit.id)
                    },
                    priority: "10".to_owned(),
                    amount: allowance.clone(),
                    remaining,
                    expires: "at the reset".to_owned(),
                    rollover: "none".to_owned(),
                },
            }
        })
        .collect();
    Ok(MeterCard {
        index,
        aggregation: aggregation_name(metering.aggregation()),
        unit: metering.unit,
        recurrence: metering.recurrence,
        soft_limit: metering.soft_limit,
        usage: meter.usage,
        balance: meter
            .balance
            .map_or_else(|| "unlimited".to_owned(), |b| b.to_string()),
        overage: meter.overage,
        allowance,
        period_start: opt_timestamp(meter.period_start).unwrap_or_default(),
        period_end: opt_timestamp(meter.period_end).unwrap_or_default(),
        credits,
        grants: grants
            .iter()
            .filter(|g| g.feature_key == feature.key)
            .map(|g| grant_row(tenant_id, g, now))
            .collect(),
        chart,
        key: feature.key,
        name: feature.name,
    })
}

async fn account_usage(
    State(c): State<Console>,
    session: SignedIn,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    let p = session.management()?;
    let account = c
        .app
        .tenants()
        .get_account(grpc(
            p,
            GetAccountRequest {
                tenant_id: id.clone(),
            },
        ))
        .await?
        .into_inner()
        .account
        .ok_or_else(ApiError::internal)?;
    let metered: Vec<pb::Feature> = list_features(&c, p)
        .await?
        .into_iter()
        .filter(|f| f.allocation_type() == AllocationType::Metered)
        .collect();
    let grants = if metered.is_empty() {
        Vec::new()
    } else {
        c.app
            .metering()
            .list_credit_grants(grpc(
                p,
                ListCreditGrantsRequest {
                    tenant_id: id.clone(),
                    feature_key: None,
                },
            ))
            .await?
            .into_inner()
            .credit_grants
    };
    let now = Utc::now();
    let meters = futures::future::try_join_all(
        metered
            .into_iter()
            .enumerate()
            .map(|(i, f)| meter_card(&c, p, &id, i + 1, f, &grants, now)),
    )
    .await?;
    render(&AccountUsage {
        layout: session.layout(format!("Usage of {}", account.name), "Usage"),
        account_href: account_href(&id),
        grant_action: format!("{}/credit-grants", usage_href(&id)),
        name: account.name,
        tenant_id: id,
        meters,
    })
}

// ---------------------------------------------------------------------------------------------
// Credit grants: add, void.

#[derive(Deserialize)]
pub struct CreditForm {
    feature_key: String,
    amount: String,
    priority: Option<String>,
    effective: Option<String>,
    expires: Option<String>,
    rollover_min: Option<String>,
    rollover_max: Option<String>,
}

/// A form's whole number; empty is `None`, anything else not a whole number is 400 naming the
/// REST body's field.
fn number<T: std::str::FromStr>(value: Option<&str>, field: &str) -> Result<Option<T>, ApiError> {
    match value.map(str::trim).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) => v
            .parse()
            .map(Some)
            .map_err(|_| ApiError::invalid_field(field, "must be a whole number")),
    }
}

fn time_field(
    value: Option<&str>,
    field: &str,
) -> Result<Option<prost_types::Timestamp>, ApiError> {
    value
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(|v| crate::convert::parse_time_field(v, field))
        .transpose()
}

async fn grant_credits(
    State(c): State<Console>,
    session: SignedIn,
    Path(id): Path<String>,
    Form(form): Form<CreditForm>,
) -> Result<Response, PageError> {
    let amount: i64 = number(Some(&form.amount), "amount")?
        .ok_or_else(|| ApiError::invalid_field("amount", "is required"))?;
    let min: Option<i64> = number(form.rollover_min.as_deref(), "rollover.min")?;
    let max: Option<i64> = number(form.rollover_max.as_deref(), "rollover.max")?;
    // Either bound alone: the other as the default rollover has it (min 0, max the amount).
    let rollover = (min.is_some() || max.is_some()).then(|| Rollover {
        min: min.unwrap_or(0),
        max: max.unwrap_or(amount),
    });
    let request = CreateCreditGrantRequest {
        tenant_id: id.clone(),
        feature_key: form.feature_key.trim().to_owned(),
        amount,
        priority: number(form.priority.as_deref(), "priority")?,
        effective_at: time_field(form.effective.as_deref(), "effectiveAt")?,
        expires_at: time_field(form.expires.as_deref(), "expiresAt")?,
        rollover,
        metadata: None,
    };
    write_then_see(&session, &usage_href(&id), |p| async move {
        c.app
            .metering()
            .create_credit_grant(grpc(&p, request))
            .await
    })
    .await
}

async fn void_credits(
    State(c): State<Console>,
    session: SignedIn,
    Path((id, grant)): Path<(String, String)>,
) -> Result<Response, PageError> {
    write_then_see(&session, &usage_href(&id), |p| async move {
        c.app
            .metering()
            .void_credit_grant(grpc(&p, VoidCreditGrantRequest { id: grant }))
            .await
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Option<prost_types::Timestamp> {
        crate::convert::parse_time(s)
    }

    #[test]
    fn a_grant_reads_as_voided_expired_scheduled_or_active() {
        let now = DateTime::parse_from_rfc3339("2030-06-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let grant = |effective: &str, expires: Option<&str>, voided: bool| pb::CreditGrant {
            id: "g1".into(),
            effective_at: ts(effective),
            expires_at: expires.and_then(ts),
            voided_at: voided.then(|| ts("2030-05-01T00:00:00Z")).flatten(),
            ..pb::CreditGrant::default()
        };
        let row = grant_row("acme", &grant("2030-01-01T00:00:00Z", None, false), now);
        assert_eq!(row.status, "active");
        assert_eq!(
            row.void_action.as_deref(),
            Some("/console/accounts/acme/usage/credit-grants/g1/void")
        );
        let row = grant_row("acme", &grant("2030-07-01T00:00:00Z", None, false), now);
        assert_eq!(row.status, "scheduled");
        assert!(row.void_action.is_some());
        let expired = grant("2030-01-01T00:00:00Z", Some("2030-02-01T00:00:00Z"), false);
        let row = grant_row("acme", &expired, now);
        assert_eq!((row.status, row.void_action), ("expired", None));
        let row = grant_row("acme", &grant("2030-01-01T00:00:00Z", None, true), now);
        assert_eq!((row.status, row.void_action), ("voided", None));
    }

    #[test]
    fn the_chart_scales_bars_to_the_busiest_day() {
        let day = |d: u32| {
            DateTime::parse_from_rfc3339(&format!("2030-06-{d:02}T00:00:00Z"))
                .unwrap()
                .with_timezone(&Utc)
        };
        let chart = Chart::new(
            "call",
            &[(day(1), 0), (day(2), 50), (day(3), 100), (day(4), 1)],
        );
        assert_eq!(chart.max, 100);
        let heights: Vec<&str> = chart.bars.iter().map(|b| b.height.as_str()).collect();
        assert_eq!(heights, ["0.0", "78.0", "156.0", "1.6"]);
        assert_eq!(chart.bars[2].y, "12.0");
        assert_eq!(chart.bars[1].label, "2030-06-02: 50 call");
        assert_eq!(
            chart.summary,
            "151 call over the last 4 days, at most 100 a day (2030-06-03)"
        );
        assert_eq!(
            (chart.first_day.as_str(), chart.last_day.as_str()),
            ("2030-06-01", "2030-06-04")
        );
        let quiet = Chart::new("call", &[(day(1), 0), (day(2), 0)]);
        assert_eq!(quiet.summary, "No usage over the last 2 days");
        assert!(quiet.bars.iter().all(|b| b.height == "0.0"));
    }

    #[test]
    fn form_numbers_are_whole_or_refused_by_field() {
        assert_eq!(number::<i64>(Some(" 42 "), "amount").unwrap(), Some(42));
        assert_eq!(number::<i64>(Some(""), "amount").unwrap(), None);
        let e = number::<u32>(Some("1.5"), "priority").unwrap_err();
        assert_eq!(e.body.field_violations[0].field, "priority");
    }
}
