//! End-to-end tests: the real `tenant-service`, `entitlement-service` and `gateway` binaries as
//! separate processes against PostgreSQL (see `tenantry_tests::Stack`), driven through REST only.
//! One test binary; each test starts its own stack and shares it across the steps of a journey.

mod console;
mod distribution;
mod feed;
mod frontegg_sdk;
mod frontegg_targeting;
mod journey;
mod metering;
mod migration;
mod openfeature;
mod resilience;
mod sdk;
mod stream;
mod support;
mod telemetry;
mod webhooks;
