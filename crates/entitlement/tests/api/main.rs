//! Integration tests over real gRPC: the entitlement service against an ephemeral PostgreSQL
//! (and SQLite for the main paths), with the real tenant service running beside it.

mod audit;
mod batch_insert;
mod catalog;
mod checks;
mod durability;
mod explain;
mod feed;
mod grants;
mod helpers;
mod idempotency;
mod metered_catalog;
mod races;
mod replicas;
mod sqlite;
