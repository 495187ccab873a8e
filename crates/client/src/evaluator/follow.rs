//! The evaluator's background task: load the snapshot file, then follow `WatchIndex`,
//! reconnecting and resuming, and save the snapshot file as the index changes.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, SystemTime},
};

use tenantry_common::{
    CancellationToken,
    grpc::{CallFailure, ClientChannel},
};
use tenantry_index::{Follower, StreamEvent};
use tenantry_proto::entitlement::v1::{
    WatchIndexRequest, index_stream_service_client::IndexStreamServiceClient,
};
use tokio::{task::JoinHandle, time::Instant};

use super::{EvaluatorConfig, Origin, Shared, persist};
use crate::retry::RetryPolicy;

pub(super) async fn run(
    shared: Arc<Shared>,
    channel: ClientChannel,
    max_message_bytes: usize,
    config: Arc<EvaluatorConfig>,
    stop: CancellationToken,
) {
    let mut follower = Follower::new();
    if let Some(path) = config.snapshot_file.clone()
        && let Some((loaded, contact)) = load(path).await
    {
        if let Some(index) = loaded.current() {
            shared.loaded_contact(contact);
            shared.publish(index, Origin::Persisted);
        }
        follower = loaded;
    }
    let mut saver = Saver::new(config.snapshot_file.clone(), config.persist_every);
    let backoff = RetryPolicy {
        max_attempts: u32::MAX,
        initial_backoff: config.reconnect_initial,
        max_backoff: config.reconnect_max,
    };
    let mut failures = 0u32;
    let mut client = IndexStreamServiceClient::new(channel)
        .max_decoding_message_size(max_message_bytes)
        .max_encoding_message_size(max_message_bytes);
    while !stop.is_cancelled() {
        let request = WatchIndexRequest {
            resume_revision: follower.revision(),
            account_ids: config.accounts.clone(),
        };
        let opened = tokio::select! {
            opened = client.watch_index(request) => opened,
            () = stop.cancelled() => break,
        };
        match opened {
            Ok(response) => {
                let mut stream = response.into_inner();
                shared.heard(SystemTime::now());
                loop {
                    let message = tokio::select! {
                        message = tokio::time::timeout(config.idle_timeout, stream.message()) => message,
                        () = stop.cancelled() => break,
                    };
                    let message = match message {
                        Ok(Ok(Some(message))) => message,
                        Ok(Ok(None)) => {
                            tracing::info!("index stream ended by the service; reconnecting");
                            break;
                        }
                        Ok(Err(status)) => {
                            tracing::warn!(code = ?status.code(), message = status.message(), "index stream broke; reconnecting");
                            break;
                        }
                        Err(_) => {
                            tracing::warn!(
                                idle_ms = config.idle_timeout.as_millis(),
                                "index stream silent; reconnecting"
                            );
                            break;
                        }
                    };
                    shared.heard(SystemTime::now());
                    failures = 0;
                    let event = match StreamEvent::try_from(message) {
                        Ok(event) => event,
                        Err(error) => {
                            // A message this build cannot read: start over from a snapshot
                            // rather than apply part of a revision.
                            tracing::warn!(%error, "undecodable index stream message; resynchronising");
                            // A new follower asks for a snapshot on the next connection; the
                            // published index keeps answering until that snapshot completes.
                            follower = Follower::new();
                            break;
                        }
                    };
                    if let StreamEvent::Reset { reason, message } = &event {
                        tracing::info!(?reason, %message, "index stream reset; a snapshot follows");
                    }
                    let snapshot_end = matches!(event, StreamEvent::SnapshotEnd { .. });
                    match follower.apply(event) {
                        Ok(Some(index)) => {
                            shared.publish(index, Origin::Service);
                            saver.changed(snapshot_end);
                        }
                        Ok(None) => {}
                        Err(error) => {
                            tracing::warn!(%error, "index stream out of order; resynchronising");
                            // A new follower asks for a snapshot on the next connection; the
                            // published index keeps answering until that snapshot completes.
                            follower = Follower::new();
                            break;
                        }
                    }
                    saver.maybe_save(&follower, &shared);
                }
            }
            Err(status) => {
                let failure = CallFailure::of(&status);
                if failure == CallFailure::Credentials {
                    tracing::error!(code = ?status.code(), "the entitlement service refused the service token; retrying");
                } else {
                    tracing::warn!(code = ?status.code(), message = status.message(), "cannot open the index stream; retrying");
                }
            }
        }
        shared.disconnected();
        if stop.is_cancelled() {
            break;
        }
        failures = failures.saturating_add(1);
        let wait = backoff.backoff(failures);
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = stop.cancelled() => break,
        }
    }
    shared.disconnected();
    saver.flush(&follower, &shared).await;
}

/// Reads a snapshot file into a follower (blocking). The follower is returned only when the
/// whole file read and applied cleanly.
pub(super) fn load_file(path: &Path) -> Result<(Follower, SystemTime), persist::PersistError> {
    let mut follower = Follower::new();
    let mut broken = None;
    let contact = persist::load(path, |event| {
        if broken.is_none()
            && let Err(error) = follower.apply(event)
        {
            broken = Some(error);
        }
    })?;
    match broken {
        None => Ok((follower, contact)),
        Some(error) => Err(persist::PersistError::Format {
            path: path.to_owned(),
            reason: error.to_string(),
        }),
    }
}

/// Past mimalloc's delay before freed memory may go back to the system (its arenas': 10 ms ×
/// 10 by default).
const ALLOCATOR_PURGE_DELAY: Duration = Duration::from_millis(100);
/// How many such calls: a purge frees what expired by then, and frees seen by one call (pages
/// other threads released) expire only for a later one.
const ALLOCATOR_PURGE_ROUNDS: usize = 10;

/// Building an index from a file frees ~90 B per grant of scratch (staged tenants, decoded
/// records). mimalloc gives freed memory back to the system only from an allocator call made
/// after its purge delay, at most one purge per delay and a few arenas per call; an idle agent
/// (the service away) makes no such call, and its RSS would stay a third higher. A thread's
/// exit is such a call, so short-lived threads, one per delay for about a second, make them.
#[expect(
    clippy::disallowed_methods,
    reason = "runs on the loading thread, never on a runtime worker"
)]
fn return_scratch_memory() {
    for _ in 0..ALLOCATOR_PURGE_ROUNDS {
        std::thread::sleep(ALLOCATOR_PURGE_DELAY);
        let collector = std::thread::Builder::new()
            .name("snapshot-load-collect".into())
            // The allocation gives the thread a heap, which its exit then collects.
            .spawn(|| drop(std::hint::black_box(Box::new(0u64))));
        if let Ok(collector) = collector {
            let _ = collector.join();
        }
    }
}

/// Loads the snapshot file into a follower, off the async threads. A missing file is silent,
/// an unusable one a warning; either way the evaluator starts without it.
async fn load(path: PathBuf) -> Option<(Follower, SystemTime)> {
    let shown = path.clone();
    let (done, loaded) = tokio::sync::oneshot::channel();
    let spawned = std::thread::Builder::new()
        .name("snapshot-load".into())
        .spawn(move || {
            let _ = done.send(load_file(&path));
            return_scratch_memory();
        });
    if let Err(error) = spawned {
        tracing::warn!(%error, "cannot start the snapshot loading thread");
        return None;
    }
    match loaded.await {
        Ok(Ok((follower, contact))) => {
            tracing::info!(
                path = %shown.display(),
                revision = follower.revision(),
                "loaded the index snapshot file"
            );
            Some((follower, contact))
        }
        Ok(Err(persist::PersistError::Io { source, .. }))
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            None
        }
        Ok(Err(error)) => {
            tracing::warn!(%error, "ignoring the index snapshot file");
            None
        }
        Err(error) => {
            tracing::warn!(%error, "loading the index snapshot file failed");
            None
        }
    }
}

/// Saves the snapshot file after a snapshot, and at most every `every` after deltas, one save
/// at a time, off the async threads.
struct Saver {
    path: Option<PathBuf>,
    every: Duration,
    last: Option<Instant>,
    dirty: bool,
    running: Option<JoinHandle<()>>,
}

impl Saver {
    fn new(path: Option<PathBuf>, every: Duration) -> Self {
        Self {
            path,
            every,
            last: None,
            dirty: false,
            running: None,
        }
    }

    /// Notes a published revision; a snapshot is saved without waiting for `every`.
    fn changed(&mut self, snapshot: bool) {
        self.dirty = true;
        if snapshot {
            self.last = None;
        }
    }

    /// Saves when something changed and the last save is `every` old (or was a snapshot's).
    fn maybe_save(&mut self, follower: &Follower, shared: &Shared) {
        let due = self.dirty && self.last.is_none_or(|t| t.elapsed() >= self.every);
        if due && self.running.as_ref().is_none_or(JoinHandle::is_finished) {
            self.running = self.save(follower, shared);
        }
    }

    fn save(&mut self, follower: &Follower, shared: &Shared) -> Option<JoinHandle<()>> {
        let path = self.path.clone()?;
        let export = follower.export()?;
        let contact = shared.last_contact().unwrap_or_else(SystemTime::now);
        self.dirty = false;
        self.last = Some(Instant::now());
        Some(tokio::task::spawn_blocking(move || {
            match persist::save(&path, &export, contact) {
                Ok(()) => tracing::debug!(
                    path = %path.display(),
                    revision = export.revision(),
                    "saved the index snapshot file"
                ),
                Err(error) => tracing::warn!(%error, "cannot save the index snapshot file"),
            }
        }))
    }

    /// Waits for a save under way, then saves what changed since.
    async fn flush(&mut self, follower: &Follower, shared: &Shared) {
        if let Some(running) = self.running.take() {
            let _ = running.await;
        }
        if self.dirty
            && let Some(running) = self.save(follower, shared)
        {
            let _ = running.await;
        }
    }
}
