//! Webhooks: the event catalogue (CloudEvents 1.0 JSON), endpoint validation, the address
//! rule that keeps deliveries out of the operator's network, the retry schedule and the
//! Standard Webhooks signature. Pure: no IO.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use uuid::Uuid;

use super::threshold::ThresholdCrossing;
use super::transition::{Transition, TransitionKind};
use super::{DomainError, Grant, IndexChange, Result};

/// The CloudEvents `source` of every event.
pub const EVENT_SOURCE: &str = "/tenantry/entitlement";

/// Every event type, versioned: a breaking change to a type's `data` is a new version.
pub mod types {
    pub const ACCOUNT_CREATED: &str = "tenantry.account.created.v1";
    pub const ACCOUNT_UPDATED: &str = "tenantry.account.updated.v1";
    pub const ACCOUNT_DELETED: &str = "tenantry.account.deleted.v1";
    pub const ACCOUNT_REACTIVATED: &str = "tenantry.account.reactivated.v1";
    pub const ACCOUNT_SETTINGS_CHANGED: &str = "tenantry.account.settings_changed.v1";
    pub const HIERARCHY_CHANGED: &str = "tenantry.account.hierarchy_changed.v1";
    pub const MEMBERSHIP_CHANGED: &str = "tenantry.account.membership_changed.v1";
    pub const FEATURE_CHANGED: &str = "tenantry.feature.changed.v1";
    pub const PLAN_CHANGED: &str = "tenantry.plan.changed.v1";
    pub const FLAG_CHANGED: &str = "tenantry.flag.changed.v1";
    pub const ROUTE_CHANGED: &str = "tenantry.route.changed.v1";
    pub const GRANT_CREATED: &str = "tenantry.grant.created.v1";
    pub const GRANT_UPDATED: &str = "tenantry.grant.updated.v1";
    pub const GRANT_REVOKED: &str = "tenantry.grant.revoked.v1";
    pub const GRANT_DELETED: &str = "tenantry.grant.deleted.v1";
    pub const GRANT_STARTED: &str = "tenantry.grant.started.v1";
    pub const GRANT_EXPIRING: &str = "tenantry.grant.expiring.v1";
    pub const GRANT_EXPIRED: &str = "tenantry.grant.expired.v1";
    pub const MIGRATION_FINISHED: &str = "tenantry.migration.finished.v1";
    pub const USAGE_THRESHOLD: &str = "tenantry.usage.threshold.v1";

    pub const ALL: &[&str] = &[
        ACCOUNT_CREATED,
        ACCOUNT_UPDATED,
        ACCOUNT_DELETED,
        ACCOUNT_REACTIVATED,
        ACCOUNT_SETTINGS_CHANGED,
        HIERARCHY_CHANGED,
        MEMBERSHIP_CHANGED,
        FEATURE_CHANGED,
        PLAN_CHANGED,
        FLAG_CHANGED,
        ROUTE_CHANGED,
        GRANT_CREATED,
        GRANT_UPDATED,
        GRANT_REVOKED,
        GRANT_DELETED,
        GRANT_STARTED,
        GRANT_EXPIRING,
        GRANT_EXPIRED,
        MIGRATION_FINISHED,
        USAGE_THRESHOLD,
    ];
}

/// One event, ready to deliver.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Stable across attempts and replicas: derived from where it came from.
    pub id: String,
    pub event_type: &'static str,
    /// The account the event is about, if any (an endpoint's account filter matches it).
    pub subject: Option<String>,
    /// The CloudEvent as sent.
    pub body: String,
}

/// Where an event came from: a committed revision, a tenant-feed sequence, or a
/// resynchronisation from the tenant snapshot as of a sequence.
#[derive(Debug, Clone, Copy)]
pub enum Origin {
    Revision(u64),
    FeedSequence(u64),
    Resync(u64),
}

fn cloud_event(
    id: &str,
    event_type: &str,
    subject: Option<&str>,
    time: DateTime<Utc>,
    origin: Origin,
    data: Value,
) -> String {
    let mut event = json!({
        "specversion": "1.0",
        "id": id,
        "source": EVENT_SOURCE,
        "type": event_type,
        "time": time.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        "datacontenttype": "application/json",
        "data": data,
    });
    // CloudEvents extension attributes: lowercase alphanumerics only.
    match origin {
        Origin::Revision(r) => event["tenantryrevision"] = json!(r),
        Origin::FeedSequence(s) => event["tenantrysequence"] = json!(s),
        Origin::Resync(s) => {
            event["tenantrysequence"] = json!(s);
            event["tenantryresync"] = json!(true);
        }
    }
    if let Some(subject) = subject {
        event["subject"] = json!(subject);
    }
    event.to_string()
}

fn event(
    id: String,
    event_type: &'static str,
    subject: Option<String>,
    time: DateTime<Utc>,
    origin: Origin,
    data: Value,
) -> Event {
    let body = cloud_event(&id, event_type, subject.as_deref(), time, origin, data);
    Event {
        id,
        event_type,
        subject,
        body,
    }
}

/// What a grant upsert is: created, revoked or otherwise updated (every write sets
/// `updated_at`; a create sets it to `created_at`, a revocation to `revoked_at`).
fn grant_event_type(grant: &Grant) -> &'static str {
    if grant.revoked_at == Some(grant.updated_at) {
        types::GRANT_REVOKED
    } else if grant.created_at == grant.updated_at {
        types::GRANT_CREATED
    } else {
        types::GRANT_UPDATED
    }
}

/// The events of one committed revision's index changes. Account changes are not among
/// them: they come from the tenant feed ([`account_event`]), which says what happened.
pub fn revision_events(revision: u64, time: DateTime<Utc>, changes: &[IndexChange]) -> Vec<Event> {
    let origin = Origin::Revision(revision);
    let catalog = |kind: &'static str, op: &str, id: Uuid, item: Value| {
        (
            kind,
            None::<String>,
            json!({ "operation": op, "id": id, "item": item }),
        )
    };
    changes
        .iter()
        .enumerate()
        .filter_map(|(i, change)| {
            let (event_type, subject, data) = match change {
                IndexChange::UpsertFeature(f) => {
                    catalog(types::FEATURE_CHANGED, "upserted", f.id, json!(f))
                }
                IndexChange::DeleteFeature { id } => {
                    catalog(types::FEATURE_CHANGED, "deleted", *id, Value::Null)
                }
                IndexChange::UpsertPlan(p) => {
                    catalog(types::PLAN_CHANGED, "upserted", p.id, json!(p))
                }
                IndexChange::DeletePlan { id } => {
                    catalog(types::PLAN_CHANGED, "deleted", *id, Value::Null)
                }
                IndexChange::UpsertFlag(f) => {
                    catalog(types::FLAG_CHANGED, "upserted", f.id, json!(f))
                }
                IndexChange::DeleteFlag { id } => {
                    catalog(types::FLAG_CHANGED, "deleted", *id, Value::Null)
                }
                IndexChange::UpsertRoute(r) => {
                    catalog(types::ROUTE_CHANGED, "upserted", r.id, json!(r))
                }
                IndexChange::DeleteRoute { id } => {
                    catalog(types::ROUTE_CHANGED, "deleted", *id, Value::Null)
                }
                IndexChange::UpsertGrant(g) => (
                    grant_event_type(g),
                    Some(g.tenant_id.clone()),
                    json!({ "grant": g }),
                ),
                IndexChange::DeleteGrant { id } => {
                    (types::GRANT_DELETED, None, json!({ "grant": { "id": id } }))
                }
                // Meters change with every use: not every change goes out, the thresholds a
                // write reaches do (`threshold_event`).
                IndexChange::UpsertTenant { .. }
                | IndexChange::RemoveTenant { .. }
                | IndexChange::UpsertMeter { .. } => {
                    return None;
                }
            };
            Some(event(
                format!("evt_r{revision}_{i}"),
                event_type,
                subject,
                time,
                origin,
                data,
            ))
        })
        .collect()
}

/// What a tenant-feed event says happened to an account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccountNoticeKind {
    Created,
    Updated,
    Deleted,
    Reactivated,
    SettingsChanged,
    HierarchyChanged {
        old_parent: Option<String>,
        new_parent: Option<String>,
    },
    MembershipChanged {
        user_id: String,
        added: bool,
    },
}

/// A tenant-feed event as the webhooks see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountNotice {
    pub tenant_id: String,
    pub parent_id: Option<String>,
    pub kind: AccountNoticeKind,
    pub changed_fields: Vec<String>,
    pub occurred_at: Option<DateTime<Utc>>,
}

/// How a tenant-feed migration (bulk import) ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MigrationOutcome {
    /// Every item processed (some may have been refused: see the counts).
    Completed,
    /// The job stopped on an error it could not get past.
    Failed,
}

/// A migration's end, from the tenant feed: not an account's change, so its event has no
/// subject (an endpoint with an account filter does not receive it, as with catalogue events).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationNotice {
    pub migration_id: String,
    pub outcome: MigrationOutcome,
    pub total_items: u64,
    pub processed_items: u64,
    pub created_items: u64,
    pub skipped_items: u64,
    pub failed_items: u64,
    pub failure_message: Option<String>,
    pub created_at: Option<DateTime<Utc>>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// What a tenant-feed event announces to webhooks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FeedNotice {
    Account(AccountNotice),
    Migration(MigrationNotice),
}

/// The event of one tenant-feed event, its ID derived from the sequence.
pub fn feed_event(sequence: u64, notice: &FeedNotice, now: DateTime<Utc>) -> Event {
    match notice {
        FeedNotice::Account(notice) => account_event(sequence, notice, now),
        FeedNotice::Migration(notice) => migration_event(sequence, notice, now),
    }
}

fn rfc3339(t: Option<DateTime<Utc>>) -> Value {
    json!(t.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)))
}

/// `tenantry.migration.finished.v1`: the job's outcome, counts and times; its `time` is
/// when it finished.
pub fn migration_event(sequence: u64, notice: &MigrationNotice, now: DateTime<Utc>) -> Event {
    let status = match notice.outcome {
        MigrationOutcome::Completed => "completed",
        MigrationOutcome::Failed => "failed",
    };
    let data = json!({
        "migrationId": notice.migration_id,
        "status": status,
        "totalItems": notice.total_items,
        "processedItems": notice.processed_items,
        // Created or already there as given: the items that hold now.
        "succeededItems": notice.created_items + notice.skipped_items,
        "createdItems": notice.created_items,
        "skippedItems": notice.skipped_items,
        "failedItems": notice.failed_items,
        "failureMessage": notice.failure_message,
        "createdAt": rfc3339(notice.created_at),
        "startedAt": rfc3339(notice.started_at),
        "finishedAt": rfc3339(notice.finished_at),
    });
    event(
        format!("evt_f{sequence}"),
        types::MIGRATION_FINISHED,
        None,
        notice.finished_at.unwrap_or(now),
        Origin::FeedSequence(sequence),
        data,
    )
}

/// The events a resynchronisation announces: what the tenant snapshot at `sequence` shows
/// changed since the state held (see `app::tenant_sync`). IDs `evt_s{sequence}_{i}` (a
/// snapshot is applied once, under the feed cursor), `tenantrysequence` the snapshot's, and
/// `tenantryresync: true`, since the change happened somewhere in the gap, at no known time
/// (`time` is when the gap was closed).
pub fn resync_events(sequence: u64, notices: &[AccountNotice], now: DateTime<Utc>) -> Vec<Event> {
    notices
        .iter()
        .enumerate()
        .map(|(i, notice)| {
            account_event_as(
                format!("evt_s{sequence}_{i}"),
                Origin::Resync(sequence),
                &AccountNotice {
                    occurred_at: None,
                    ..notice.clone()
                },
                now,
            )
        })
        .collect()
}

/// The event of one tenant-feed event.
pub fn account_event(sequence: u64, notice: &AccountNotice, now: DateTime<Utc>) -> Event {
    account_event_as(
        format!("evt_f{sequence}"),
        Origin::FeedSequence(sequence),
        notice,
        now,
    )
}

fn account_event_as(
    id: String,
    origin: Origin,
    notice: &AccountNotice,
    now: DateTime<Utc>,
) -> Event {
    let mut data = json!({
        "tenantId": notice.tenant_id,
        "parentTenantId": notice.parent_id,
        "changedFields": notice.changed_fields,
    });
    let event_type = match &notice.kind {
        AccountNoticeKind::Created => types::ACCOUNT_CREATED,
        AccountNoticeKind::Updated => types::ACCOUNT_UPDATED,
        AccountNoticeKind::Deleted => types::ACCOUNT_DELETED,
        AccountNoticeKind::Reactivated => types::ACCOUNT_REACTIVATED,
        AccountNoticeKind::SettingsChanged => types::ACCOUNT_SETTINGS_CHANGED,
        AccountNoticeKind::HierarchyChanged {
            old_parent,
            new_parent,
        } => {
            data["oldParentTenantId"] = json!(old_parent);
            data["parentTenantId"] = json!(new_parent);
            types::HIERARCHY_CHANGED
        }
        AccountNoticeKind::MembershipChanged { user_id, added } => {
            data["userId"] = json!(user_id);
            data["added"] = json!(added);
            types::MEMBERSHIP_CHANGED
        }
    };
    event(
        id,
        event_type,
        Some(notice.tenant_id.clone()),
        notice.occurred_at.unwrap_or(now),
        origin,
        data,
    )
}

/// The event of a grant's due time transition. Its ID derives from the transition's key, so
/// it is the same whichever replica sends it; its time is when the transition was due, and
/// `tenantryrevision` the revision the grant was read at.
pub fn transition_event(
    transition: &Transition,
    grant: &Grant,
    plan_key: Option<&str>,
    feature_keys: &[String],
    revision: u64,
) -> Event {
    let event_type = match transition.kind {
        TransitionKind::Started => types::GRANT_STARTED,
        TransitionKind::Expiring => types::GRANT_EXPIRING,
        TransitionKind::Expired => types::GRANT_EXPIRED,
    };
    let key = format!(
        "{}.{}.{}.{}",
        transition.grant_id,
        transition.kind.as_str(),
        transition.lead_secs,
        transition.anchor.timestamp_micros()
    );
    let digest = <Sha256 as sha2::Digest>::digest(key.as_bytes());
    let id: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    let due = transition.due();
    let mut data = json!({
        "grant": grant,
        "tenantId": grant.tenant_id,
        "userId": grant.user_id,
        "planId": grant.plan_id,
        "planKey": plan_key,
        "featureKeys": feature_keys,
        "dueAt": due.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
    });
    if transition.kind == TransitionKind::Expiring {
        data["leadSeconds"] = json!(transition.lead_secs);
    }
    event(
        format!("evt_t{id}"),
        event_type,
        Some(grant.tenant_id.clone()),
        due,
        Origin::Revision(revision),
        data,
    )
}

/// `tenantry.usage.threshold.v1`: an account's usage of a metered feature reached `threshold`
/// percent of what its open period made available (see `domain::threshold`). Its ID derives
/// from (account, feature, period start, threshold), the key it is recorded under once;
/// `tenantryrevision` is the revision of the write that reached it, `time` that write's.
pub fn threshold_event(crossing: &ThresholdCrossing, revision: u64) -> Event {
    let mut key = format!(
        "{}.{}.{}.{}",
        crossing.tenant_id,
        crossing.feature_id,
        crossing.period_start.timestamp_micros(),
        crossing.threshold
    );
    // A user's meter is another meter: its crossings are other events (accounts' keep their ids).
    if let Some(user) = &crossing.user_id {
        key.push_str(".user.");
        key.push_str(user);
    }
    let digest = <Sha256 as sha2::Digest>::digest(key.as_bytes());
    let id: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    let stamp = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let mut data = json!({
        "tenantId": crossing.tenant_id,
        "featureId": crossing.feature_id,
        "featureKey": crossing.feature_key,
        "threshold": crossing.threshold,
        "usage": crossing.usage,
        "balance": crossing.balance,
        "overage": crossing.overage,
        "periodStart": stamp(crossing.period_start),
        "periodEnd": stamp(crossing.period_end),
    });
    if let Some(user) = &crossing.user_id {
        data["userId"] = json!(user);
    }
    event(
        format!("evt_u{id}"),
        types::USAGE_THRESHOLD,
        Some(crossing.tenant_id.clone()),
        crossing.at,
        Origin::Revision(revision),
        data,
    )
}

/// Longest endpoint URL.
pub const MAX_URL_LEN: usize = 2048;
/// Most event types in a filter.
pub const MAX_EVENT_TYPES: usize = 64;
/// Most accounts in a filter.
pub const MAX_ACCOUNT_IDS: usize = 100;
/// Longest description.
pub const MAX_DESCRIPTION_LEN: usize = 500;
/// Most endpoints per deployment (a list answers all of them).
pub const MAX_ENDPOINTS: usize = 100;

/// Why an endpoint was disabled by the service.
pub const DISABLED_FAILING: &str = "failing";

/// A stored endpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct Endpoint {
    pub id: Uuid,
    pub url: String,
    pub event_types: Vec<String>,
    pub account_ids: Vec<String>,
    pub enabled: bool,
    pub description: String,
    pub disabled_reason: Option<String>,
    pub failing_since: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Endpoint {
    /// Whether `event` goes to this endpoint. An event about no account (a catalogue change,
    /// a grant deleted, a migration's end) reaches only endpoints without an account filter:
    /// the filter asks for those accounts' events, and such an event is no account's.
    pub fn wants(&self, event_type: &str, subject: Option<&str>) -> bool {
        (self.event_types.is_empty() || self.event_types.iter().any(|t| t == event_type))
            && (self.account_ids.is_empty()
                || subject.is_some_and(|s| self.account_ids.iter().any(|a| a == s)))
    }
}

/// A URL an endpoint may take, as written: `http`/`https`, a host, bounded. Returns the host
/// (an IP literal's brackets removed) and the port. Where the host points is checked apart
/// ([`refused_address`]).
pub fn validate_url(url: &str) -> Result<(String, u16)> {
    let bad = |message: &str| DomainError::invalid("url", message);
    if url.is_empty() {
        return Err(bad("is required"));
    }
    if url.len() > MAX_URL_LEN {
        return Err(bad("is longer than 2048 characters"));
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad("must not contain whitespace"));
    }
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| bad("must be an absolute http or https URL"))?;
    let default_port = match scheme.to_ascii_lowercase().as_str() {
        "http" => 80,
        "https" => 443,
        _ => return Err(bad("scheme must be http or https")),
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.contains('@') {
        return Err(bad("must not carry credentials"));
    }
    let (host, port) = if let Some(inner) = authority.strip_prefix('[') {
        let (host, after) = inner
            .split_once(']')
            .ok_or_else(|| bad("has an unclosed IPv6 literal"))?;
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p),
            None if after.is_empty() => None,
            None => return Err(bad("has a malformed host")),
        };
        (host.to_owned(), port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_owned(), Some(p)),
            None => (authority.to_owned(), None),
        }
    };
    if host.is_empty() {
        return Err(bad("must name a host"));
    }
    if !host
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '_'))
    {
        return Err(bad("has a malformed host"));
    }
    let port = match port {
        None => default_port,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| bad("has a malformed port"))?,
    };
    Ok((host.to_ascii_lowercase(), port))
}

/// Why an address is no place to deliver to, unless the operator allows private networks:
/// loopback, private (RFC 1918, CGNAT, unique-local), link-local, multicast, unspecified,
/// broadcast, documentation and other reserved ranges, and IPv4 addresses of those kinds
/// mapped or translated into IPv6.
pub fn refused_address(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => refused_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return refused_v4(v4);
            }
            let s = v6.segments();
            // NAT64 (64:ff9b::/96) and the IPv4-compatible form carry an IPv4 address.
            if (s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0, 0, 0, 0]) || s[..6] == [0; 6] {
                let v4 =
                    Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
                if v6.is_loopback() {
                    return Some("loopback");
                }
                if v6.is_unspecified() {
                    return Some("unspecified");
                }
                return refused_v4(v4);
            }
            refused_v6(v6)
        }
    }
}

fn refused_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let o = ip.octets();
    if ip.is_loopback() {
        Some("loopback")
    } else if ip.is_unspecified() || o[0] == 0 {
        Some("unspecified")
    } else if ip.is_private() || (o[0] == 100 && (o[1] & 0xc0) == 64) {
        Some("private")
    } else if ip.is_link_local() {
        Some("link-local")
    } else if ip.is_multicast() {
        Some("multicast")
    } else if ip.is_broadcast()
        || o[0] >= 240
        || ip.is_documentation()
        // IETF protocol assignments (192.0.0.0/24) and benchmarking (198.18.0.0/15).
        || (o[0] == 192 && o[1] == 0 && o[2] == 0)
        || (o[0] == 198 && (o[1] & 0xfe) == 18)
    {
        Some("reserved")
    } else {
        None
    }
}

fn refused_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let s = ip.segments();
    if ip.is_loopback() {
        Some("loopback")
    } else if ip.is_unspecified() {
        Some("unspecified")
    } else if (s[0] & 0xfe00) == 0xfc00 {
        Some("private")
    } else if (s[0] & 0xffc0) == 0xfe80 || (s[0] & 0xffc0) == 0xfec0 {
        Some("link-local")
    } else if ip.is_multicast() {
        Some("multicast")
    } else if s[0] == 0x2001 && s[1] == 0x0db8 {
        Some("reserved")
    } else {
        None
    }
}

/// Validates an event-type filter: known types, no duplicates, bounded.
pub fn validate_event_types(values: &[String]) -> Result<()> {
    if values.len() > MAX_EVENT_TYPES {
        return Err(DomainError::invalid(
            "eventTypes",
            format!("at most {MAX_EVENT_TYPES} event types"),
        ));
    }
    for (i, value) in values.iter().enumerate() {
        if !types::ALL.contains(&value.as_str()) {
            return Err(DomainError::invalid(
                "eventTypes",
                format!("item {i} is not a known event type"),
            ));
        }
        if values[..i].contains(value) {
            return Err(DomainError::invalid(
                "eventTypes",
                format!("item {i} is listed twice"),
            ));
        }
    }
    Ok(())
}

/// Validates an account filter: bounded, each an account ID as the tenant service takes it.
pub fn validate_account_ids(values: &[String]) -> Result<()> {
    if values.len() > MAX_ACCOUNT_IDS {
        return Err(DomainError::invalid(
            "accountIds",
            format!("at most {MAX_ACCOUNT_IDS} accounts"),
        ));
    }
    for (i, value) in values.iter().enumerate() {
        if value.is_empty()
            || value.len() > 255
            || value.chars().any(|c| c.is_whitespace() || c == '/')
        {
            return Err(DomainError::invalid(
                "accountIds",
                format!("item {i} is not an account ID (1-255 characters, no whitespace or /)"),
            ));
        }
    }
    Ok(())
}

pub fn validate_description(value: &str) -> Result<()> {
    if value.chars().count() > MAX_DESCRIPTION_LEN {
        return Err(DomainError::invalid(
            "description",
            format!("at most {MAX_DESCRIPTION_LEN} characters"),
        ));
    }
    Ok(())
}

/// A new secret: `whsec_` + base64 of 32 random bytes (the Standard Webhooks form).
pub fn new_secret() -> String {
    let mut bytes = [0u8; 32];
    bytes[..16].copy_from_slice(Uuid::new_v4().as_bytes());
    bytes[16..].copy_from_slice(Uuid::new_v4().as_bytes());
    format!("whsec_{}", BASE64.encode(bytes))
}

/// The `webhook-signature` header's value: `v1,` + base64 HMAC-SHA256, keyed with the
/// secret's decoded bytes, of `{id}.{timestamp}.{body}`.
pub fn sign(secret: &str, id: &str, timestamp: i64, body: &str) -> Result<String> {
    let key = BASE64
        .decode(secret.strip_prefix("whsec_").unwrap_or(secret))
        .map_err(|_| DomainError::internal("a stored webhook secret is not base64"))?;
    let mut mac = Hmac::<Sha256>::new_from_slice(&key)
        .map_err(|_| DomainError::internal("a webhook secret cannot key HMAC"))?;
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body.as_bytes());
    Ok(format!("v1,{}", BASE64.encode(mac.finalize().into_bytes())))
}

/// When the attempt after `failures` failed ones is due: the schedule's step for it, with
/// ±20 % jitter so endpoints that failed together do not retry together; `None` when the
/// schedule is spent. `unit` is a uniform draw in [0, 1).
pub fn retry_delay(schedule: &[Duration], failures: u32, unit: f64) -> Option<Duration> {
    let base = *schedule.get(failures.checked_sub(1)? as usize)?;
    Some(base.mul_f64(0.8 + 0.4 * unit.clamp(0.0, 1.0)))
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryStatus {
    Pending,
    Succeeded,
    Failed,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Succeeded => "succeeded",
            DeliveryStatus::Failed => "failed",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "pending" => Some(Self::Pending),
            "succeeded" => Some(Self::Succeeded),
            "failed" => Some(Self::Failed),
            _ => None,
        }
    }
}

/// One event's delivery to one endpoint, as the log shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    pub id: Uuid,
    pub endpoint_id: Uuid,
    pub event_id: String,
    pub event_type: String,
    pub subject: Option<String>,
    pub status: DeliveryStatus,
    pub attempts: u32,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub last_attempt_at: Option<DateTime<Utc>>,
    pub last_status_code: Option<u16>,
    pub last_latency_ms: Option<u64>,
    pub last_response_excerpt: Option<String>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_http_or_https_with_a_host() {
        assert_eq!(
            validate_url("https://hooks.example.com/x?y=1").unwrap(),
            ("hooks.example.com".into(), 443)
        );
        assert_eq!(
            validate_url("http://[::1]:8080/").unwrap(),
            ("::1".into(), 8080)
        );
        for bad in [
            "",
            "ftp://example.com",
            "https://",
            "https://user:pw@example.com/",
            "https://example.com:0/",
            "https://exa mple.com/",
            "example.com/path",
        ] {
            assert!(validate_url(bad).is_err(), "{bad}");
        }
        assert!(validate_url(&format!("https://e.com/{}", "a".repeat(2048))).is_err());
    }

    #[test]
    fn private_and_special_addresses_are_refused() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::a9fe:a9fe",
        ] {
            assert!(
                refused_address(ip.parse().unwrap()).is_some(),
                "{ip} should be refused"
            );
        }
        for ip in ["93.184.216.34", "2606:4700::1111", "::ffff:8.8.8.8"] {
            assert_eq!(refused_address(ip.parse().unwrap()), None, "{ip}");
        }
    }

    #[test]
    fn the_signature_matches_the_standard_webhooks_example() {
        // The specification's own example (standard-webhooks/spec, "Verifying").
        let signature = sign(
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            r#"{"test": 2432232314}"#,
        )
        .unwrap();
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn retries_follow_the_schedule_then_stop() {
        let schedule = [Duration::from_secs(5), Duration::from_secs(300)];
        let first = retry_delay(&schedule, 1, 0.5).unwrap();
        assert_eq!(first, Duration::from_secs(5));
        assert!(retry_delay(&schedule, 2, 0.0).unwrap() >= Duration::from_secs(240));
        assert_eq!(retry_delay(&schedule, 3, 0.5), None);
    }

    #[test]
    fn grant_upserts_say_what_happened() {
        let now = Utc::now();
        let grant = Grant {
            id: Uuid::now_v7(),
            plan_id: Uuid::now_v7(),
            tenant_id: "acme".into(),
            user_id: None,
            starts_at: now,
            expires_at: None,
            revoked_at: None,
            revoked_by: None,
            revoke_reason: None,
            source: crate::domain::GrantSource::Api,
            external_id: None,
            granted_by: None,
            metadata: Value::Null,
            created_at: now,
            updated_at: now,
        };
        let later = now + chrono::Duration::seconds(1);
        let updated = Grant {
            updated_at: later,
            ..grant.clone()
        };
        let revoked = Grant {
            revoked_at: Some(later),
            ..updated.clone()
        };
        let events = revision_events(
            7,
            now,
            &[
                IndexChange::UpsertGrant(grant),
                IndexChange::UpsertGrant(updated),
                IndexChange::UpsertGrant(revoked),
                IndexChange::UpsertTenant {
                    id: "acme".into(),
                    parent: None,
                },
            ],
        );
        let kinds: Vec<_> = events.iter().map(|e| e.event_type).collect();
        assert_eq!(
            kinds,
            [
                types::GRANT_CREATED,
                types::GRANT_UPDATED,
                types::GRANT_REVOKED
            ]
        );
        let body: Value = serde_json::from_str(&events[0].body).unwrap();
        assert_eq!(body["specversion"], "1.0");
        assert_eq!(body["id"], "evt_r7_0");
        assert_eq!(body["subject"], "acme");
        assert_eq!(body["tenantryrevision"], 7);
    }

    #[test]
    fn a_threshold_event_is_named_by_its_account_feature_period_and_threshold() {
        let start = Utc::now();
        let crossing = ThresholdCrossing {
            tenant_id: "acme".into(),
            user_id: None,
            feature_id: Uuid::from_u128(7),
            feature_key: "calls".into(),
            threshold: 80,
            usage: 80,
            balance: 20,
            overage: 0,
            period_start: start,
            period_end: start + chrono::Duration::days(30),
            at: start + chrono::Duration::days(2),
        };
        let event = threshold_event(&crossing, 12);
        // The same crossing, written again elsewhere, has the same ID; any other has another.
        assert_eq!(threshold_event(&crossing, 13).id, event.id);
        for other in [
            ThresholdCrossing {
                threshold: 100,
                ..crossing.clone()
            },
            ThresholdCrossing {
                period_start: crossing.period_end,
                ..crossing.clone()
            },
            ThresholdCrossing {
                user_id: Some("ada".into()),
                ..crossing.clone()
            },
            ThresholdCrossing {
                tenant_id: "globex".into(),
                ..crossing
            },
        ] {
            assert_ne!(threshold_event(&other, 12).id, event.id);
        }
        assert_eq!(event.event_type, types::USAGE_THRESHOLD);
        assert_eq!(event.subject.as_deref(), Some("acme"));
        let body: Value = serde_json::from_str(&event.body).unwrap();
        assert_eq!(body["tenantryrevision"], 12);
        assert_eq!(body["subject"], "acme");
        assert_eq!(body["data"]["featureKey"], "calls");
        assert_eq!(body["data"]["threshold"], 80);
        assert_eq!(
            (
                body["data"]["usage"].as_i64(),
                body["data"]["balance"].as_i64()
            ),
            (Some(80), Some(20))
        );
        assert!(validate_event_types(&[types::USAGE_THRESHOLD.to_owned()]).is_ok());
    }
}
