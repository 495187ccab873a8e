//! Input validation. Single entities fail on their first problem; grant batches collect every
//! bad item by index so a caller can fix a whole request at once (all-or-nothing writes).

use std::collections::HashSet;

use chrono::{DateTime, Duration, NaiveDate, NaiveDateTime, Utc};
use serde::{Deserialize, Deserializer};
use serde_json::Value;
use uuid::Uuid;

use super::error::{DomainError, ItemError};
use super::model::{
    Allocation, AllocationType, Feature, FeatureFlag, Grant, GrantSource, Metering, Plan, Route,
    RoutePolicy, Rule,
};
use tenantry_index::condition;
use tenantry_index::route::{PathPattern, parse_method};

/// Most items one batch call may carry.
pub const MAX_BATCH: usize = 1000;
pub const MAX_KEY_LEN: usize = 128;
const MAX_TEXT_LEN: usize = 256;

/// Feature and plan keys as Frontegg takes them (`SSO`, `premiumReports`): case-sensitive,
/// 1–128 characters, any printable ones but `/` (keys appear in paths) and whitespace.
fn key_problem(key: &str) -> Option<&'static str> {
    let len = key.chars().count();
    if len == 0 || len > MAX_KEY_LEN {
        Some("must be 1 to 128 characters")
    } else if key
        .chars()
        .any(|c| c == '/' || c.is_whitespace() || c.is_control())
    {
        Some("may contain any printable characters but '/' and whitespace")
    } else {
        None
    }
}

/// A grant's `source`: a lowercase word (letters, digits, `_`, `-`, `.`) of 1–64 characters.
fn source_problem(source: &str) -> bool {
    source.is_empty()
        || source.len() > 64
        || !source.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-' | b'.')
        })
}

/// Feature and plan keys: see [`key_problem`].
pub fn validate_key(field: &str, key: &str) -> Result<(), DomainError> {
    match key_problem(key) {
        Some(message) => Err(DomainError::invalid(field, message)),
        None => Ok(()),
    }
}

fn validate_text(field: &str, value: &str, required: bool) -> Result<(), DomainError> {
    if required && value.trim().is_empty() {
        return Err(DomainError::invalid(field, "must not be empty"));
    }
    if value.len() > MAX_TEXT_LEN {
        return Err(DomainError::invalid(field, "must be at most 256 bytes"));
    }
    Ok(())
}

fn validate_metadata(field: &str, value: &Value) -> Result<(), DomainError> {
    match metadata_problem(value) {
        Some(problem) => Err(DomainError::invalid(field, problem)),
        None => Ok(()),
    }
}

/// What is wrong with a metadata value: not an object, or over the metadata limits.
fn metadata_problem(value: &Value) -> Option<String> {
    match value {
        Value::Null => None,
        Value::Object(_) => {
            tenantry_common::limits::check_freeform(value, &tenantry_common::limits::METADATA).err()
        }
        Value::Bool(_) | Value::Number(_) | Value::String(_) | Value::Array(_) => {
            Some("must be a JSON object".to_owned())
        }
    }
}

/// Check attributes: within the attribute limits (depth, keys, size).
pub fn validate_attributes(
    field: &str,
    attributes: Option<&serde_json::Map<String, Value>>,
) -> Result<(), DomainError> {
    let Some(attributes) = attributes else {
        return Ok(());
    };
    // Walks a `Value`; attributes are at most a few KiB.
    let value = Value::Object(attributes.clone());
    tenantry_common::limits::check_freeform(&value, &tenantry_common::limits::ATTRIBUTES)
        .map_err(|problem| DomainError::invalid(field, problem))
}

pub fn validate_feature(feature: &Feature) -> Result<(), DomainError> {
    validate_key("key", &feature.key)?;
    validate_text("name", &feature.name, true)?;
    validate_metadata("metadata", &feature.metadata)?;
    let mut seen = HashSet::new();
    for (i, p) in feature.permissions.iter().enumerate() {
        let field = format!("permissions[{i}]");
        validate_text(&field, p, true)?;
        if !seen.insert(p.as_str()) {
            return Err(DomainError::invalid(field, "duplicate permission key"));
        }
    }
    match (feature.allocation_type, &feature.metering) {
        (AllocationType::Metered, Some(metering)) => validate_metering(metering),
        (AllocationType::Metered, None) => Err(DomainError::invalid(
            "metering",
            "required for METERED features",
        )),
        (AllocationType::Bool | AllocationType::MaxCount, Some(_)) => Err(DomainError::invalid(
            "metering",
            "only METERED features take a metering",
        )),
        (AllocationType::Bool | AllocationType::MaxCount, None) => Ok(()),
    }
}

/// Longest usage unit, in characters.
pub const MAX_UNIT_LEN: usize = 64;

/// A usage unit (`api_call`, `GB`): 1–64 characters, none of them whitespace or control
/// characters, so it reads the same in every list and log line.
fn unit_problem(unit: &str) -> Option<&'static str> {
    let len = unit.chars().count();
    if len == 0 || len > MAX_UNIT_LEN {
        Some("must be 1 to 64 characters")
    } else if unit.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Some("must be visible characters: no whitespace or control characters")
    } else {
        None
    }
}

/// The recurrence was parsed when decoded; the anchor must be expressible in RFC 3339 (years
/// 0000–9999), as every REST answer renders it.
fn validate_metering(metering: &Metering) -> Result<(), DomainError> {
    if let Some(problem) = unit_problem(&metering.unit) {
        return Err(DomainError::invalid("metering.unit", problem));
    }
    let year = chrono::Datelike::year(&metering.period.anchor);
    if !(0..=9999).contains(&year) {
        return Err(DomainError::invalid(
            "metering.anchor",
            "must be between the years 0000 and 9999",
        ));
    }
    Ok(())
}

/// What an update of a stored feature may not change. A metered feature's usage is counted
/// by its aggregation within its periods, so neither may change once it is metered, nor may
/// it stop being metered (a later metering would re-read the usage counted so far); its unit,
/// soft limit and carried overage may change.
pub fn validate_feature_change(before: &Feature, after: &Feature) -> Result<(), DomainError> {
    let Some(was) = &before.metering else {
        return Ok(());
    };
    let Some(now) = after
        .metering
        .as_ref()
        .filter(|_| after.allocation_type == AllocationType::Metered)
    else {
        return Err(DomainError::MeteringImmutable {
            field: "allocation_type",
        });
    };
    if now.aggregation != was.aggregation {
        return Err(DomainError::MeteringImmutable {
            field: "metering.aggregation",
        });
    }
    if now.period.recurrence != was.period.recurrence {
        return Err(DomainError::MeteringImmutable {
            field: "metering.recurrence",
        });
    }
    if now.period.anchor != was.period.anchor {
        return Err(DomainError::MeteringImmutable {
            field: "metering.anchor",
        });
    }
    Ok(())
}

/// Whether plans' allocations of a feature stay valid when its type changes from `before` to
/// `after`: a count stays a count between MAX_COUNT and METERED (a limit becomes the amount
/// issued each period, and back); on/off and counted values never convert.
pub fn allocations_survive(before: AllocationType, after: AllocationType) -> bool {
    before == after || (before.is_counted() && after.is_counted())
}

/// The type a plan's allocation of a feature of type `ty` carries: metered features are
/// allocated `max_count` values (the amount issued each period).
pub fn allocation_type_for(ty: AllocationType) -> AllocationType {
    if ty.is_counted() {
        AllocationType::MaxCount
    } else {
        ty
    }
}

/// Every rule's conditions must compile (values shaped for their operation).
pub fn validate_rules(field: &str, rules: &[Rule]) -> Result<(), DomainError> {
    for (r, rule) in rules.iter().enumerate() {
        if rule.conditions.is_empty() {
            return Err(DomainError::invalid(
                format!("{field}[{r}].conditions"),
                "a rule needs at least one condition",
            ));
        }
        for (c, cond) in rule.conditions.iter().enumerate() {
            condition::compile(cond).map_err(|message| {
                DomainError::invalid(format!("{field}[{r}].conditions[{c}]"), message)
            })?;
        }
    }
    Ok(())
}

/// `feature_type` answers the allocation type of a known feature key.
pub fn validate_plan(
    plan: &Plan,
    feature_type: impl Fn(&str) -> Option<AllocationType>,
) -> Result<(), DomainError> {
    validate_key("key", &plan.key)?;
    validate_text("name", &plan.name, true)?;
    validate_metadata("metadata", &plan.metadata)?;
    if plan.default_time_limitation_days == Some(0) {
        return Err(DomainError::invalid(
            "defaultTimeLimitation",
            "must be at least one day",
        ));
    }
    let mut seen = HashSet::new();
    for (i, pf) in plan.features.iter().enumerate() {
        let field = format!("features[{i}]");
        let Some(ty) = feature_type(&pf.feature_key) else {
            return Err(DomainError::invalid(field, "unknown feature key"));
        };
        if !seen.insert(pf.feature_key.as_str()) {
            return Err(DomainError::invalid(field, "feature listed twice"));
        }
        if let Some(value) = pf.allocation
            && value.allocation_type() != allocation_type_for(ty)
        {
            let message = if ty == AllocationType::Metered {
                "a metered feature is allocated a max_count value (the amount issued each period)"
            } else {
                "allocation type differs from the feature's"
            };
            return Err(DomainError::invalid(format!("{field}.allocation"), message));
        }
    }
    validate_rules("rules", &plan.rules)
}

pub fn validate_flag(
    flag: &FeatureFlag,
    feature_exists: impl Fn(&str) -> bool,
) -> Result<(), DomainError> {
    if !feature_exists(&flag.feature_key) {
        return Err(DomainError::invalid("featureKey", "unknown feature key"));
    }
    validate_rules("rules", &flag.rules)
}

pub fn validate_route(
    route: &Route,
    feature_exists: impl Fn(&str) -> bool,
) -> Result<(), DomainError> {
    parse_method(&route.method).map_err(|m| DomainError::invalid("method", m))?;
    PathPattern::parse(&route.path).map_err(|m| DomainError::invalid("path", m))?;
    if let RoutePolicy::Require {
        features,
        permissions,
    } = &route.policy
    {
        if features.is_empty() && permissions.is_empty() {
            return Err(DomainError::invalid(
                "policy",
                "require needs at least one feature or permission",
            ));
        }
        for (i, f) in features.iter().enumerate() {
            if !feature_exists(f) {
                return Err(DomainError::invalid(
                    format!("policy.features[{i}]"),
                    "unknown feature key",
                ));
            }
        }
        for (i, p) in permissions.iter().enumerate() {
            validate_text(&format!("policy.permissions[{i}]"), p, true)?;
        }
    }
    Ok(())
}

/// Why a tenant ID is malformed: the tenant service's rule, shared, so an ID it would refuse
/// never reaches it.
pub use tenantry_common::ids::tenant_id_problem;

pub fn validate_tenant_id(field: &str, id: &str) -> Result<(), DomainError> {
    match tenant_id_problem(id) {
        Some(message) => Err(DomainError::invalid(field, message)),
        None => Ok(()),
    }
}

/// Accepts RFC 3339, Frontegg's zone-less `2022-01-01T12:00:00` (read as UTC) and a plain date.
pub fn parse_timestamp(s: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(dt) = DateTime::parse_from_rfc3339(s) {
        return Ok(dt.with_timezone(&Utc));
    }
    if let Ok(naive) = NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f") {
        return Ok(naive.and_utc());
    }
    if let Some(midnight) = s
        .parse::<NaiveDate>()
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
    {
        return Ok(midnight.and_utc());
    }
    Err(format!("malformed timestamp {s:?}"))
}

/// The start of a grant that ends at `expires_at` without a start given before it: just
/// before its end, so the grant is expired from `expires_at` on (a start stays strictly before
/// the end, which storage and the index rely on).
fn ended_grant_start(expires_at: DateTime<Utc>) -> DateTime<Utc> {
    expires_at - Duration::milliseconds(1)
}

/// One item of a batch create (the seed's shape plus our optional fields).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GrantInput {
    pub plan_id: String,
    pub tenant_id: String,
    #[serde(default)]
    pub user_id: Option<String>,
    #[serde(default)]
    pub starts_at: Option<String>,
    #[serde(default, alias = "expirationDate")]
    pub expires_at: Option<String>,
    #[serde(default)]
    pub external_id: Option<String>,
    #[serde(default)]
    pub metadata: Option<Value>,
    /// Overrides the batch's source for this item (`inherited` is refused: never stored).
    #[serde(default)]
    pub source: Option<String>,
}

/// What batch validation needs to know beyond the request; the service answers from storage
/// and the tenant service (fetched once per batch, before calling).
pub trait GrantContext {
    fn plan(&self, id: Uuid) -> Option<&Plan>;
    /// A plan named by key instead of ID.
    fn plan_by_key(&self, _key: &str) -> Option<&Plan> {
        None
    }
    fn account_exists(&self, id: &str) -> bool;
    /// Whether an existing grant of this account already carries the external id.
    fn external_id_taken(&self, tenant: &str, external_id: &str) -> bool;
}

/// Who creates the grants and how, shared by a whole batch.
#[derive(Debug, Clone, PartialEq)]
pub struct GrantOrigin<'a> {
    pub source: GrantSource,
    pub granted_by: Option<&'a str>,
    pub now: DateTime<Utc>,
}

fn parse_uuid(s: &str) -> Result<Uuid, &'static str> {
    Uuid::try_parse(s).map_err(|_| "must be a UUID")
}

fn refuse_oversized(len: usize) -> Result<(), DomainError> {
    if len > MAX_BATCH {
        return Err(DomainError::invalid(
            "entitlements",
            format!("at most {MAX_BATCH} items per call, got {len}"),
        ));
    }
    Ok(())
}

fn check_user_id(errors: &mut Vec<ItemError>, i: usize, user: Option<&str>) {
    if let Some(u) = user
        && (u.trim().is_empty() || u.len() > MAX_TEXT_LEN)
    {
        errors.push(ItemError::new(i, "userId", "must be 1 to 256 bytes"));
    }
}

/// Validates a batch create and builds the grants (new UUIDv7 ids, in request order). Plans'
/// `defaultTimeLimitation` fills a missing expiry. Any bad item refuses the whole batch.
pub fn validate_new_grants(
    inputs: &[GrantInput],
    ctx: &impl GrantContext,
    origin: &GrantOrigin<'_>,
) -> Result<Vec<Grant>, DomainError> {
    refuse_oversized(inputs.len())?;
    let mut errors = Vec::new();
    let mut grants = Vec::with_capacity(inputs.len());
    let mut external_ids = HashSet::new();
    for (i, input) in inputs.iter().enumerate() {
        let before = errors.len();
        let mut err = |field: &str, message: &str| errors.push(ItemError::new(i, field, message));
        let plan = match parse_uuid(&input.plan_id) {
            Ok(id) => ctx.plan(id).or_else(|| {
                err("planId", "unknown plan");
                None
            }),
            Err(_) if key_problem(&input.plan_id).is_none() => {
                ctx.plan_by_key(&input.plan_id).or_else(|| {
                    err("planId", "unknown plan");
                    None
                })
            }
            Err(_) => {
                err("planId", "must be a plan UUID or key");
                None
            }
        };
        let tenant = match tenant_id_problem(&input.tenant_id) {
            None if ctx.account_exists(&input.tenant_id) => Some(input.tenant_id.as_str()),
            None => {
                err("tenantId", "unknown or deleted account");
                None
            }
            Some(m) => {
                err("tenantId", m);
                None
            }
        };
        let mut parse_time = |field: &str, value: &Option<String>| match value {
            Some(s) => parse_timestamp(s).map(Some).unwrap_or_else(|m| {
                err(field, &m);
                None
            }),
            None => None,
        };
        let given_start = parse_time("startsAt", &input.starts_at);
        let expires_at = parse_time("expiresAt", &input.expires_at);
        let mut starts_at = given_start.unwrap_or(origin.now);
        let expires_at = expires_at.or_else(|| {
            let days = plan?.default_time_limitation_days?;
            Some(starts_at + Duration::days(i64::from(days)))
        });
        if let Some(e) = expires_at
            && e <= starts_at
        {
            if input.starts_at.is_some() {
                err("expiresAt", "must be after startsAt");
            } else {
                // The seed's own example grants with a past expiry: the grant is recorded as
                // one that already ended then.
                starts_at = ended_grant_start(e);
            }
        }
        if let Some(problem) = input.metadata.as_ref().and_then(metadata_problem) {
            err("metadata", &problem);
        }
        check_user_id(&mut errors, i, input.user_id.as_deref());
        let source = match input.source.as_deref() {
            None => origin.source.clone(),
            Some("inherited") => {
                errors.push(ItemError::new(
                    i,
                    "source",
                    "inherited grants are derived, never stored",
                ));
                origin.source.clone()
            }
            Some(s) if source_problem(s) => {
                errors.push(ItemError::new(
                    i,
                    "source",
                    "must be a lowercase word of 1 to 64 characters",
                ));
                origin.source.clone()
            }
            Some(s) => GrantSource::from(s.to_owned()),
        };
        if let (Some(ext), Some(tenant)) = (&input.external_id, tenant) {
            if ext.is_empty() || ext.len() > MAX_TEXT_LEN {
                errors.push(ItemError::new(i, "externalId", "must be 1 to 256 bytes"));
            } else if !external_ids.insert((tenant, ext.as_str()))
                || ctx.external_id_taken(tenant, ext)
            {
                errors.push(ItemError::new(
                    i,
                    "externalId",
                    "already used for this account",
                ));
            }
        }
        if errors.len() > before {
            continue;
        }
        let (Some(plan), Some(tenant)) = (plan, tenant) else {
            continue;
        };
        grants.push(Grant {
            id: Uuid::now_v7(),
            plan_id: plan.id,
            tenant_id: tenant.to_owned(),
            user_id: input.user_id.clone(),
            starts_at,
            expires_at,
            revoked_at: None,
            revoked_by: None,
            revoke_reason: None,
            source,
            external_id: input.external_id.clone(),
            granted_by: origin.granted_by.map(str::to_owned),
            metadata: input.metadata.clone().unwrap_or(Value::Null),
            created_at: origin.now,
            updated_at: origin.now,
        });
    }
    if errors.is_empty() {
        Ok(grants)
    } else {
        Err(DomainError::InvalidItems(errors))
    }
}

/// A single create: the batch rule, reported as a plain invalid argument.
pub fn validate_new_grant(
    input: &GrantInput,
    ctx: &impl GrantContext,
    origin: &GrantOrigin<'_>,
) -> Result<Grant, DomainError> {
    match validate_new_grants(std::slice::from_ref(input), ctx, origin) {
        Ok(mut grants) => grants
            .pop()
            .ok_or_else(|| DomainError::internal("validated batch of one is empty")),
        Err(DomainError::InvalidItems(mut errors)) if !errors.is_empty() => {
            let first = errors.swap_remove(0);
            Err(DomainError::invalid(first.field, first.message))
        }
        Err(other) => Err(other),
    }
}

fn present_or_null<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

/// One item of a batch update. `expires_at`: absent keeps it, `null` clears it.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GrantPatch {
    pub id: String,
    #[serde(default)]
    pub starts_at: Option<String>,
    #[serde(
        default,
        alias = "expirationDate",
        deserialize_with = "present_or_null"
    )]
    pub expires_at: Option<Option<String>>,
    #[serde(default)]
    pub metadata: Option<Value>,
    /// New external ID; `Some("")` clears it.
    #[serde(default)]
    pub external_id: Option<String>,
}

/// Validates a batch update against current grants and returns the updated grants in order.
/// `external_id_owner(tenant, external_id)` names the stored grant holding an external id in
/// an account: a patch may not take one another grant holds (even if that grant gives it up
/// in the same batch), nor one an earlier patch of the batch took.
pub fn validate_grant_updates(
    patches: &[GrantPatch],
    current: impl Fn(Uuid) -> Option<Grant>,
    external_id_owner: impl Fn(&str, &str) -> Option<Uuid>,
    now: DateTime<Utc>,
) -> Result<Vec<Grant>, DomainError> {
    refuse_oversized(patches.len())?;
    let mut errors = Vec::new();
    let mut out = Vec::with_capacity(patches.len());
    let mut seen = HashSet::new();
    let mut claimed: HashSet<(String, String)> = HashSet::new();
    for (i, patch) in patches.iter().enumerate() {
        let before = errors.len();
        let mut err = |e: ItemError| errors.push(e);
        let grant = match parse_uuid(&patch.id) {
            Ok(id) if !seen.insert(id) => {
                err(ItemError::new(i, "id", "listed twice"));
                None
            }
            Ok(id) => current(id).or_else(|| {
                err(ItemError::grant_not_found(i));
                None
            }),
            Err(m) => {
                err(ItemError::new(i, "id", m));
                None
            }
        };
        let Some(mut grant) = grant else { continue };
        if grant.revoked_at.is_some() {
            err(ItemError::grant_revoked(i));
        }
        if let Some(s) = &patch.starts_at {
            match parse_timestamp(s) {
                Ok(t) => grant.starts_at = t,
                Err(m) => err(ItemError::new(i, "startsAt", &m)),
            }
        }
        match &patch.expires_at {
            Some(Some(s)) => match parse_timestamp(s) {
                Ok(t) => grant.expires_at = Some(t),
                Err(m) => err(ItemError::new(i, "expiresAt", &m)),
            },
            Some(None) => grant.expires_at = None,
            None => {}
        }
        if let Some(meta) = &patch.metadata {
            if let Some(problem) = metadata_problem(meta) {
                err(ItemError::new(i, "metadata", &problem));
            } else {
                grant.metadata = meta.clone();
            }
        }
        match patch.external_id.as_deref() {
            Some("") => grant.external_id = None,
            Some(ext) if ext.len() > MAX_TEXT_LEN => {
                err(ItemError::new(i, "externalId", "must be 1 to 256 bytes"))
            }
            Some(ext)
                if external_id_owner(&grant.tenant_id, ext).is_some_and(|o| o != grant.id)
                    || !claimed.insert((grant.tenant_id.clone(), ext.to_owned())) =>
            {
                err(ItemError::new(
                    i,
                    "externalId",
                    "already used for this account",
                ));
            }
            Some(ext) => grant.external_id = Some(ext.to_owned()),
            None => {}
        }
        if let Some(e) = grant.expires_at
            && e <= grant.starts_at
        {
            // A past expiry alone ends the grant (Frontegg clients end a grant now that way);
            // one that had not started never will. A future expiry at or before the start is
            // a range the wrong way round: moving the start before it would make the grant
            // active for a millisecond then.
            if patch.starts_at.is_some() || e > now {
                err(ItemError::new(i, "expiresAt", "must be after startsAt"));
            } else {
                grant.starts_at = ended_grant_start(e);
            }
        }
        if errors.len() == before {
            grant.updated_at = now;
            out.push(grant);
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(DomainError::InvalidItems(errors))
    }
}

/// Validates a batch delete: every id well-formed, known and listed once.
pub fn validate_grant_deletes(
    ids: &[String],
    exists: impl Fn(Uuid) -> bool,
) -> Result<Vec<Uuid>, DomainError> {
    refuse_oversized(ids.len())?;
    let mut errors = Vec::new();
    let mut out = Vec::with_capacity(ids.len());
    let mut seen = HashSet::new();
    for (i, raw) in ids.iter().enumerate() {
        match parse_uuid(raw) {
            Err(m) => errors.push(ItemError::new(i, "id", m)),
            Ok(id) if !seen.insert(id) => errors.push(ItemError::new(i, "id", "listed twice")),
            Ok(id) if !exists(id) => errors.push(ItemError::grant_not_found(i)),
            Ok(id) => out.push(id),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(DomainError::InvalidItems(errors))
    }
}

/// Revokes a grant, keeping its history. Revoking twice is a failed precondition.
pub fn revoke_grant(
    grant: &Grant,
    revoked_by: Option<&str>,
    reason: Option<&str>,
    now: DateTime<Utc>,
) -> Result<Grant, DomainError> {
    if grant.revoked_at.is_some() {
        return Err(DomainError::FailedPrecondition(format!(
            "grant {} is already revoked",
            grant.id
        )));
    }
    let mut revoked = grant.clone();
    revoked.revoked_at = Some(now);
    revoked.revoked_by = revoked_by.map(str::to_owned);
    revoked.revoke_reason = reason.map(str::to_owned);
    revoked.updated_at = now;
    Ok(revoked)
}

/// The allocation a plan gives a feature, bare keys resolved (`true` / unlimited).
pub fn effective_plan_allocation(value: Option<Allocation>, ty: AllocationType) -> Allocation {
    value.unwrap_or(Allocation::full(ty)).coerce(ty)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::model::{
        Condition, ConditionOp, GrantStatus, Limit, PlanFeature, Treatment,
    };
    use chrono::TimeZone;
    use serde_json::json;
    use std::collections::HashMap;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2025, 6, 1, 0, 0, 0).unwrap()
    }

    fn plan(days: Option<u32>) -> Plan {
        Plan {
            id: Uuid::new_v4(),
            key: "pro".into(),
            name: "Pro".into(),
            description: None,
            metadata: Value::Null,
            features: vec![PlanFeature::bare("sso")],
            default_time_limitation_days: days,
            assign_on_signup: false,
            rules: vec![],
            default_treatment: Treatment::False,
            inherit_to_sub_accounts: false,
        }
    }

    struct Ctx {
        plans: HashMap<Uuid, Plan>,
        accounts: Vec<String>,
        taken: Vec<(String, String)>,
    }

    impl GrantContext for Ctx {
        fn plan(&self, id: Uuid) -> Option<&Plan> {
            self.plans.get(&id)
        }
        fn account_exists(&self, id: &str) -> bool {
            self.accounts.iter().any(|a| a == id)
        }
        fn external_id_taken(&self, tenant: &str, external_id: &str) -> bool {
            self.taken
                .iter()
                .any(|(t, e)| *t == tenant && e == external_id)
        }
    }

    fn origin() -> GrantOrigin<'static> {
        GrantOrigin {
            source: GrantSource::Batch,
            granted_by: Some("admin"),
            now: now(),
        }
    }

    #[test]
    fn keys() {
        // Frontegg's keys: case-sensitive, printable, no `/` or whitespace, up to 128.
        for ok in [
            "a",
            "sso",
            "SSO",
            "premiumReports",
            "max-seats_2.v1",
            "é:π#1",
            &"x".repeat(128),
        ] {
            assert!(validate_key("key", ok).is_ok(), "{ok}");
        }
        for bad in ["", "a b", "a\tb", "a\u{7}", &"x".repeat(129), "a/b"] {
            assert!(validate_key("key", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn plans_check_features_types_and_rules() {
        let types = |k: &str| match k {
            "sso" => Some(AllocationType::Bool),
            "seats" => Some(AllocationType::MaxCount),
            _ => None,
        };
        let mut p = plan(None);
        assert!(validate_plan(&p, types).is_ok());
        p.features
            .push(PlanFeature::with("seats", Allocation::Bool(true)));
        let err = validate_plan(&p, types).unwrap_err();
        assert!(
            matches!(err, DomainError::InvalidArgument { ref field, .. } if field == "features[1].allocation")
        );
        p.features[1] = PlanFeature::with("seats", Allocation::MaxCount(Limit::Finite(5)));
        assert!(validate_plan(&p, types).is_ok());
        p.features.push(PlanFeature::bare("nope"));
        assert!(validate_plan(&p, types).is_err());
        p.features.pop();
        p.rules = vec![Rule {
            description: None,
            conditions: vec![Condition {
                attribute: "n".into(),
                attribute_type: Default::default(),
                negate: false,
                op: ConditionOp::GreaterThan,
                value: json!({"list": []}),
            }],
            treatment: Treatment::True,
        }];
        let err = validate_plan(&p, types).unwrap_err();
        assert!(
            matches!(err, DomainError::InvalidArgument { ref field, .. } if field == "rules[0].conditions[0]")
        );
    }

    #[test]
    fn routes_and_flags() {
        let route = |method: &str, path: &str, policy| Route {
            id: Uuid::new_v4(),
            method: method.into(),
            path: path.into(),
            policy,
            description: None,
        };
        let known = |k: &str| k == "sso";
        assert!(validate_route(&route("GET", "/a/*", RoutePolicy::Allow), known).is_ok());
        assert!(validate_route(&route("get", "/a", RoutePolicy::Allow), known).is_err());
        assert!(validate_route(&route("*", "/a/**/b", RoutePolicy::Deny), known).is_err());
        let require = |f: &str| RoutePolicy::Require {
            features: vec![f.into()],
            permissions: vec![],
        };
        assert!(validate_route(&route("*", "/a", require("sso")), known).is_ok());
        assert!(validate_route(&route("*", "/a", require("x")), known).is_err());
        let flag = FeatureFlag {
            id: Uuid::new_v4(),
            feature_key: "x".into(),
            name: String::new(),
            description: None,
            on: true,
            off_treatment: Treatment::False,
            default_treatment: Treatment::True,
            rules: vec![],
        };
        assert!(validate_flag(&flag, known).is_err());
    }

    #[test]
    fn timestamps() {
        assert!(parse_timestamp("2022-01-01T12:00:00").is_ok());
        assert!(parse_timestamp("2022-01-01T12:00:00.5Z").is_ok());
        assert!(parse_timestamp("2022-01-01T12:00:00+02:00").is_ok());
        assert!(parse_timestamp("2022-01-01").is_ok());
        assert!(parse_timestamp("01/01/2022").is_err());
    }

    #[test]
    fn batch_create_reports_every_bad_item_by_index() {
        let good_plan = plan(Some(30));
        let account = "acme".to_owned();
        let ctx = Ctx {
            plans: HashMap::from([(good_plan.id, good_plan.clone())]),
            accounts: vec![account.clone()],
            taken: vec![(account.clone(), "taken".into())],
        };
        let ok = GrantInput {
            plan_id: good_plan.id.to_string(),
            tenant_id: account,
            ..GrantInput::default()
        };
        let inputs = vec![
            ok.clone(),
            GrantInput {
                plan_id: Uuid::new_v4().to_string(),
                ..ok.clone()
            },
            GrantInput {
                tenant_id: "nope".into(),
                expires_at: Some("garbage".into()),
                ..ok.clone()
            },
            GrantInput {
                starts_at: Some("2025-07-01T00:00:00Z".into()),
                expires_at: Some("2025-06-01T00:00:00Z".into()),
                ..ok.clone()
            },
            GrantInput {
                external_id: Some("taken".into()),
                ..ok.clone()
            },
            GrantInput {
                external_id: Some("e1".into()),
                ..ok.clone()
            },
            GrantInput {
                external_id: Some("e1".into()),
                user_id: Some("".into()),
                ..ok.clone()
            },
        ];
        let Err(DomainError::InvalidItems(errors)) = validate_new_grants(&inputs, &ctx, &origin())
        else {
            panic!("expected item errors")
        };
        let got: Vec<(usize, &str)> = errors.iter().map(|e| (e.index, e.field.as_str())).collect();
        assert_eq!(
            got,
            vec![
                (1, "planId"),
                (2, "tenantId"),
                (2, "expiresAt"),
                (3, "expiresAt"),
                (4, "externalId"),
                (6, "userId"),
                (6, "externalId"),
            ]
        );

        // The seed's example: an expiry in the past (no start) creates an expired grant.
        let past = GrantInput {
            expires_at: Some("2022-01-01T12:00:00".into()),
            ..ok.clone()
        };
        let ended = validate_new_grant(&past, &ctx, &origin()).unwrap();
        assert_eq!(ended.status_at(now()), GrantStatus::Expired);
        assert_eq!(
            ended.expires_at.map(|e| e.to_rfc3339()).as_deref(),
            Some("2022-01-01T12:00:00+00:00")
        );
        assert!(ended.starts_at < ended.expires_at.unwrap());

        let grants = validate_new_grants(&[ok.clone(), ok.clone()], &ctx, &origin()).unwrap();
        assert_eq!(grants.len(), 2);
        assert!(grants[0].id < grants[1].id, "ids in request order");
        assert_eq!(grants[0].expires_at, Some(now() + Duration::days(30)));
        assert_eq!(grants[0].granted_by.as_deref(), Some("admin"));
        let too_many = vec![ok.clone(); MAX_BATCH + 1];
        assert!(matches!(
            validate_new_grants(&too_many, &ctx, &origin()),
            Err(DomainError::InvalidArgument { .. })
        ));
        let single = validate_new_grant(
            &GrantInput {
                plan_id: "x".into(),
                ..ok
            },
            &ctx,
            &origin(),
        );
        assert!(
            matches!(single, Err(DomainError::InvalidArgument { ref field, .. }) if field == "planId")
        );
    }

    #[test]
    fn batch_update_delete_and_revoke() {
        let p = plan(None);
        let account = "acme".to_owned();
        let ctx = Ctx {
            plans: HashMap::from([(p.id, p.clone())]),
            accounts: vec![account.clone()],
            taken: vec![],
        };
        let input = GrantInput {
            plan_id: p.id.to_string(),
            tenant_id: account,
            expires_at: Some("2026-01-01".into()),
            ..GrantInput::default()
        };
        let grant = validate_new_grant(&input, &ctx, &origin()).unwrap();
        let lookup = |id: Uuid| (id == grant.id).then(|| grant.clone());
        let patches: Vec<GrantPatch> = serde_json::from_value(json!([
            {"id": grant.id, "expirationDate": null},
            {"id": Uuid::new_v4()},
            {"id": grant.id},
            {"id": "bad"}
        ]))
        .unwrap();
        let Err(DomainError::InvalidItems(errors)) =
            validate_grant_updates(&patches, lookup, |_, _| None, now())
        else {
            panic!("expected item errors")
        };
        let idx: Vec<usize> = errors.iter().map(|e| e.index).collect();
        assert_eq!(idx, vec![1, 2, 3]);
        let updated = validate_grant_updates(&patches[..1], lookup, |_, _| None, now()).unwrap();
        assert_eq!(updated[0].expires_at, None);
        // A past expiry ends the grant: it reads as expired from then on.
        let patch: Vec<GrantPatch> =
            serde_json::from_value(json!([{"id": grant.id, "expiresAt": "2020-01-01"}])).unwrap();
        let ended = validate_grant_updates(&patch, lookup, |_, _| None, now()).unwrap();
        assert_eq!(ended[0].status_at(now()), GrantStatus::Expired);
        assert!(ended[0].starts_at < ended[0].expires_at.unwrap());
        // A start and an expiry given together the wrong way round are refused.
        let patch: Vec<GrantPatch> = serde_json::from_value(json!([{
            "id": grant.id, "startsAt": "2020-02-01", "expiresAt": "2020-01-01"
        }]))
        .unwrap();
        assert!(validate_grant_updates(&patch, lookup, |_, _| None, now()).is_err());
        // A future expiry at or before a stored future start is the wrong way round too, not
        // an end: moving the start before it would make the grant active for a millisecond.
        let scheduled = Grant {
            starts_at: now() + Duration::days(30),
            expires_at: None,
            ..grant.clone()
        };
        let lookup_scheduled = |id: Uuid| (id == grant.id).then(|| scheduled.clone());
        for expiry in [scheduled.starts_at, now() + Duration::days(1)] {
            let patch: Vec<GrantPatch> =
                serde_json::from_value(json!([{"id": grant.id, "expiresAt": expiry}])).unwrap();
            let Err(DomainError::InvalidItems(errors)) =
                validate_grant_updates(&patch, lookup_scheduled, |_, _| None, now())
            else {
                panic!("a future expiry before the start is refused")
            };
            assert_eq!(errors[0].field, "expiresAt");
        }
        // A past one still ends the scheduled grant, which never becomes active.
        let patch: Vec<GrantPatch> =
            serde_json::from_value(json!([{"id": grant.id, "expiresAt": "2020-01-01"}])).unwrap();
        let ended = validate_grant_updates(&patch, lookup_scheduled, |_, _| None, now()).unwrap();
        assert_eq!(ended[0].status_at(now()), GrantStatus::Expired);

        // Batch updates move the start and replace metadata; external ids stay unique per
        // account: one held by another grant is refused, re-setting the grant's own is fine.
        let patch: Vec<GrantPatch> = serde_json::from_value(json!([{
            "id": grant.id, "startsAt": "2025-06-01T00:00:00Z", "metadata": {"seats": 3},
            "externalId": "ext-own"
        }]))
        .unwrap();
        let other = Uuid::new_v4();
        let owner = |_: &str, ext: &str| match ext {
            "ext-own" => Some(grant.id),
            "ext-other" => Some(other),
            _ => None,
        };
        let updated = validate_grant_updates(&patch, lookup, owner, now()).unwrap();
        assert_eq!(updated[0].starts_at, parse_timestamp("2025-06-01").unwrap());
        assert_eq!(updated[0].metadata, json!({"seats": 3}));
        assert_eq!(updated[0].external_id.as_deref(), Some("ext-own"));
        let patch: Vec<GrantPatch> =
            serde_json::from_value(json!([{"id": grant.id, "externalId": "ext-other"}])).unwrap();
        let Err(DomainError::InvalidItems(errors)) =
            validate_grant_updates(&patch, lookup, owner, now())
        else {
            panic!("expected item errors")
        };
        assert_eq!(errors[0].field, "externalId");

        let ids = vec![grant.id.to_string(), "x".into(), Uuid::new_v4().to_string()];
        let Err(DomainError::InvalidItems(errors)) =
            validate_grant_deletes(&ids, |id| id == grant.id)
        else {
            panic!("expected item errors")
        };
        assert_eq!(errors.len(), 2);

        let revoked = revoke_grant(&grant, Some("ops"), Some("tenant_deleted"), now()).unwrap();
        assert_eq!(revoked.revoke_reason.as_deref(), Some("tenant_deleted"));
        assert!(matches!(
            revoke_grant(&revoked, None, None, now()),
            Err(DomainError::FailedPrecondition(_))
        ));
        assert_eq!(
            effective_plan_allocation(None, AllocationType::MaxCount),
            Allocation::MaxCount(Limit::Unlimited)
        );
    }
}
