//! Checks, effective entitlements, explanations and what-if questions, answered from this
//! replica's in-memory index only (never from storage).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use tenantry_common::limits::{MAX_ID_CHARS, MAX_PATH_CHARS, MAX_SUBJECT_PERMISSIONS};
use uuid::Uuid;

use super::Engine;
use super::ports::Storage;
use crate::domain::{
    CheckRequest, Decision, DomainError, EffectiveFeature, EntitlementIndex, ExplainedGrant,
    GrantStatus, Hypothetical, MAX_BATCH, MAX_WHAT_IF_CHANGES, Result, Subject, Target, WhatIf,
    validate_attributes, validate_tenant_id,
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
/// but half-megabyte keys or 100,000 permissions would still be hashed and compared.
pub fn check_sizes(
    user_id: Option<&str>,
    permissions: &[String],
    target: &CheckTarget,
) -> Result<()> {
    let too_long = |field: &str, value: &str, max: usize| {
        if value.chars().count() > max {
            Err(DomainError::invalid(
                field,
                format!("must be at most {max} characters"),
            ))
        } else {
            Ok(())
        }
    };
    if let Some(user) = user_id {
        too_long("query.subject.user_id", user, MAX_ID_CHARS)?;
    }
    if permissions.len() > MAX_SUBJECT_PERMISSIONS {
        return Err(DomainError::invalid(
            "query.subject.permissions",
            format!("must hold at most {MAX_SUBJECT_PERMISSIONS} permissions"),
        ));
    }
    for (i, p) in permissions.iter().enumerate() {
        too_long(&format!("query.subject.permissions[{i}]"), p, MAX_ID_CHARS)?;
    }
    match target {
        CheckTarget::Feature(k) => too_long("query.feature_key", k, MAX_ID_CHARS),
        CheckTarget::Permission(p) => too_long("query.permission_key", p, MAX_ID_CHARS),
        CheckTarget::Route { method, path } => {
            too_long("query.route.method", method, MAX_METHOD_CHARS)?;
            too_long("query.route.path", path, MAX_PATH_CHARS)
        }
    }
}

/// A decision and the index snapshot it came from (which names its plans and ancestors).
#[derive(Debug, Clone)]
pub struct Checked<T> {
    pub index: Arc<EntitlementIndex>,
    pub value: T,
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

/// A what-if question: these changes, for this subject, at `at` (default now).
#[derive(Debug, Clone, PartialEq)]
pub struct WhatIfQuery {
    pub tenant_id: String,
    pub user_id: Option<String>,
    pub changes: Vec<WhatIfChange>,
    pub at: Option<DateTime<Utc>>,
    pub min_revision: u64,
}

impl<S: Storage> Engine<S> {
    pub async fn check(&self, q: &CheckQuery, min_revision: u64) -> Result<Checked<Decision>> {
        let index = self.index_at(min_revision).await?;
        let decision = index.check(&q.request(), q.at.unwrap_or_else(|| self.present(&index)));
        Ok(Checked {
            index,
            value: decision,
        })
    }

    /// Checks 1 to [`MAX_BATCH`] queries against one index snapshot.
    pub async fn check_batch(
        &self,
        queries: &[CheckQuery],
        min_revision: u64,
    ) -> Result<Checked<Vec<Decision>>> {
        let index = self.index_at(min_revision).await?;
        let now = self.present(&index);
        let decisions = queries
            .iter()
            .map(|q| index.check(&q.request(), q.at.unwrap_or(now)))
            .collect();
        Ok(Checked {
            index,
            value: decisions,
        })
    }

    /// Refuses a batch of checks of the wrong size before anything is decoded.
    pub fn check_batch_size(len: usize) -> Result<()> {
        if len == 0 || len > MAX_BATCH {
            return Err(DomainError::invalid("queries", "give 1 to 1000 queries"));
        }
        Ok(())
    }

    /// Every feature the subject holds at `at` (default now), with its allocation.
    pub async fn account_entitlements(
        &self,
        subject: &Subject<'_>,
        at: Option<DateTime<Utc>>,
        min_revision: u64,
    ) -> Result<Checked<Vec<EffectiveFeature>>> {
        validate_tenant_id("tenant_id", subject.tenant_id)?;
        validate_attributes("attributes", subject.attributes)?;
        let index = self.index_at(min_revision).await?;
        // "Now" is read once the index holds the awaited revision, never before: grants
        // written meanwhile have started by then.
        let at = at.unwrap_or_else(|| self.present(&index));
        let features = index.account_entitlements(subject, at)?;
        Ok(Checked {
            index,
            value: features,
        })
    }

    pub async fn explain(&self, q: &CheckQuery, min_revision: u64) -> Result<Checked<Explanation>> {
        let index = self.index_at(min_revision).await?;
        let at = q.at.unwrap_or_else(|| self.present(&index));
        let decision = index.check(&q.request(), at);
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
        })
    }

    /// What the subject would gain, lose or see changed under hypothetical changes.
    pub async fn what_if(&self, q: WhatIfQuery) -> Result<Checked<WhatIf>> {
        validate_tenant_id("tenant_id", &q.tenant_id)?;
        let index = self.index_at(q.min_revision).await?;
        let at = q.at.unwrap_or_else(|| self.present(&index));
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
                            Some(PlanName::Id(id)) => {
                                plan_id(id, &format!("{field}.grant.plan_id"))?
                            }
                            Some(PlanName::Key(k)) => {
                                plan_id(k, &format!("{field}.grant.plan_key"))?
                            }
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
        let result = index.what_if(&subject, &hypotheticals, at)?;
        Ok(Checked {
            index,
            value: result,
        })
    }
}
