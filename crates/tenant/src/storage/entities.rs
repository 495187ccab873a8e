//! sea-orm entities of the tenant schema (the migrations define the tables; these mirror them).

pub mod accounts {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "accounts")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub tenant_id: String,
        pub name: String,
        pub status: Option<String>,
        pub website: Option<String>,
        pub application_url: Option<String>,
        pub logo: Option<String>,
        pub logo_url: Option<String>,
        pub address: Option<String>,
        pub timezone: Option<String>,
        pub currency: Option<String>,
        pub creator_name: Option<String>,
        pub creator_email: Option<String>,
        pub date_format: Option<String>,
        pub time_format: Option<String>,
        pub locale: Option<String>,
        pub is_reseller: bool,
        pub parent_tenant_id: Option<String>,
        pub alias: Option<String>,
        pub metadata: String,
        pub sub_account_access_type: String,
        pub created_at: DateTimeUtc,
        pub updated_at: DateTimeUtc,
        pub deleted_at: Option<DateTimeUtc>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod memberships {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "memberships")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub tenant_id: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub user_id: String,
        pub created_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod change_events {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "change_events")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub sequence: i64,
        pub change_type: String,
        /// NULL for a `migration_finished` row, the one kind that is no account's change.
        pub tenant_id: Option<String>,
        pub occurred_at: DateTimeUtc,
        pub payload: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod migration_jobs {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "migration_jobs")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub migration_id: String,
        pub state: String,
        pub total_items: i64,
        pub processed_items: i64,
        pub created_items: i64,
        pub skipped_items: i64,
        pub failed_items: i64,
        /// `processed_items` when the current pass over deferred items began.
        pub pass_marker: i64,
        pub failure_message: Option<String>,
        pub created_at: DateTimeUtc,
        pub started_at: Option<DateTimeUtc>,
        pub finished_at: Option<DateTimeUtc>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod migration_items {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "migration_items")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub migration_id: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub item_index: i64,
        pub tenant_id: Option<String>,
        pub state: String,
        pub payload: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod migration_errors {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "migration_errors")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub migration_id: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub item_index: i64,
        pub tenant_id: String,
        pub field: String,
        pub reason: String,
        pub message: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod idempotency_keys {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "idempotency_keys")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub scope: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub key: String,
        pub operation: String,
        pub fingerprint: String,
        pub response: String,
        pub created_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
