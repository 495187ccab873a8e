//! Database errors as domain errors, at the storage edge: lost connections are UNAVAILABLE,
//! full or failing storage says so, a unique constraint the schema declares is the domain
//! conflict it protects (a write race the catalog check did not see), anything else INTERNAL
//! (logged with its chain by the gRPC layer, never shown). No constraint name, SQL or row
//! reaches a caller.

use sea_orm::DbErr;
use tenantry_common::db::{DbFailure, classify};

use crate::domain::DomainError;

/// Maps a database error to the domain (see the module documentation); `context` names what
/// was being done, for the log.
pub fn db_err(context: &'static str) -> impl Fn(DbErr) -> DomainError {
    move |err| match classify(&err) {
        DbFailure::Unavailable => DomainError::Unavailable("database unreachable".into()),
        DbFailure::StorageFull => DomainError::StorageFull(
            "the entitlement database's storage is full; nothing was written".into(),
        ),
        DbFailure::StorageFailed => DomainError::StorageFailed(
            "the entitlement database's storage failed (I/O error); nothing was written".into(),
        ),
        DbFailure::Conflict => {
            DomainError::Unavailable("concurrent write conflict, retry the request".into())
        }
        DbFailure::UniqueViolation(constraint) => unique_violation(&constraint),
        DbFailure::ForeignKeyViolation(_) => DomainError::FailedPrecondition(format!(
            "{context}: a referenced record is missing or still in use"
        )),
        DbFailure::Other => DomainError::Internal {
            message: context.to_owned(),
            source: Some(Box::new(err)),
        },
    }
}

/// What a unique constraint of the schema protects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unique {
    FeatureKey,
    PlanKey,
    FlagOfFeature,
    RouteMethodPath,
    GrantExternalId,
    IdempotencyKey,
    UsageEventId,
}

/// The schema's unique constraints: PostgreSQL reports a violation by the constraint's name,
/// SQLite by its columns (`UNIQUE constraint failed: <columns>`).
const UNIQUES: &[(&str, &str, Unique)] = &[
    (
        "ent_feature_key_unique",
        "ent_feature.key",
        Unique::FeatureKey,
    ),
    ("ent_plan_live_key", "ent_plan.key", Unique::PlanKey),
    (
        "ent_feature_flag_feature_unique",
        "ent_feature_flag.feature_id",
        Unique::FlagOfFeature,
    ),
    (
        "ent_route_method_path_unique",
        "ent_route.method, ent_route.path",
        Unique::RouteMethodPath,
    ),
    (
        "ent_grant_external_id",
        "ent_grant.tenant_id, ent_grant.external_id",
        Unique::GrantExternalId,
    ),
    (
        "ent_idempotency_pkey",
        "ent_idempotency.scope, ent_idempotency.key",
        Unique::IdempotencyKey,
    ),
    (
        "ent_usage_event_pkey",
        "ent_usage_event.tenant_id, ent_usage_event.event_id",
        Unique::UsageEventId,
    ),
];

/// SQLite's prefix before the columns of a violated unique constraint.
const SQLITE_UNIQUE: &str = "UNIQUE constraint failed: ";

fn known_unique(constraint: &str) -> Option<Unique> {
    let columns = constraint.strip_prefix(SQLITE_UNIQUE);
    UNIQUES
        .iter()
        .find(|(name, cols, _)| constraint == *name || columns == Some(*cols))
        .map(|(_, _, unique)| *unique)
}

/// A unique violation as the conflict it is; an unknown constraint (a primary key: ids are
/// generated, so never in practice) as a generic one. The constraint's name stays here.
fn unique_violation(constraint: &str) -> DomainError {
    let (kind, field) = match known_unique(constraint) {
        Some(Unique::IdempotencyKey) => return DomainError::IdempotencyKeyTaken,
        Some(Unique::FeatureKey) => ("feature", "key"),
        Some(Unique::PlanKey) => ("plan", "key"),
        Some(Unique::FlagOfFeature) => ("feature flag", "feature"),
        Some(Unique::RouteMethodPath) => ("route", "path"),
        Some(Unique::GrantExternalId) => ("grant", "externalId"),
        Some(Unique::UsageEventId) => ("usage event", "id"),
        None => {
            tracing::warn!(constraint, "unique violation of an unknown constraint");
            ("record", "value")
        }
    };
    DomainError::Conflict { kind, field }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constraints_are_known_by_name_or_columns_and_never_shown() {
        for (name, columns, unique) in UNIQUES {
            assert_eq!(known_unique(name), Some(*unique));
            assert_eq!(
                known_unique(&format!("{SQLITE_UNIQUE}{columns}")),
                Some(*unique)
            );
        }
        let err = unique_violation("ent_grant_external_id");
        assert!(matches!(
            err,
            DomainError::Conflict {
                kind: "grant",
                field: "externalId"
            }
        ));
        assert!(!err.to_string().contains("ent_"), "{err}");
        let unknown = unique_violation("ent_grant_pkey");
        assert!(!unknown.to_string().contains("ent_"), "{unknown}");
        assert!(matches!(
            unique_violation("ent_idempotency_pkey"),
            DomainError::IdempotencyKeyTaken
        ));
    }
}
