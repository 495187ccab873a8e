//! Checks, effective entitlements, explanations and what-if questions, answered from this
//! replica's in-memory index without I/O — except metered features asked at a past instant,
//! whose meters then are read from history (the balance burn-down's kept draws: three
//! statements for all the meters one call weighs).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use tenantry_common::limits::{MAX_ID_CHARS, MAX_PATH_CHARS, MAX_SUBJECT_PERMISSIONS};
use uuid::Uuid;

use super::Engine;
use super::ports::Storage;
use crate::domain::metering::{MAX_AMOUNT, MeterReading};
use crate::domain::{
    AllocationType, CheckRequest, Decision, DomainError, EffectiveFeature, EntitlementIndex,
    ExplainedGrant, GrantStatus, Hypothetical, ItemError, MAX_BATCH, MAX_WHAT_IF_CHANGES, PastAsk,
    PastMeter, PastMeters, Result, Subject, Target, WhatIf, validate_attributes,
    validate_tenant_id,
};

/// The longest route method a check names.
const MAX_METHOD_CHARS: usize = 16;

/// What a check asks about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckTarget {
    Feature(String),
    Permission(String),
    Route { method: String, path: String },
}

/// One check, owning the parts the borrowed [`CheckRequest`] points into.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckQuery {
    pub tenant_id: String,
    pub user_id: Option<String>,
    pub permissions: Vec<String>,
    pub attributes: Option<Map<String, Value>>,
    pub target: CheckTarget,
    /// The instant checked; `None`: now.
    pub at: Option<DateTime<Utc>>,
    pub requested: Option<u64>,
}

impl CheckQuery {
    pub fn subject(&self) -> Subject<'_> {
        Subject {
            tenant_id: &self.tenant_id,
            user_id: self.user_id.as_deref(),
            permissions: &self.permissions,
            attributes: self.attributes.as_ref(),
        }
    }

    /// The query's values within the rules (fields named under `query.`): a well-formed
    /// tenant ID, attributes within their limits, strings and lists within theirs.
    pub fn validate(&self) -> Result<()> {
        validate_tenant_id("query.subject.tenant_id", &self.tenant_id)?;
        validate_attributes("query.subject.attributes", self.attributes.as_ref())?;
        check_sizes(self.user_id.as_deref(), &self.permissions, &self.target)
    }

    pub fn request(&self) -> CheckRequest<'_> {
        CheckRequest {
            subject: self.subject(),
            target: match &self.target {
                CheckTarget::Feature(k) => Target::Feature(k),
                CheckTarget::Permission(p) => Target::Permission(p),
                CheckTarget::Route { method, path } => Target::Route { method, path },
            },
            requested: self.requested,
        }
    }
}

/// Strings and lists of a check within the shared limits: a check is answered from memory,
/// but half-megabyte keys or 100,000 permissions would still be hashed and compared. Field
/// names are only formatted for an error: a valid check allocates nothing here.
pub fn check_sizes(
    user_id: Option<&str>,
    permissions: &[String],
    target: &CheckTarget,
) -> Result<()> {
    let too_long = |value: &str, max: usize| value.chars().count() > max;
    let refuse = |field: String, max: usize| {
        Err(DomainError::invalid(
            field,
            format!("must be at most {max} characters"),
        ))
    };
    if let Some(user) = user_id
        && too_long(user, MAX_ID_CHARS)
    {
        return refuse("query.subject.user_id".into(), MAX_ID_CHARS);
    }
    if permissions.len() > MAX_SUBJECT_PERMISSIONS {
        return Err(DomainError::invalid(
            "query.subject.permissions",
            format!("must hold at most {MAX_SUBJECT_PERMISSIONS} permissions"),
        ));
    }
    if let Some(i) = permissions.iter().position(|p| too_long(p, MAX_ID_CHARS)) {
        return refuse(format!("query.subject.permissions[{i}]"), MAX_ID_CHARS);
    }
    let (field, value, max) = match target {
        CheckTarget::Feature(k) => ("query.feature_key", k, MAX_ID_CHARS),
        CheckTarget::Permission(p) => ("query.permission_key", p, MAX_ID_CHARS),
        CheckTarget::Route { method, path } => {
            if too_long(method, MAX_METHOD_CHARS) {
                return refuse("query.route.method".into(), MAX_METHOD_CHARS);
            }
            ("query.route.path", path, MAX_PATH_CHARS)
        }
    };
    if too_long(value, max) {
        return refuse(field.into(), max);
    }
    Ok(())
}

/// A decision and the index snapshot it came from (which names its plans and ancestors).
#[derive(Debug, Clone)]
pub struct Checked<T> {
    pub index: Arc<EntitlementIndex>,
    pub value: T,
    /// "Now" for this answer: a meter read at an instant before it is the meter then, from
    /// history (see [`Checked::history_at`]).
    pub now: DateTime<Utc>,
}

impl<T> Checked<T> {
    /// The instant a metered feature's meter asked at `at` was read at from history (`at`
    /// when before now); `None` for the index's meter (now, or projected ahead).
    pub fn history_at(&self, at: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
        at.filter(|&at| at < self.now)
    }
}

/// Why a check decided as it did.
#[derive(Debug, Clone)]
pub struct Explanation {
    pub decision: Decision,
    /// Each grant considered, and whether it is one the decision rests on.
    pub grants: Vec<(ExplainedGrant, bool)>,
    /// For a feature check: whether its flag is on for the subject (no flag: `None`).
    pub flag_on: Option<bool>,
    /// For a permission check: the features linking the permission.
    pub linked_features: Vec<String>,
}

/// A plan named by id or key in a what-if change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlanName {
    Id(String),
    Key(String),
}

/// One hypothetical change of a what-if question, as asked; `field` names it in errors.
#[derive(Debug, Clone, PartialEq)]
pub enum WhatIfChange {
    Grant {
        /// Empty, or the question's account.
        tenant_id: String,
        /// Unset, or the question's user.
        user_id: Option<String>,
        plan: Option<PlanName>,
        starts_at: Option<DateTime<Utc>>,
        expires_at: Option<DateTime<Utc>>,
    },
    RevokeGrant(String),
    RevokePlan(String),
    /// A change with nothing in it.
    Missing,
}

/// A what-if question: these changes, for this subject, at `at` (default now); metered
/// features answer whether `requested` units (default one) would be allowed before and after.
#[derive(Debug, Clone, PartialEq)]
pub struct WhatIfQuery {
    pub tenant_id: String,
    pub user_id: Option<String>,
    pub changes: Vec<WhatIfChange>,
    pub at: Option<DateTime<Utc>>,
    /// 1 to [`MAX_AMOUNT`], as a consumption's amount.
    pub requested: Option<i64>,
    pub min_revision: u64,
}

/// Where checks find their index: this replica's (the service) or one followed from the
/// service's stream (the agent). The checks below need nothing else, so the agent answers with
/// exactly the service's rules.
pub trait IndexSource: Send + Sync + 'static {
    /// The index once it includes `min_revision` (waiting briefly, else UNAVAILABLE).
    fn index_at(
        &self,
        min_revision: u64,
    ) -> impl Future<Output = Result<Arc<EntitlementIndex>>> + Send;
    /// "Now" for a check against `index`: never before the newest write it holds.
    fn present(&self, index: &EntitlementIndex) -> DateTime<Utc>;
    /// The revision held now.
    fn revision(&self) -> u64;
    /// The meters `asks` (each at an instant before now) at their instants, in order, from history. Without history (the agent's index) each is unknown,
    /// so a check there answers `METER_HISTORY_UNKNOWN`, never today's meter as the past's.
    fn past_meters(
        &self,
        index: &EntitlementIndex,
        asks: Vec<(PastAsk, DateTime<Utc>)>,
    ) -> impl Future<Output = Result<Vec<PastMeter>>> + Send {
        let _ = index;
        let unknown = vec![PastMeter::Unknown; asks.len()];
        async move { Ok(unknown) }
    }
}

/// The meters a check of `request` at `at` weighs, read from history when `at` is before
/// `now` and a metered feature is involved (else `None`: the index's meters).
async fn past_for<I: IndexSource + ?Sized>(
    source: &I,
    index: &EntitlementIndex,
    request: &CheckRequest<'_>,
    at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<Option<PastMeters>> {
    if at >= now {
        return Ok(None);
    }
    let asks = index.past_meter_asks(request, at);
    if asks.is_empty() {
        return Ok(None);
    }
    let with_at = asks.iter().map(|ask| (ask.clone(), at)).collect();
    let meters = source.past_meters(index, with_at).await?;
    Ok(Some(PastMeters::new(
        asks.into_iter().zip(meters).collect(),
    )))
}

/// A check against the index, or at a past instant against the meters then.
fn decide(
    index: &EntitlementIndex,
    request: &CheckRequest<'_>,
    at: DateTime<Utc>,
    past: Option<&PastMeters>,
) -> Decision {
    match past {
        Some(past) => index.check_past(request, at, past),
        None => index.check(request, at),
    }
}

impl<S: Storage> IndexSource for Engine<S> {
    fn index_at(
        &self,
        min_revision: u64,
    ) -> impl Future<Output = Result<Arc<EntitlementIndex>>> + Send {
        Engine::index_at(self, min_revision)
    }

    fn present(&self, index: &EntitlementIndex) -> DateTime<Utc> {
        Engine::present(self, index)
    }

    fn revision(&self) -> u64 {
        Engine::revision(self)
    }

    fn past_meters(
        &self,
        index: &EntitlementIndex,
        asks: Vec<(PastAsk, DateTime<Utc>)>,
    ) -> impl Future<Output = Result<Vec<PastMeter>>> + Send {
        Engine::meters_at(self, index, asks)
    }
}

pub async fn check<I: IndexSource + ?Sized>(
    source: &I,
    q: &CheckQuery,
    min_revision: u64,
) -> Result<Checked<Decision>> {
    q.validate()?;
    let index = source.index_at(min_revision).await?;
    let now = source.present(&index);
    let at = q.at.unwrap_or(now);
    let request = q.request();
    let past = past_for(source, &index, &request, at, now).await?;
    let decision = decide(&index, &request, at, past.as_ref());
    Ok(Checked {
        index,
        value: decision,
        now,
    })
}

/// Checks 1 to [`MAX_BATCH`] queries against one index snapshot. Each query comes as
/// decoded (or why it could not be); any bad one refuses the batch, with every bad query
/// reported by its position. Answers each query with its decision.
pub async fn check_batch<I: IndexSource + ?Sized>(
    source: &I,
    queries: Vec<Result<CheckQuery>>,
    min_revision: u64,
) -> Result<Checked<Vec<(CheckQuery, Decision)>>> {
    let mut valid = Vec::with_capacity(queries.len());
    let mut items = Vec::new();
    for (i, q) in queries.into_iter().enumerate() {
        match q.and_then(|q| q.validate().map(|()| q)) {
            Ok(q) => valid.push(q),
            Err(DomainError::InvalidArgument { field, message }) => {
                items.push(ItemError::new(i, field, message));
            }
            Err(other) => return Err(other),
        }
    }
    if !items.is_empty() {
        return Err(DomainError::InvalidItems(items));
    }
    let index = source.index_at(min_revision).await?;
    let now = source.present(&index);
    // The meters every query at a past instant weighs, read together.
    let asks: Vec<Vec<PastAsk>> = valid
        .iter()
        .map(|q| match q.at.filter(|&at| at < now) {
            Some(at) => index.past_meter_asks(&q.request(), at),
            None => Vec::new(),
        })
        .collect();
    let mut flat: Vec<(PastAsk, DateTime<Utc>)> = Vec::new();
    for (q, asks) in valid.iter().zip(&asks) {
        for ask in asks {
            let ask = (ask.clone(), q.at.unwrap_or(now));
            if !flat.contains(&ask) {
                flat.push(ask);
            }
        }
    }
    let meters = if flat.is_empty() {
        Vec::new()
    } else {
        source.past_meters(&index, flat.clone()).await?
    };
    let decisions = valid
        .into_iter()
        .zip(asks)
        .map(|(q, asks)| {
            let at = q.at.unwrap_or(now);
            let past = (!asks.is_empty()).then(|| {
                PastMeters::new(
                    asks.into_iter()
                        .map(|ask| {
                            let meter = flat
                                .iter()
                                .position(|(a, t)| *a == ask && *t == at)
                                .and_then(|i| meters.get(i).cloned())
                                .unwrap_or(PastMeter::Unknown);
                            (ask, meter)
                        })
                        .collect(),
                )
            });
            let decision = decide(&index, &q.request(), at, past.as_ref());
            (q, decision)
        })
        .collect();
    Ok(Checked {
        index,
        value: decisions,
        now,
    })
}

/// Refuses a batch of checks of the wrong size before anything is decoded.
pub fn check_batch_size(len: usize) -> Result<()> {
    if len == 0 || len > MAX_BATCH {
        return Err(DomainError::invalid("queries", "give 1 to 1000 queries"));
    }
    Ok(())
}

/// A metered feature's meter, with the ancestor whose pool it is (`None`: the account's own)
/// and the user whose own meter it is (`None`: not a user's); the reading is `None` when
/// asked at a past instant whose meter is not known.
pub type OwnedMeter = (Option<MeterReading>, Option<String>, Option<String>);

/// Every feature the subject holds at `at` (default now), with its allocation.
pub async fn account_entitlements<I: IndexSource + ?Sized>(
    source: &I,
    subject: &Subject<'_>,
    at: Option<DateTime<Utc>>,
    min_revision: u64,
) -> Result<Checked<Vec<(EffectiveFeature, Option<OwnedMeter>)>>> {
    validate_tenant_id("tenant_id", subject.tenant_id)?;
    validate_attributes("attributes", subject.attributes)?;
    let index = source.index_at(min_revision).await?;
    // "Now" is read once the index holds the awaited revision, never before: grants
    // written meanwhile have started by then.
    let now = source.present(&index);
    let at = at.unwrap_or(now);
    let asks = if at < now {
        index.past_meter_asks_all(subject, at)
    } else {
        Vec::new()
    };
    let features = if asks.is_empty() {
        index
            .account_entitlements(subject, at)?
            .into_iter()
            .map(|f| {
                let meter = meter_of(&index, subject, &f.key, at, None);
                (f, meter)
            })
            .collect()
    } else {
        let with_at = asks.iter().map(|ask| (ask.clone(), at)).collect();
        let meters = source.past_meters(&index, with_at).await?;
        let past = PastMeters::new(asks.into_iter().zip(meters).collect());
        index
            .account_entitlements_past(subject, at, &past)?
            .into_iter()
            .map(|(f, unknown)| {
                let meter = if unknown {
                    let owner = index.meter_owner(subject.tenant_id, subject.user_id, &f.key, at);
                    let (pool, user) = match owner {
                        Some((o, user)) => (
                            (o != subject.tenant_id).then(|| o.to_owned()),
                            user.map(str::to_owned),
                        ),
                        None => (None, None),
                    };
                    Some((None, pool, user))
                } else {
                    meter_of(&index, subject, &f.key, at, Some(&past))
                };
                (f, meter)
            })
            .collect()
    };
    Ok(Checked {
        index,
        value: features,
        now,
    })
}

/// The meter of `key` the subject draws on at `at` (its user's own, its account's or its
/// pool's, with the pool's owner and the user named) when it is a metered feature.
fn meter_of(
    index: &EntitlementIndex,
    subject: &Subject<'_>,
    key: &str,
    at: DateTime<Utc>,
    past: Option<&PastMeters>,
) -> Option<OwnedMeter> {
    let (feature, _) = index.catalog_feature(key)?;
    if feature.allocation_type != AllocationType::Metered {
        return None;
    }
    let tenant_id = subject.tenant_id;
    let d = match past {
        Some(past) => index.meter_check_past(tenant_id, subject.user_id, key, at, past)?,
        None => index.meter_check(tenant_id, subject.user_id, key, at)?,
    };
    let owner = d
        .meter_pool
        .and_then(|depth| index.ancestor_at(tenant_id, depth))
        .map(str::to_owned);
    let user = subject.user_id.filter(|_| d.meter_user).map(str::to_owned);
    Some((Some(d.meter?), owner, user))
}

pub async fn explain<I: IndexSource + ?Sized>(
    source: &I,
    q: &CheckQuery,
    min_revision: u64,
) -> Result<Checked<Explanation>> {
    q.validate()?;
    let index = source.index_at(min_revision).await?;
    let now = source.present(&index);
    let at = q.at.unwrap_or(now);
    let request = q.request();
    let past = past_for(source, &index, &request, at, now).await?;
    let decision = decide(&index, &request, at, past.as_ref());
    let feature_key = match &q.target {
        CheckTarget::Feature(k) => Some(k.as_str()),
        CheckTarget::Permission(_) | CheckTarget::Route { .. } => None,
    };
    let decided = decision.decided_by.and_then(|b| b.grant_id);
    let grants = index
        .explain_grants(&q.subject(), feature_key, at)
        .into_iter()
        .map(|g| {
            let effective = decision.result
                && g.allocation.is_some_and(|a| a.is_granting())
                && g.status == GrantStatus::Active
                || decided == Some(g.grant_id);
            (g, effective)
        })
        .collect();
    let (flag_on, linked_features) = match &q.target {
        CheckTarget::Feature(k) => (index.flag_on(k, q.attributes.as_ref()), vec![]),
        CheckTarget::Permission(p) => (None, index.linked_features(p)),
        CheckTarget::Route { .. } => (None, vec![]),
    };
    Ok(Checked {
        index,
        value: Explanation {
            decision,
            grants,
            flag_on,
            linked_features,
        },
        now,
    })
}

/// What the subject would gain, lose or see changed under hypothetical changes; each
/// metered feature with the meter it would draw on before and after (at a past `at`, the
/// meters then, from history) and the decision for the requested amount.
pub async fn what_if<I: IndexSource + ?Sized>(
    source: &I,
    q: WhatIfQuery,
) -> Result<Checked<WhatIf>> {
    validate_tenant_id("tenant_id", &q.tenant_id)?;
    if let Some(user) = &q.user_id
        && (user.is_empty() || user.chars().count() > MAX_ID_CHARS)
    {
        return Err(DomainError::invalid(
            "user_id",
            format!("must be 1 to {MAX_ID_CHARS} characters"),
        ));
    }
    let requested = match q.requested {
        None => None,
        Some(r) if (1..=MAX_AMOUNT).contains(&r) => u64::try_from(r).ok(),
        Some(_) => {
            return Err(DomainError::invalid(
                "requested_amount",
                format!("must be 1 to {MAX_AMOUNT}"),
            ));
        }
    };
    let index = source.index_at(q.min_revision).await?;
    let now = source.present(&index);
    let at = q.at.unwrap_or(now);
    if q.changes.is_empty() || q.changes.len() > MAX_WHAT_IF_CHANGES {
        return Err(DomainError::invalid(
            "changes",
            format!("give 1 to {MAX_WHAT_IF_CHANGES} changes"),
        ));
    }
    let plan_id = |s: &str, field: &str| {
        if s.is_empty() {
            return Err(DomainError::invalid(field, "required"));
        }
        if s.chars().count() > MAX_ID_CHARS {
            return Err(DomainError::invalid(
                field,
                format!("must be at most {MAX_ID_CHARS} characters"),
            ));
        }
        Uuid::try_parse(s)
            .ok()
            .or_else(|| index.plan_id_by_key(s))
            .ok_or_else(|| DomainError::not_found("plan", s))
    };
    let mut hypotheticals = Vec::with_capacity(q.changes.len());
    for (i, change) in q.changes.iter().enumerate() {
        let field = format!("changes[{i}]");
        hypotheticals.push(match change {
            WhatIfChange::Grant {
                tenant_id,
                user_id,
                plan,
                starts_at,
                expires_at,
            } => {
                if !tenant_id.is_empty() && *tenant_id != q.tenant_id {
                    return Err(DomainError::invalid(
                        format!("{field}.grant.tenant_id"),
                        "must be empty or the request's tenant_id",
                    ));
                }
                if user_id.is_some() && *user_id != q.user_id {
                    return Err(DomainError::invalid(
                        format!("{field}.grant.user_id"),
                        "must be unset or the request's user_id",
                    ));
                }
                Hypothetical::GrantPlan {
                    plan_id: match plan {
                        Some(PlanName::Id(id)) => plan_id(id, &format!("{field}.grant.plan_id"))?,
                        Some(PlanName::Key(k)) => plan_id(k, &format!("{field}.grant.plan_key"))?,
                        None => {
                            return Err(DomainError::invalid(
                                format!("{field}.grant.plan"),
                                "required",
                            ));
                        }
                    },
                    to_user: user_id.is_some(),
                    starts_at: *starts_at,
                    expires_at: *expires_at,
                }
            }
            WhatIfChange::RevokeGrant(id) => Hypothetical::RevokeGrant {
                grant_id: Uuid::try_parse(id).map_err(|_| {
                    DomainError::invalid(format!("{field}.revoke_grant_id"), "must be a UUID")
                })?,
            },
            WhatIfChange::RevokePlan(p) => Hypothetical::RevokePlan {
                plan_id: plan_id(p, &format!("{field}.revoke_plan"))?,
            },
            WhatIfChange::Missing => return Err(DomainError::invalid(field, "required")),
        });
    }
    let subject = Subject {
        tenant_id: &q.tenant_id,
        user_id: q.user_id.as_deref(),
        permissions: &[],
        attributes: None,
    };
    let asks = if at < now {
        index.what_if_meter_asks(&subject, &hypotheticals, at)?
    } else {
        Vec::new()
    };
    let result = if asks.is_empty() {
        index.what_if(&subject, &hypotheticals, at, requested)?
    } else {
        // Both sides' meters then, read together.
        let with_at = asks.iter().map(|ask| (ask.clone(), at)).collect();
        let meters = source.past_meters(&index, with_at).await?;
        let past = PastMeters::new(asks.into_iter().zip(meters).collect());
        index.what_if_past(&subject, &hypotheticals, at, requested, &past)?
    };
    Ok(Checked {
        index,
        value: result,
        now,
    })
}

#[cfg(test)]
impl<S: Storage> Engine<S> {
    /// [`check`] on this replica's index (the use-case tests' shorthand).
    pub async fn check(&self, q: &CheckQuery, min_revision: u64) -> Result<Checked<Decision>> {
        check(self, q, min_revision).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::testing::{self, feature_query, invalid_field};
    use crate::domain::{AllocationType, AllowReason, GrantLevel, Justification, PlanFeature};

    fn permission_query(tenant: &str, held: &[&str], permission: &str) -> CheckQuery {
        CheckQuery {
            permissions: held.iter().map(|p| (*p).to_owned()).collect(),
            target: CheckTarget::Permission(permission.into()),
            ..feature_query(tenant, None, "")
        }
    }

    #[tokio::test]
    async fn a_check_says_why_and_which_grant_decided() {
        let t = testing::engine().await;
        t.account("acme", None).await;
        t.feature("sso", AllocationType::Bool, &[]).await;
        t.plan("pro", vec![PlanFeature::bare("sso")]).await;
        let unknown = t.check("nobody", None, "sso").await;
        assert_eq!(unknown.justification, Some(Justification::TenantNotFound));
        let missing = t.check("acme", None, "sso").await;
        assert!(!missing.result);
        assert_eq!(missing.justification, Some(Justification::MissingFeature));
        let no_such_feature = t.check("acme", None, "nope").await;
        assert_eq!(
            no_such_feature.justification,
            Some(Justification::MissingFeature)
        );
        let user_grant = t.grant("pro", "acme", Some("ann")).await;
        let ann = t.check("acme", Some("ann"), "sso").await;
        assert!(ann.result);
        assert_eq!(ann.allow_reason, Some(AllowReason::Grant));
        let by = ann.decided_by.unwrap();
        assert_eq!(
            (by.grant_id, by.level),
            (Some(user_grant.id), GrantLevel::User)
        );
        // A user's grant is not the account's, nor another user's.
        assert!(!t.check("acme", None, "sso").await.result);
        assert!(!t.check("acme", Some("bob"), "sso").await.result);
        let account_grant = t.grant("pro", "acme", None).await;
        let bob = t.check("acme", Some("bob"), "sso").await;
        assert_eq!(
            bob.decided_by.map(|by| (by.grant_id, by.level)),
            Some((Some(account_grant.id), GrantLevel::Account))
        );
        // An explanation lists both grants and marks the decisive one.
        let explained = explain(&t.engine, &feature_query("acme", Some("ann"), "sso"), 0)
            .await
            .unwrap()
            .value;
        assert!(explained.decision.result);
        assert_eq!(explained.grants.len(), 2);
        assert!(
            explained
                .grants
                .iter()
                .any(|(g, effective)| g.grant_id == user_grant.id && *effective)
        );
    }

    #[tokio::test]
    async fn a_permission_is_held_by_the_subject_and_entitled_through_its_feature() {
        let t = testing::engine().await;
        t.account("acme", None).await;
        t.feature("reports", AllocationType::Bool, &["reports.read"])
            .await;
        t.plan("pro", vec![PlanFeature::bare("reports")]).await;
        let app = &t.engine;
        let check = |held: &'static [&'static str], permission: &'static str| {
            let q = permission_query("acme", held, permission);
            async move { app.check(&q, 0).await.unwrap().value }
        };
        // Held but its feature not granted; not held at all; held and ungated.
        let ungranted = check(&["reports.read"], "reports.read").await;
        assert_eq!(ungranted.justification, Some(Justification::MissingFeature));
        let not_held = check(&[], "reports.read").await;
        assert_eq!(
            not_held.justification,
            Some(Justification::MissingPermission)
        );
        let ungated = check(&["billing.read"], "billing.read").await;
        assert_eq!(ungated.allow_reason, Some(AllowReason::UngatedPermission));
        t.grant("pro", "acme", None).await;
        let granted = check(&["reports.read"], "reports.read").await;
        assert!(granted.result);
        assert_eq!(granted.allow_reason, Some(AllowReason::Grant));
    }

    #[tokio::test]
    async fn a_check_with_a_malformed_subject_or_target_is_refused_naming_the_field() {
        let t = testing::engine().await;
        t.account("acme", None).await;
        let app = &t.engine;
        let refused = |q: CheckQuery| async move {
            let check = app.check(&q, 0).await.unwrap_err();
            let explain = explain(&*app, &q, 0).await.unwrap_err();
            assert_eq!(invalid_field(&check), invalid_field(&explain));
            invalid_field(&check).to_owned()
        };
        let mut attributes = serde_json::Map::new();
        let mut deep = serde_json::json!(1);
        for _ in 0..40 {
            deep = serde_json::json!({ "a": deep });
        }
        attributes.insert("nested".into(), deep);
        let cases = [
            (
                feature_query("has space", None, "sso"),
                "query.subject.tenant_id",
            ),
            (feature_query("", None, "sso"), "query.subject.tenant_id"),
            (
                CheckQuery {
                    attributes: Some(attributes),
                    ..feature_query("acme", None, "sso")
                },
                "query.subject.attributes",
            ),
            (
                feature_query("acme", Some("u".repeat(256).as_str()), "sso"),
                "query.subject.user_id",
            ),
            (
                CheckQuery {
                    permissions: vec!["ok".into(), "p".repeat(256)],
                    ..feature_query("acme", None, "sso")
                },
                "query.subject.permissions[1]",
            ),
            (
                CheckQuery {
                    permissions: vec!["p".into(); MAX_SUBJECT_PERMISSIONS + 1],
                    ..feature_query("acme", None, "sso")
                },
                "query.subject.permissions",
            ),
            (
                feature_query("acme", None, &"k".repeat(256)),
                "query.feature_key",
            ),
            (
                CheckQuery {
                    target: CheckTarget::Route {
                        method: "G".repeat(17),
                        path: "/".into(),
                    },
                    ..feature_query("acme", None, "")
                },
                "query.route.method",
            ),
            (
                CheckQuery {
                    target: CheckTarget::Route {
                        method: "GET".into(),
                        path: "/".repeat(MAX_PATH_CHARS + 1),
                    },
                    ..feature_query("acme", None, "")
                },
                "query.route.path",
            ),
        ];
        for (query, field) in cases {
            assert_eq!(refused(query).await, field);
        }
        // At the limits, the check is answered.
        let at_limits = CheckQuery {
            permissions: vec!["p".repeat(MAX_ID_CHARS); MAX_SUBJECT_PERMISSIONS],
            ..feature_query(
                "acme",
                Some("u".repeat(MAX_ID_CHARS).as_str()),
                &"k".repeat(MAX_ID_CHARS),
            )
        };
        assert!(!t.engine.check(&at_limits, 0).await.unwrap().value.result);
        // A batch names every bad query by its position, whether it could not be decoded or
        // is invalid, and answers none of them.
        let err = check_batch(
            &t.engine,
            vec![
                Ok(feature_query("acme", None, "sso")),
                Err(DomainError::invalid("query.target", "required")),
                Ok(feature_query("bad id", None, "sso")),
            ],
            0,
        )
        .await
        .unwrap_err();
        let DomainError::InvalidItems(items) = err else {
            panic!("expected invalid items, got {err:?}");
        };
        assert_eq!(
            items
                .iter()
                .map(|i| (i.index, i.field.as_str()))
                .collect::<Vec<_>>(),
            [(1, "query.target"), (2, "query.subject.tenant_id")]
        );
    }

    #[tokio::test]
    async fn a_check_waits_only_for_revisions_a_write_handed_out_and_batches_are_bounded() {
        let t = testing::engine().await;
        t.account("acme", None).await;
        t.feature("sso", AllocationType::Bool, &[]).await;
        let revision = t.engine.revision();
        let q = feature_query("acme", None, "sso");
        let checked = t.engine.check(&q, revision).await.unwrap();
        assert_eq!(checked.index.revision(), revision);
        let err = t.engine.check(&q, revision + 10).await.unwrap_err();
        assert_eq!(invalid_field(&err), "min_revision");
        for len in [0, MAX_BATCH + 1] {
            let err = check_batch_size(len).unwrap_err();
            assert_eq!(invalid_field(&err), "queries");
        }
        let answers = check_batch(
            &t.engine,
            vec![Ok(q.clone()), Ok(feature_query("nobody", None, "sso"))],
            0,
        )
        .await
        .unwrap();
        assert_eq!(
            answers
                .value
                .iter()
                .map(|(q, d)| (q.tenant_id.as_str(), d.justification))
                .collect::<Vec<_>>(),
            [
                ("acme", Some(Justification::MissingFeature)),
                ("nobody", Some(Justification::TenantNotFound))
            ]
        );
        let err = check_sizes(Some(&"u".repeat(300)), &[], &q.target).unwrap_err();
        assert_eq!(invalid_field(&err), "query.subject.user_id");
        let err = what_if(
            &t.engine,
            WhatIfQuery {
                tenant_id: "acme".into(),
                user_id: None,
                changes: vec![],
                at: None,
                requested: None,
                min_revision: 0,
            },
        )
        .await
        .unwrap_err();
        assert_eq!(invalid_field(&err), "changes");
    }
}

#[cfg(test)]
#[path = "checks_what_if_tests.rs"]
mod what_if_tests;
