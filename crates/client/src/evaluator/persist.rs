//! The fail-static snapshot file: the last index an evaluator held, so a process that starts
//! while the service is unreachable answers from it (and says how stale it is).
//!
//! Format (version 1), little-endian:
//! - `TNTRYIX1` magic, `u32` format version, `i64` last contact with the service (Unix µs);
//! - records: `u32` length + one encoded `WatchIndexResponse`: a `snapshot_begin`, chunks,
//!   a `snapshot_end` — the stream's own messages, so loading replays them through the same
//!   follower as a live snapshot;
//! - a `u32` zero, then the CRC-32 of everything before it.
//!
//! Written to a temporary file in the same directory, fsynced, renamed over the old one and the
//! directory fsynced, so a crash leaves the old file or the new one, never half of one. A file
//! that is truncated, of another version, or fails its checksum is ignored with a warning.

use std::{
    fs::File,
    io::{BufReader, BufWriter, Read, Write},
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use prost::Message;
use tenantry_index::{IndexChange, IndexExport, StreamEvent};
use tenantry_proto::entitlement::v1 as pb;

const MAGIC: &[u8; 8] = b"TNTRYIX1";
const FORMAT_VERSION: u32 = 1;
/// Changes per chunk record: small enough to keep a record's buffer modest.
const CHANGES_PER_CHUNK: usize = 4096;
/// No record is larger than this; a larger length means a corrupt file.
const MAX_RECORD_BYTES: usize = 256 << 20;

/// Why a snapshot file was not used.
#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    #[error("cannot read or write {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a snapshot file of a known version: {reason}")]
    Format { path: PathBuf, reason: String },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PersistError + '_ {
    move |source| PersistError::Io {
        path: path.to_owned(),
        source,
    }
}

fn format_error(path: &Path, reason: impl Into<String>) -> PersistError {
    PersistError::Format {
        path: path.to_owned(),
        reason: reason.into(),
    }
}

/// A writer that checksums what passes through it.
struct Checksummed<W> {
    inner: W,
    crc: crc32fast::Hasher,
}

impl<W: Write> Write for Checksummed<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.crc.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn write_record(
    out: &mut impl Write,
    event: StreamEvent,
    buf: &mut Vec<u8>,
) -> std::io::Result<()> {
    buf.clear();
    pb::WatchIndexResponse::from(event)
        .encode(buf)
        .map_err(std::io::Error::other)?;
    let len = u32::try_from(buf.len()).map_err(std::io::Error::other)?;
    out.write_all(&len.to_le_bytes())?;
    out.write_all(buf)
}

/// Writes `export` to `path` atomically (temporary file, fsync, rename, directory fsync).
pub fn save(
    path: &Path,
    export: &IndexExport,
    last_contact: SystemTime,
) -> Result<(), PersistError> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "snapshot".to_owned()),
        std::process::id()
    ));
    let result = (|| {
        let file = File::create(&tmp).map_err(io(&tmp))?;
        let mut out = Checksummed {
            inner: BufWriter::with_capacity(1 << 20, file),
            crc: crc32fast::Hasher::new(),
        };
        let contact = last_contact
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
            .unwrap_or_default();
        let mut header = Vec::with_capacity(20);
        header.extend_from_slice(MAGIC);
        header.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        header.extend_from_slice(&contact.to_le_bytes());
        out.write_all(&header).map_err(io(&tmp))?;

        let revision = export.revision();
        let mut buf = Vec::new();
        write_record(
            &mut out,
            StreamEvent::SnapshotBegin {
                revision,
                written_until: export.written_until(),
            },
            &mut buf,
        )
        .map_err(io(&tmp))?;
        let accounts = export.accounts();
        let changes = export
            .catalog_changes()
            .chain(
                accounts
                    .iter()
                    .map(|(id, parent)| IndexChange::UpsertTenant {
                        id: id.clone(),
                        parent: parent.clone(),
                    }),
            )
            .chain(
                accounts
                    .keys()
                    .flat_map(|id| export.grants_of(id))
                    .map(IndexChange::UpsertGrant),
            )
            .chain(accounts.keys().flat_map(|id| export.meters_of(id)));
        let mut chunk = Vec::with_capacity(CHANGES_PER_CHUNK);
        for change in changes {
            chunk.push(change);
            if chunk.len() == CHANGES_PER_CHUNK {
                write_record(
                    &mut out,
                    StreamEvent::SnapshotChunk(std::mem::take(&mut chunk)),
                    &mut buf,
                )
                .map_err(io(&tmp))?;
            }
        }
        if !chunk.is_empty() {
            write_record(&mut out, StreamEvent::SnapshotChunk(chunk), &mut buf)
                .map_err(io(&tmp))?;
        }
        write_record(&mut out, StreamEvent::SnapshotEnd { revision }, &mut buf)
            .map_err(io(&tmp))?;
        out.write_all(&0u32.to_le_bytes()).map_err(io(&tmp))?;
        let crc = out.crc.clone().finalize();
        let mut file = out
            .inner
            .into_inner()
            .map_err(|e| io(&tmp)(e.into_error()))?;
        file.write_all(&crc.to_le_bytes()).map_err(io(&tmp))?;
        file.sync_all().map_err(io(&tmp))?;
        std::fs::rename(&tmp, path).map_err(io(path))?;
        // The rename itself is durable only once the directory is.
        File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Records decoded ahead of the caller: enough to keep both threads busy, few enough that a
/// large snapshot is never held twice.
const DECODED_AHEAD: usize = 4;

/// Reads a snapshot file written by [`save`], handing each stream event to `apply` as it is
/// decoded (so a large snapshot is never held twice), and returns when the writer last heard
/// from the service. The caller applies the events to a scratch follower and keeps it only when
/// this returns `Ok`: a corrupt tail is found only at the end.
///
/// Reading, checksumming and decoding run on a thread of their own while the calling thread
/// applies, so a cold start from a large file takes about the longer of the two, not their sum.
pub fn load(path: &Path, mut apply: impl FnMut(StreamEvent)) -> Result<SystemTime, PersistError> {
    let file = File::open(path).map_err(io(path))?;
    let total = file.metadata().map_err(io(path))?.len();
    let (events, decoded) = std::sync::mpsc::sync_channel(DECODED_AHEAD);
    std::thread::scope(|scope| {
        let decoder = std::thread::Builder::new()
            .name("snapshot-decode".into())
            .spawn_scoped(scope, move || decode(path, file, total, &events))
            .map_err(io(path))?;
        // Ends when the decoder stops sending: at the end of the file or at its first error.
        for event in decoded {
            apply(event);
        }
        decoder
            .join()
            .map_err(|_| format_error(path, "the decoding thread panicked"))?
    })
}

/// The decoding half of [`load`]: sends each event in file order and checks the framing and the
/// checksum; stops early (dropping the sender) when the receiver is gone.
fn decode(
    path: &Path,
    file: File,
    total: u64,
    events: &std::sync::mpsc::SyncSender<StreamEvent>,
) -> Result<SystemTime, PersistError> {
    let mut input = BufReader::with_capacity(1 << 20, file);
    let mut crc = crc32fast::Hasher::new();
    let mut header = [0u8; 20];
    input
        .read_exact(&mut header)
        .map_err(|_| format_error(path, "shorter than its header"))?;
    crc.update(&header);
    if &header[..8] != MAGIC {
        return Err(format_error(path, "wrong magic"));
    }
    let version = u32::from_le_bytes(header[8..12].try_into().unwrap_or_default());
    if version != FORMAT_VERSION {
        return Err(format_error(
            path,
            format!("format version {version}, this build reads {FORMAT_VERSION}"),
        ));
    }
    let contact = i64::from_le_bytes(header[12..20].try_into().unwrap_or_default());
    let last_contact =
        SystemTime::UNIX_EPOCH + Duration::from_micros(u64::try_from(contact).unwrap_or_default());

    let mut first = true;
    let mut ended = false;
    let mut buf = Vec::new();
    let mut read = header.len() as u64;
    loop {
        let mut len = [0u8; 4];
        input
            .read_exact(&mut len)
            .map_err(|_| format_error(path, "truncated"))?;
        crc.update(&len);
        read += 4;
        let len = u32::from_le_bytes(len) as usize;
        if len == 0 {
            break;
        }
        if len > MAX_RECORD_BYTES || read + len as u64 > total {
            return Err(format_error(path, "a record runs past the end of the file"));
        }
        buf.resize(len, 0);
        input
            .read_exact(&mut buf)
            .map_err(|_| format_error(path, "truncated"))?;
        crc.update(&buf);
        read += len as u64;
        let message = pb::WatchIndexResponse::decode(buf.as_slice())
            .map_err(|e| format_error(path, format!("undecodable record: {e}")))?;
        let event = StreamEvent::try_from(message)
            .map_err(|e| format_error(path, format!("bad record: {e}")))?;
        if first != matches!(event, StreamEvent::SnapshotBegin { .. }) || ended {
            return Err(format_error(path, "records out of order"));
        }
        first = false;
        ended = matches!(event, StreamEvent::SnapshotEnd { .. });
        if events.send(event).is_err() {
            return Err(format_error(path, "the reader stopped"));
        }
    }
    let mut stored = [0u8; 4];
    input
        .read_exact(&mut stored)
        .map_err(|_| format_error(path, "truncated before its checksum"))?;
    if u32::from_le_bytes(stored) != crc.finalize() {
        return Err(format_error(path, "checksum mismatch"));
    }
    if !ended {
        return Err(format_error(path, "not a complete snapshot"));
    }
    Ok(last_contact)
}

#[cfg(test)]
mod tests {
    use tenantry_index::{
        EntitlementIndex, Follower, IndexWriter,
        synthetic::{feature_decisions, world},
    };

    use super::*;

    fn answers(index: &EntitlementIndex, tenants: &[String]) -> Vec<(bool, u64)> {
        feature_decisions(index, tenants)
            .iter()
            .map(|d| (d.result, d.revision))
            .collect()
    }

    fn saved(dir: &Path) -> (PathBuf, IndexWriter, Vec<String>) {
        let (snapshot, tenants) = world(200, 11);
        let writer = IndexWriter::from_snapshot(snapshot, 42);
        let path = dir.join("index.snapshot");
        save(
            &path,
            &writer.export(),
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000),
        )
        .expect("save");
        (path, writer, tenants)
    }

    fn reload(path: &Path) -> Result<(Follower, SystemTime), PersistError> {
        let mut follower = Follower::new();
        let contact = load(path, |event| {
            follower.apply(event).expect("events in order");
        })?;
        Ok((follower, contact))
    }

    #[test]
    fn a_saved_snapshot_loads_back_answering_as_the_index_it_was_saved_from() {
        let dir = tempfile::tempdir().expect("dir");
        let (path, writer, tenants) = saved(dir.path());
        let (follower, contact) = reload(&path).expect("load");
        assert_eq!(follower.revision(), Some(42));
        assert_eq!(
            contact,
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000)
        );
        let held = follower.current().expect("index");
        assert_eq!(held.grant_count(), writer.current().grant_count());
        assert_eq!(
            answers(&held, &tenants),
            answers(&writer.current(), &tenants)
        );
        // Saving again replaces the file atomically and leaves no temporary file behind.
        save(&path, &writer.export(), SystemTime::now()).expect("save again");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("index.snapshot")]);
    }

    #[test]
    fn a_damaged_truncated_or_foreign_file_is_refused_not_half_loaded() {
        let dir = tempfile::tempdir().expect("dir");
        let (path, _, _) = saved(dir.path());
        let good = std::fs::read(&path).expect("read");

        let mut flipped = good.clone();
        let middle = flipped.len() / 2;
        flipped[middle] ^= 0x5a;
        std::fs::write(&path, &flipped).expect("write");
        assert!(matches!(reload(&path), Err(PersistError::Format { .. })));

        std::fs::write(&path, &good[..good.len() - 100]).expect("write");
        assert!(matches!(reload(&path), Err(PersistError::Format { .. })));

        let mut other_version = good.clone();
        other_version[8] = 2;
        std::fs::write(&path, &other_version).expect("write");
        let err = reload(&path).expect_err("another version");
        assert!(err.to_string().contains("format version 2"), "{err}");

        std::fs::write(&path, b"not a snapshot at all").expect("write");
        assert!(matches!(reload(&path), Err(PersistError::Format { .. })));

        std::fs::write(&path, &good).expect("write");
        reload(&path).expect("the intact file still loads");
    }
}
