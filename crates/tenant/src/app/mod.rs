//! Use-cases: rules and orchestration over the store, free of gRPC.

pub mod idempotency;
