//! The tenant service's domain: account types, validation and rules. Knows neither gRPC nor
//! the database.

pub mod account;
pub mod audit;
pub mod change;
pub mod error;
pub mod hierarchy;
pub mod idempotency;
pub mod list;
pub mod membership;
pub mod migration;

pub use account::*;
pub use change::*;
pub use error::Error;
pub use hierarchy::*;
pub use idempotency::{Claim, Idempotency, StoredKey};
pub use list::*;
pub use membership::*;
pub use migration::*;

use chrono::{DateTime, Timelike, Utc};

/// The current time at microsecond precision: what PostgreSQL stores, so a value read back
/// compares equal to the one written.
pub fn now() -> DateTime<Utc> {
    let now = Utc::now();
    now.with_nanosecond(now.nanosecond() / 1_000 * 1_000)
        .unwrap_or(now)
}
