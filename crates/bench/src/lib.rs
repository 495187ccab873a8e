//! Tenantry's benchmark suite (issue 6, part 3): the in-process check and the real services on
//! one machine, every figure of two things measured side by side in the same run (A/B interleaved, median of at
//! least five pairs with min and max), plus the server-side CPU time per request.
//!
//! The suite runs from the `tenantry-bench` binary, never in CI; CI compiles it and runs the
//! unit tests of the statistics, the load generator and the table.

pub mod ab;
pub mod audit;
pub mod batch;
pub mod distribution;
pub mod edge;
pub mod fixture;
pub mod inproc;
pub mod list;
pub mod load;
pub mod memory;
pub mod metering;
pub mod procfs;
pub mod replica;
pub mod report;
pub mod rpc;
pub mod soak;
pub mod stats;
pub mod webhooks;
