//! The Rust SDK for Tenantry.
//!
//! - [`TenantApi`] and [`EntitlementApi`]: typed clients for every gRPC service. Each call
//!   carries the service token, runs within a deadline, and is retried only when that is safe
//!   (a read, or a write with an `idempotency_key`) and only on outages ([`RetryPolicy`]).
//!
//! ```no_run
//! use tenantry_client::{ClientConfig, EntitlementApi};
//! use tenantry_client::pb::entitlement::{EntitlementQuery, IsEntitledToRequest};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let config = ClientConfig::default().with_service_token("my-service-token");
//! let api = EntitlementApi::connect("http://127.0.0.1:50052", &config)?;
//! let answer = api
//!     .checks()
//!     .is_entitled_to(IsEntitledToRequest::default())
//!     .await?;
//! # let _ = (answer, EntitlementQuery::default());
//! # Ok(())
//! # }
//! ```

pub mod evaluator;
mod retry;
mod services;

pub use evaluator::{EvalError, Evaluator, EvaluatorConfig, Origin, Staleness};
pub use retry::{RetryPolicy, Safety};
pub use services::{
    AccountsClient, ChangeFeedClient, ChecksClient, ClientConfig, EntitlementApi, FeaturesClient,
    FlagsClient, GrantsClient, HierarchyClient, MembershipsClient, MigrationsClient, PlansClient,
    RoutesClient, TenantApi,
};
pub use tenantry_common::grpc::{CallFailure, ConnectError};
/// The evaluation core the evaluator runs: checks, subjects, decisions.
pub use tenantry_index as index;

/// The generated messages, re-exported so callers need no direct `tenantry-proto` dependency.
pub mod pb {
    pub use tenantry_proto::common::v1 as common;
    pub use tenantry_proto::entitlement::v1 as entitlement;
    pub use tenantry_proto::tenant::v1 as tenant;
}
