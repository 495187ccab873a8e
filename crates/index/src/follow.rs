//! Following an index from outside the service: the events of the entitlement stream
//! (`IndexStreamService.WatchIndex`, decoded by `tenantry-proto`'s `index_stream` module) applied
//! to a local writer, so the follower's index equals the service's at every revision it reports.

use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::index::EntitlementIndex;
use super::writer::{IndexChange, IndexWriter};

/// Why the service sent a reset (a fresh snapshot follows).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetReason {
    /// The resume revision is older than what the service still holds.
    RevisionTooOld,
    /// The resume revision is newer than the service's index.
    RevisionUnknown,
    /// The subscriber fell behind further than the service keeps revisions for.
    Lagging,
    /// The hierarchy around the scoped accounts changed.
    ScopeChanged,
    /// The service rebuilt its index from storage.
    IndexReloaded,
    /// A reason this version does not know.
    Other,
}

/// One event of the stream.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent {
    SnapshotBegin {
        revision: u64,
        written_until: Option<DateTime<Utc>>,
    },
    SnapshotChunk(Vec<IndexChange>),
    SnapshotEnd {
        revision: u64,
    },
    Delta {
        revision: u64,
        written_at: Option<DateTime<Utc>>,
        changes: Vec<IndexChange>,
    },
    Heartbeat {
        revision: u64,
    },
    Reset {
        reason: ResetReason,
        message: String,
    },
}

/// The stream broke its own rules: the follower must reconnect (without `resume_revision`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FollowError {
    #[error("delta for revision {got} while holding {held:?} (expected the next one)")]
    OutOfOrder { held: Option<u64>, got: u64 },
    #[error("snapshot chunk or end outside a snapshot")]
    NotInSnapshot,
    #[error("snapshot of revision {begun} ended as revision {ended}")]
    SnapshotMismatch { begun: u64, ended: u64 },
}

/// A snapshot being received: its chunks go straight into a new writer (staged, not
/// published), so a large snapshot is never held as a list of changes beside the index built
/// from it.
#[derive(Debug)]
struct Pending {
    revision: u64,
    writer: IndexWriter,
}

/// Applies stream events to a local index.
#[derive(Debug, Default)]
pub struct Follower {
    writer: Option<IndexWriter>,
    pending: Option<Pending>,
}

impl Follower {
    pub fn new() -> Self {
        Self::default()
    }

    /// The revision the local index holds (`None` before the first complete snapshot). Give it
    /// as `resume_revision` when reconnecting.
    pub fn revision(&self) -> Option<u64> {
        self.writer.as_ref().map(IndexWriter::revision)
    }

    /// The local index with its catalog, to save or hand on (`None` before the first complete
    /// snapshot).
    pub fn export(&self) -> Option<crate::IndexExport> {
        self.writer.as_ref().map(IndexWriter::export)
    }

    /// The local index (`None` before the first complete snapshot).
    pub fn current(&self) -> Option<Arc<EntitlementIndex>> {
        self.writer.as_ref().map(IndexWriter::current)
    }

    /// Applies one event; returns the new index when it published a revision (a snapshot's end
    /// or a delta). A reset keeps the old index answering until the next snapshot completes.
    pub fn apply(
        &mut self,
        event: StreamEvent,
    ) -> Result<Option<Arc<EntitlementIndex>>, FollowError> {
        match event {
            StreamEvent::SnapshotBegin {
                revision,
                written_until,
            } => {
                let mut writer = IndexWriter::new();
                if let Some(at) = written_until {
                    writer.note_written(at);
                }
                self.pending = Some(Pending { revision, writer });
                Ok(None)
            }
            StreamEvent::SnapshotChunk(changes) => {
                let pending = self.pending.as_mut().ok_or(FollowError::NotInSnapshot)?;
                pending.writer.stage(changes);
                Ok(None)
            }
            StreamEvent::SnapshotEnd { revision } => {
                let pending = self.pending.take().ok_or(FollowError::NotInSnapshot)?;
                if pending.revision != revision {
                    return Err(FollowError::SnapshotMismatch {
                        begun: pending.revision,
                        ended: revision,
                    });
                }
                let mut writer = pending.writer;
                let index = writer.apply_at(revision, []);
                self.writer = Some(writer);
                Ok(Some(index))
            }
            StreamEvent::Delta {
                revision,
                written_at,
                changes,
            } => {
                let held = self.revision();
                let writer = match (self.writer.as_mut(), held) {
                    (Some(writer), Some(h)) if h + 1 == revision && self.pending.is_none() => {
                        writer
                    }
                    _ => {
                        return Err(FollowError::OutOfOrder {
                            held,
                            got: revision,
                        });
                    }
                };
                if let Some(at) = written_at {
                    writer.note_written(at);
                }
                Ok(Some(writer.apply_at(revision, changes)))
            }
            StreamEvent::Heartbeat { .. } | StreamEvent::Reset { .. } => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synthetic::{feature_decisions, world};

    /// The events a service sends for an export: catalog, accounts, grants.
    fn snapshot_events(writer: &IndexWriter, scope: Option<&[String]>) -> Vec<StreamEvent> {
        let export = writer.export();
        let accounts = match scope {
            Some(s) => export.scope(s),
            None => export.accounts(),
        };
        let mut changes: Vec<IndexChange> = export.catalog_changes().collect();
        for (id, parent) in &accounts {
            changes.push(IndexChange::UpsertTenant {
                id: id.clone(),
                parent: parent.clone(),
            });
        }
        for id in accounts.keys() {
            changes.extend(
                export
                    .grants_of(id)
                    .into_iter()
                    .map(IndexChange::UpsertGrant)
                    .chain(export.meters_of(id)),
            );
        }
        vec![
            StreamEvent::SnapshotBegin {
                revision: export.revision(),
                written_until: export.written_until(),
            },
            StreamEvent::SnapshotChunk(changes),
            StreamEvent::SnapshotEnd {
                revision: export.revision(),
            },
        ]
    }

    fn answers(index: &EntitlementIndex, tenants: &[String]) -> Vec<bool> {
        feature_decisions(index, tenants)
            .iter()
            .map(|d| d.result)
            .collect()
    }

    #[test]
    fn a_follower_of_an_export_and_its_deltas_answers_as_the_source() {
        let (snapshot, tenants) = world(60, 3);
        let mut source = IndexWriter::from_snapshot(snapshot, 7);
        let mut follower = Follower::new();
        for event in snapshot_events(&source, None) {
            follower.apply(event).unwrap();
        }
        assert_eq!(follower.revision(), Some(7));
        let held = follower.current().unwrap();
        assert_eq!(
            answers(&held, &tenants),
            answers(&source.current(), &tenants)
        );
        assert_eq!(held.grant_count(), source.current().grant_count());

        // A deleted account's grants vanish on both.
        let delta = vec![IndexChange::RemoveTenant {
            id: tenants[5].clone(),
        }];
        source.apply_at(8, delta.clone());
        follower
            .apply(StreamEvent::Delta {
                revision: 8,
                written_at: None,
                changes: delta,
            })
            .unwrap();
        assert_eq!(
            answers(&follower.current().unwrap(), &tenants),
            answers(&source.current(), &tenants)
        );
        // A hole is refused, never applied.
        let err = follower
            .apply(StreamEvent::Delta {
                revision: 10,
                written_at: None,
                changes: Vec::new(),
            })
            .unwrap_err();
        assert_eq!(
            err,
            FollowError::OutOfOrder {
                held: Some(8),
                got: 10
            }
        );
    }

    #[test]
    fn a_scoped_follower_resolves_inherited_grants_of_its_accounts() {
        let (snapshot, tenants) = world(60, 5);
        let source = IndexWriter::from_snapshot(snapshot, 1);
        // Accounts below a root, whose grants may come from their ancestors.
        let index = source.current();
        let scoped: Vec<String> = tenants
            .iter()
            .filter(|t| !index.ancestors(t).is_empty())
            .take(3)
            .cloned()
            .collect();
        assert_eq!(scoped.len(), 3);
        let mut follower = Follower::new();
        for event in snapshot_events(&source, Some(&scoped)) {
            follower.apply(event).unwrap();
        }
        let held = follower.current().unwrap();
        assert_eq!(answers(&held, &scoped), answers(&index, &scoped));
        assert!(held.tenant_count() < index.tenant_count());
    }
}
