//! Memberships: users of the customer's identity provider belonging to accounts.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership {
    pub tenant_id: String,
    pub user_id: String,
    pub created_at: DateTime<Utc>,
}
