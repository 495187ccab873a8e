//! Use-cases: the rules and orchestration of every RPC — validation, the deleted-ID policy,
//! idempotent creates, scope checks, paging and batch limits, the migration upload, following
//! the change feed — free of gRPC and of the database library. One file per area; they reach
//! storage (and the feed's follower, the migration upload) through the ports in [`ports`],
//! which `storage::Store` implements.

pub mod accounts;
pub mod audit;
pub mod feed;
pub mod hierarchy;
pub mod idempotency;
pub mod memberships;
pub mod migrations;
pub mod ports;

use ports::Storage;

use crate::workers::Workers;

/// The service's state, shared by every RPC. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Engine<S: Storage> {
    store: S,
    /// Runs submitted migrations in the background.
    workers: Workers,
}

impl<S: Storage> Engine<S> {
    pub fn new(store: S, workers: Workers) -> Self {
        Self { store, workers }
    }
}

#[cfg(test)]
pub(crate) mod testing;
