//! Catalog and grant builders shared by the crate's unit tests.

use chrono::{DateTime, TimeZone, Utc};
use serde_json::Value;
use uuid::Uuid;

use crate::model::{
    AllocationType, Feature, Grant, GrantSource, MergePolicy, Plan, PlanFeature, Treatment,
};

/// `h` hours after a fixed instant.
pub fn t(h: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_700_000_000 + h * 3600, 0).unwrap()
}

pub fn feature(key: &str, ty: AllocationType, merge: MergePolicy, perms: &[&str]) -> Feature {
    Feature {
        id: Uuid::new_v4(),
        key: key.into(),
        name: key.into(),
        description: None,
        metadata: Value::Null,
        permissions: perms.iter().map(|p| p.to_string()).collect(),
        allocation_type: ty,
        merge_policy: merge,
        metering: None,
    }
}

pub fn plan(key: &str, features: Vec<PlanFeature>, inherit: bool) -> Plan {
    Plan {
        id: Uuid::new_v4(),
        key: key.into(),
        name: key.into(),
        description: None,
        metadata: Value::Null,
        features,
        default_time_limitation_days: None,
        assign_on_signup: false,
        rules: vec![],
        default_treatment: Treatment::False,
        inherit_to_sub_accounts: inherit,
    }
}

pub fn grant(plan: &Plan, tenant: &str, user: Option<&str>, from: i64, to: Option<i64>) -> Grant {
    Grant {
        id: Uuid::now_v7(),
        plan_id: plan.id,
        tenant_id: tenant.into(),
        user_id: user.map(Into::into),
        starts_at: t(from),
        expires_at: to.map(t),
        revoked_at: None,
        revoked_by: None,
        revoke_reason: None,
        source: GrantSource::Api,
        external_id: None,
        granted_by: None,
        metadata: Value::Null,
        created_at: t(-10),
        updated_at: t(-10),
    }
}
