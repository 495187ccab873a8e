//! Integration tests of the tenant service over real gRPC on loopback, against the ephemeral
//! PostgreSQL (and SQLite for the main paths). One binary, one module per area.

mod accounts;
mod audit;
mod counts;
mod durability;
mod errors;
mod feed;
mod helpers;
mod hierarchy;
mod idempotency;
mod memberships;
mod metadata_search;
mod migrations;
mod plans;
mod races;
mod sqlite;
