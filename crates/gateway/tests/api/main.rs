//! The gateway through real HTTP: one test binary made of modules.

mod accounts;
mod edge;
mod entitlements;
mod helpers;
mod idempotency;
mod platform;
mod seed_002;
mod seed_004;
