//! Memberships: users of the customer's identity provider belonging to accounts.

use chrono::{DateTime, Utc};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Membership {
    pub tenant_id: String,
    pub user_id: String,
    pub created_at: DateTime<Utc>,
}
