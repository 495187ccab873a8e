//! sea-orm entities of the entitlement schema (the migrations define the tables; these mirror
//! them).

macro_rules! entity {
    ($module:ident, $table:literal, { $($body:tt)* }) => {
        pub mod $module {
            use sea_orm::entity::prelude::*;

            #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
            #[sea_orm(table_name = $table)]
            pub struct Model {
                $($body)*
            }

            #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
            pub enum Relation {}

            impl ActiveModelBehavior for ActiveModel {}
        }
    };
}

entity!(feature, "ent_feature", {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub key: String,
    pub doc: String,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
});

entity!(plan, "ent_plan", {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub key: String,
    pub doc: String,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
    pub deleted_at: Option<DateTimeUtc>,
});

entity!(plan_feature, "ent_plan_feature", {
    #[sea_orm(primary_key, auto_increment = false)]
    pub plan_id: Uuid,
    #[sea_orm(primary_key, auto_increment = false)]
    pub feature_id: Uuid,
});

entity!(feature_flag, "ent_feature_flag", {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub feature_id: Uuid,
    pub doc: String,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
});

entity!(route, "ent_route", {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub method: String,
    pub path: String,
    pub doc: String,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
});

entity!(account, "ent_account", {
    #[sea_orm(primary_key, auto_increment = false)]
    pub tenant_id: String,
    pub parent_id: Option<String>,
    pub deleted: bool,
    pub updated_at: DateTimeUtc,
});

entity!(grant, "ent_grant", {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub plan_id: Uuid,
    pub tenant_id: String,
    pub user_id: Option<String>,
    pub starts_at: DateTimeUtc,
    pub expires_at: Option<DateTimeUtc>,
    pub revoked_at: Option<DateTimeUtc>,
    pub revoked_by: Option<String>,
    pub revoke_reason: Option<String>,
    pub source: String,
    pub external_id: Option<String>,
    pub granted_by: Option<String>,
    pub metadata: String,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
});

entity!(change_log, "ent_change_log", {
    #[sea_orm(primary_key, auto_increment = false)]
    pub revision: i64,
    pub changes: String,
    pub created_at: DateTimeUtc,
});

entity!(feed_cursor, "ent_feed_cursor", {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: i32,
    pub sequence: i64,
    pub updated_at: DateTimeUtc,
});

entity!(idempotency, "ent_idempotency", {
    #[sea_orm(primary_key, auto_increment = false)]
    pub scope: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub key: String,
    pub operation: String,
    pub fingerprint: String,
    pub response: String,
    pub created_at: DateTimeUtc,
});

entity!(webhook_endpoint, "ent_webhook_endpoint", {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub url: String,
    /// JSON array of event types.
    pub event_types: String,
    /// JSON array of account IDs.
    pub account_ids: String,
    pub enabled: bool,
    pub description: String,
    pub secret: String,
    pub disabled_reason: Option<String>,
    pub failing_since: Option<DateTimeUtc>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
});

entity!(webhook_outbox, "ent_webhook_outbox", {
    #[sea_orm(primary_key)]
    pub position: i64,
    pub events: String,
    pub created_at: DateTimeUtc,
});

entity!(webhook_delivery, "ent_webhook_delivery", {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub endpoint_id: Uuid,
    pub event_id: String,
    pub event_type: String,
    pub subject: Option<String>,
    pub body: String,
    pub status: String,
    pub attempts: i32,
    pub next_attempt_at: Option<DateTimeUtc>,
    pub last_attempt_at: Option<DateTimeUtc>,
    pub last_status_code: Option<i32>,
    pub last_latency_ms: Option<i64>,
    pub last_response_excerpt: Option<String>,
    pub last_error: Option<String>,
    pub created_at: DateTimeUtc,
});

entity!(grant_transition, "ent_grant_transition", {
    #[sea_orm(primary_key, auto_increment = false)]
    pub grant_id: Uuid,
    #[sea_orm(primary_key, auto_increment = false)]
    pub kind: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub lead_secs: i64,
    #[sea_orm(primary_key, auto_increment = false)]
    pub anchor_at: DateTimeUtc,
    pub sent: bool,
    pub recorded_at: DateTimeUtc,
});

entity!(transition_cursor, "ent_transition_cursor", {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: i32,
    pub scanned_until: Option<DateTimeUtc>,
});

entity!(meter, "ent_meter", {
    #[sea_orm(primary_key, auto_increment = false)]
    pub tenant_id: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub feature_id: Uuid,
    /// The user whose own meter it is; `''`: the account's meter.
    #[sea_orm(primary_key, auto_increment = false)]
    pub user_id: String,
    pub state: String,
    pub updated_at: DateTimeUtc,
});

entity!(usage_event, "ent_usage_event", {
    #[sea_orm(primary_key, auto_increment = false)]
    pub tenant_id: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub event_id: String,
    pub feature_id: Uuid,
    pub user_id: Option<String>,
    pub amount: i64,
    pub counted: i64,
    pub occurred_at: DateTimeUtc,
    pub received_at: DateTimeUtc,
    pub outcome: String,
    pub answer: Option<String>,
    pub unique_value: Option<String>,
    /// When the event drew on its meter (`None`: it drew nothing, or was stored before this
    /// was kept).
    pub drawn_at: Option<DateTimeUtc>,
    /// JSON of the meter right after the draw (`Drawn`).
    pub meter_after: Option<String>,
    /// The account whose meter it drew on (a pool's owner for its sub-accounts' events).
    pub drawn_on: Option<String>,
    /// Set when it drew on that user's own meter (of `drawn_on`).
    pub drawn_user: Option<String>,
});

entity!(usage_unique, "ent_usage_unique", {
    #[sea_orm(primary_key, auto_increment = false)]
    pub tenant_id: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub feature_id: Uuid,
    /// The user whose own meter it is; `''`: the account's meter.
    #[sea_orm(primary_key, auto_increment = false)]
    pub user_id: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub period_start: DateTimeUtc,
    #[sea_orm(primary_key, auto_increment = false)]
    pub value: String,
});

entity!(meter_period, "ent_meter_period", {
    #[sea_orm(primary_key, auto_increment = false)]
    pub tenant_id: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub feature_id: Uuid,
    /// The user whose own meter it is; `''`: the account's meter.
    #[sea_orm(primary_key, auto_increment = false)]
    pub user_id: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub period_start: DateTimeUtc,
    pub period_end: DateTimeUtc,
    pub manual: bool,
    /// JSON of the period's summary.
    pub summary: String,
    pub closed_at: DateTimeUtc,
});

entity!(credit_grant, "ent_credit_grant", {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub tenant_id: String,
    pub feature_id: Uuid,
    pub doc: String,
    pub created_at: DateTimeUtc,
    pub voided_at: Option<DateTimeUtc>,
});

entity!(usage_threshold, "ent_usage_threshold", {
    #[sea_orm(primary_key, auto_increment = false)]
    pub tenant_id: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub feature_id: Uuid,
    /// The user whose own meter it is; `''`: the account's meter.
    #[sea_orm(primary_key, auto_increment = false)]
    pub user_id: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub period_start: DateTimeUtc,
    #[sea_orm(primary_key, auto_increment = false)]
    pub threshold: i32,
    pub fired_at: DateTimeUtc,
});

entity!(reservation, "ent_reservation", {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub tenant_id: String,
    pub idempotency_key: String,
    pub feature_id: Uuid,
    pub doc: String,
    pub answer: String,
    pub expires_at: DateTimeUtc,
    pub created_at: DateTimeUtc,
});
