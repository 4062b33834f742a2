//! The embedded feature log: a directory of append-only segment files, so `fstore dev`
//! keeps its log across restarts (or, without a directory, the same log in memory).
//!
//! A segment is named by its first sequence (`00000000000000000001.seg`) and holds
//! frames `[len u32 LE][check u32 LE][LogEvent]`, where `check` is the first four bytes
//! of the payload's BLAKE3 hash. A frame is written with one `write` before the append
//! returns (the OS has it; `dev` does not fsync). On open, the last segment is read
//! through and a torn last frame (a crash mid-write) is cut off. Retention drops whole
//! segments, oldest first, past the age or size bound. Readers read the files (or the
//! memory) up to the last record when they started, then follow a broadcast of appends;
//! a reader that falls behind the broadcast reads the files again from where it was.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use fstore_proto::api::{LogEvent, LogRecord};
use futures::StreamExt;
use prost::Message;
use tokio::sync::broadcast;

use super::store::lock;
use crate::Error;
use crate::log::{FeatureLog, LogOptions, LogQuery, LogStream, Start};
use crate::time::now_ms;

/// Frames a read hands over per step.
const CHUNK: usize = 512;
/// Appends a slow follower may fall behind before it re-reads the files.
const BROADCAST: usize = 4096;
const FRAME_HEADER: usize = 8;

/// One segment file.
#[derive(Debug, Clone)]
struct Segment {
    first_seq: u64,
    path: PathBuf,
    bytes: u64,
    /// The newest record time in it, Unix ms.
    last_ms: i64,
}

enum Records {
    Memory(VecDeque<(Arc<LogEvent>, usize)>),
    Files {
        dir: PathBuf,
        segments: Vec<Segment>,
        writer: Option<File>,
    },
}

struct State {
    records: Records,
    /// The sequence the next append gets.
    next_seq: u64,
    /// The oldest sequence kept.
    first_seq: u64,
    bytes: u64,
}

/// The embedded log. Cheap to share behind an `Arc`.
pub struct EmbeddedLog {
    state: Arc<Mutex<State>>,
    events: broadcast::Sender<Arc<LogEvent>>,
    seen: moka::sync::Cache<String, ()>,
    options: LogOptions,
}

fn storage(what: &str, path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Storage(format!("{what} {}: {e}", path.display()))
}

fn check(payload: &[u8]) -> u32 {
    let h = blake3::hash(payload);
    let b = h.as_bytes();
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

/// Reads the next whole, intact frame; None at the end or at a torn or corrupt frame.
fn read_frame(r: &mut impl Read) -> Option<(LogEvent, usize)> {
    let mut header = [0u8; FRAME_HEADER];
    r.read_exact(&mut header).ok()?;
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let sum = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload).ok()?;
    if check(&payload) != sum {
        return None;
    }
    let event = LogEvent::decode(payload.as_slice()).ok()?;
    Some((event, FRAME_HEADER + len))
}

fn segment_name(first_seq: u64) -> String {
    format!("{first_seq:020}.seg")
}

impl EmbeddedLog {
    /// Opens the log in `options.dir` (created if missing), or in memory without one.
    pub fn open(options: LogOptions, duplicate_window: Duration) -> Result<Self, Error> {
        let state = match &options.dir {
            None => State {
                records: Records::Memory(VecDeque::new()),
                next_seq: 1,
                first_seq: 1,
                bytes: 0,
            },
            Some(dir) => open_dir(dir)?,
        };
        let log = EmbeddedLog {
            state: Arc::new(Mutex::new(state)),
            events: broadcast::channel(BROADCAST).0,
            seen: moka::sync::Cache::builder()
                .max_capacity(1_000_000)
                .time_to_live(duplicate_window)
                .build(),
            options,
        };
        log.retain(&mut lock(&log.state));
        Ok(log)
    }

    /// Drops the oldest segments (never the one being written) past the age or size
    /// bound; in memory, the oldest records.
    fn retain(&self, st: &mut State) {
        let oldest_ms = now_ms().saturating_sub(self.options.max_age.as_millis() as i64);
        let age_bound = !self.options.max_age.is_zero();
        let max_bytes = self.options.max_bytes;
        let too_old = |ms: i64| age_bound && ms < oldest_ms;
        match &mut st.records {
            Records::Memory(q) => {
                while let Some((e, n)) = q.front() {
                    let ms = e.record.as_ref().map_or(0, |r| r.computed_at_ms);
                    if !(too_old(ms) || st.bytes > max_bytes) {
                        break;
                    }
                    st.bytes -= *n as u64;
                    st.first_seq = e.sequence + 1;
                    q.pop_front();
                }
            }
            Records::Files { segments, .. } => {
                while segments.len() > 1 {
                    let s = &segments[0];
                    if !(too_old(s.last_ms) || st.bytes > max_bytes) {
                        break;
                    }
                    if let Err(e) = fs::remove_file(&s.path) {
                        tracing::warn!(path = %s.path.display(), error = %e, "could not drop an old log segment");
                        break;
                    }
                    st.bytes -= s.bytes;
                    segments.remove(0);
                    st.first_seq = segments[0].first_seq;
                }
            }
        }
    }

    fn write(&self, st: &mut State, event: Arc<LogEvent>) -> Result<(), Error> {
        let payload = event.encode_to_vec();
        let at = event.record.as_ref().map_or(0, |r| r.computed_at_ms);
        match &mut st.records {
            Records::Memory(q) => {
                st.bytes += payload.len() as u64;
                q.push_back((event, payload.len()));
            }
            Records::Files {
                dir,
                segments,
                writer,
            } => {
                let full = segments
                    .last()
                    .is_none_or(|s| s.bytes >= self.options.segment_bytes);
                if full || writer.is_none() {
                    let first = if full {
                        event.sequence
                    } else {
                        segments.last().map_or(event.sequence, |s| s.first_seq)
                    };
                    let path = dir.join(segment_name(first));
                    let file = OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(&path)
                        .map_err(|e| storage("cannot open log segment", &path, e))?;
                    if full {
                        segments.push(Segment {
                            first_seq: first,
                            path,
                            bytes: 0,
                            last_ms: at,
                        });
                    }
                    *writer = Some(file);
                }
                let mut frame = Vec::with_capacity(FRAME_HEADER + payload.len());
                frame.extend_from_slice(&(payload.len() as u32).to_le_bytes());
                frame.extend_from_slice(&check(&payload).to_le_bytes());
                frame.extend_from_slice(&payload);
                let (Some(file), Some(seg)) = (writer.as_mut(), segments.last_mut()) else {
                    return Err(Error::Storage("no log segment open".into()));
                };
                file.write_all(&frame)
                    .map_err(|e| storage("cannot append to log segment", &seg.path, e))?;
                seg.bytes += frame.len() as u64;
                seg.last_ms = seg.last_ms.max(at);
                st.bytes += frame.len() as u64;
            }
        }
        Ok(())
    }

    /// Records with sequences in `from..=to`, at most [`CHUNK`], from `cursor`.
    fn read_chunk(
        state: &Mutex<State>,
        cursor: &mut Cursor,
        to: u64,
    ) -> Result<Vec<Arc<LogEvent>>, Error> {
        let mut out = Vec::new();
        let files = {
            let st = lock(state);
            cursor.next = cursor.next.max(st.first_seq);
            match &st.records {
                Records::Memory(q) => {
                    let Some(front) = q.front() else {
                        return Ok(out);
                    };
                    let skip = cursor.next.saturating_sub(front.0.sequence) as usize;
                    for (e, _) in q.iter().skip(skip).take(CHUNK) {
                        if e.sequence > to {
                            break;
                        }
                        cursor.next = e.sequence + 1;
                        out.push(e.clone());
                    }
                    return Ok(out);
                }
                Records::Files { segments, .. } => segments.clone(),
            }
        };
        while out.len() < CHUNK && cursor.next <= to {
            if cursor.reader.is_none() {
                // The segment holding `cursor.next`: the last one starting at or before it.
                let Some(seg) = files.iter().rev().find(|s| s.first_seq <= cursor.next) else {
                    break;
                };
                let file = match File::open(&seg.path) {
                    Ok(f) => f,
                    // Dropped by retention meanwhile: go on from the next one.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        match files.iter().find(|s| s.first_seq > cursor.next) {
                            Some(next) => {
                                cursor.next = next.first_seq;
                                continue;
                            }
                            None => break,
                        }
                    }
                    Err(e) => return Err(storage("cannot read log segment", &seg.path, e)),
                };
                cursor.reader = Some((seg.first_seq, BufReader::new(file)));
            }
            let Some((_, reader)) = cursor.reader.as_mut() else {
                break;
            };
            match read_frame(reader) {
                Some((event, _)) if event.sequence < cursor.next => {}
                Some((event, _)) => {
                    if event.sequence > to {
                        // Read past the end: the next read opens the segment again.
                        cursor.reader = None;
                        break;
                    }
                    cursor.next = event.sequence + 1;
                    out.push(Arc::new(event));
                }
                // The end of this segment: the next one starts at `cursor.next`.
                None => {
                    let at = cursor.reader.as_ref().map_or(0, |r| r.0);
                    cursor.reader = None;
                    if !files
                        .iter()
                        .any(|s| s.first_seq > at && s.first_seq <= cursor.next)
                    {
                        break;
                    }
                }
            }
        }
        Ok(out)
    }

    /// The first sequence a read of `start` asks for, checked against the log.
    fn first_wanted(&self, start: Start) -> Result<(u64, u64), Error> {
        let st = lock(&self.state);
        let last = st.next_seq - 1;
        let from = match start {
            Start::Now => st.next_seq,
            Start::After(n) if n > last => {
                return Err(Error::Cursor(format!(
                    "cursor {n} is ahead of the log, whose last sequence is {last}; resume with a sequence the log gave you"
                )));
            }
            Start::After(n) if n != 0 && n + 1 < st.first_seq => {
                return Err(Error::Cursor(format!(
                    "events after {n} are gone: the log keeps sequences from {} on (retention by age and size); resume from 0 to read from the oldest kept",
                    st.first_seq
                )));
            }
            Start::After(n) => n + 1,
            Start::Time(ms) => match &st.records {
                Records::Files { segments, .. } => segments
                    .iter()
                    .find(|s| s.last_ms >= ms)
                    .map_or(st.next_seq, |s| s.first_seq),
                Records::Memory(_) => st.first_seq,
            },
        };
        Ok((from.max(st.first_seq), last))
    }
}

/// Where a reader is in the files.
struct Cursor {
    next: u64,
    reader: Option<(u64, BufReader<File>)>,
}

fn open_dir(dir: &Path) -> Result<State, Error> {
    fs::create_dir_all(dir).map_err(|e| storage("cannot create log directory", dir, e))?;
    let mut segments = Vec::new();
    let entries = fs::read_dir(dir).map_err(|e| storage("cannot list log directory", dir, e))?;
    for entry in entries.flatten() {
        let path = entry.path();
        let Some(first) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".seg"))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        let meta = entry
            .metadata()
            .map_err(|e| storage("cannot read", &path, e))?;
        let last_ms = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_millis() as i64);
        segments.push(Segment {
            first_seq: first,
            path,
            bytes: meta.len(),
            last_ms,
        });
    }
    segments.sort_by_key(|s| s.first_seq);
    let mut next_seq = 1;
    if let Some(last) = segments.last_mut() {
        // Read the last segment through: its last sequence, and a torn tail to cut.
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&last.path)
            .map_err(|e| storage("cannot open log segment", &last.path, e))?;
        let mut good = 0u64;
        next_seq = last.first_seq;
        {
            let mut r = BufReader::new(&mut file);
            while let Some((event, n)) = read_frame(&mut r) {
                good += n as u64;
                next_seq = event.sequence + 1;
                if let Some(rec) = &event.record {
                    last.last_ms = rec.computed_at_ms;
                }
            }
        }
        if good < last.bytes {
            tracing::warn!(path = %last.path.display(), kept = good, had = last.bytes, "cutting a torn record off the log's last segment");
            file.set_len(good)
                .and_then(|()| file.seek(SeekFrom::End(0)).map(|_| ()))
                .map_err(|e| storage("cannot repair log segment", &last.path, e))?;
            last.bytes = good;
        }
    }
    let first_seq = segments.first().map_or(next_seq, |s| s.first_seq);
    let bytes = segments.iter().map(|s| s.bytes).sum();
    Ok(State {
        records: Records::Files {
            dir: dir.to_path_buf(),
            segments,
            writer: None,
        },
        next_seq,
        first_seq,
        bytes,
    })
}

#[async_trait]
impl FeatureLog for EmbeddedLog {
    async fn append(&self, id: &str, record: LogRecord) -> Result<u64, Error> {
        if self.seen.contains_key(id) {
            return Ok(0);
        }
        let mut st = lock(&self.state);
        let seq = st.next_seq;
        let event = Arc::new(LogEvent {
            sequence: seq,
            record: Some(record),
        });
        self.write(&mut st, event.clone())?;
        st.next_seq += 1;
        if matches!(&st.records, Records::Files { segments, .. } if segments.last().is_some_and(|s| s.first_seq == seq))
            || matches!(st.records, Records::Memory(_))
        {
            self.retain(&mut st);
        }
        self.seen.insert(id.to_string(), ());
        // Under the lock, so followers receive appends in sequence order.
        let _ = self.events.send(event);
        Ok(seq)
    }

    async fn read(&self, query: LogQuery) -> Result<LogStream, Error> {
        // Subscribe before reading, so nothing appended meanwhile is missed.
        let live = self.events.subscribe();
        let (from, last) = self.first_wanted(query.start)?;
        let reader = Reader {
            state: self.state.clone(),
            cursor: Cursor {
                next: from,
                reader: None,
            },
            end: last,
            live: query.follow.then_some(live),
            query,
            buffer: VecDeque::new(),
        };
        Ok(futures::stream::unfold(reader, |mut r| async move {
            r.next().await.map(|item| (item, r))
        })
        .boxed())
    }
}

/// One read: the files (or memory) up to `end`, then, when following, the broadcast.
struct Reader {
    state: Arc<Mutex<State>>,
    cursor: Cursor,
    end: u64,
    live: Option<broadcast::Receiver<Arc<LogEvent>>>,
    query: LogQuery,
    buffer: VecDeque<Arc<LogEvent>>,
}

impl Reader {
    async fn next(&mut self) -> Option<Result<LogEvent, Error>> {
        loop {
            while let Some(e) = self.buffer.pop_front() {
                if e.record.as_ref().is_some_and(|r| self.query.matches(r)) {
                    return Some(Ok(Arc::unwrap_or_clone(e)));
                }
            }
            if self.cursor.next <= self.end {
                let state = self.state.clone();
                let mut cursor = std::mem::replace(
                    &mut self.cursor,
                    Cursor {
                        next: 0,
                        reader: None,
                    },
                );
                let end = self.end;
                let read = tokio::task::spawn_blocking(move || {
                    let chunk = EmbeddedLog::read_chunk(&state, &mut cursor, end);
                    (chunk, cursor)
                })
                .await;
                let (chunk, cursor) = match read {
                    Ok(r) => r,
                    Err(e) => return Some(Err(Error::Storage(format!("a log read failed: {e}")))),
                };
                self.cursor = cursor;
                match chunk {
                    Ok(c) if c.is_empty() => self.cursor.next = self.end + 1,
                    Ok(c) => self.buffer.extend(c),
                    Err(e) => return Some(Err(e)),
                }
                continue;
            }
            let live = self.live.as_mut()?;
            match live.recv().await {
                Ok(e) if e.sequence < self.cursor.next => {}
                Ok(e) => {
                    self.cursor.next = e.sequence + 1;
                    self.end = e.sequence;
                    self.buffer.push_back(e);
                }
                // Fell behind the broadcast: read the files up to the end as it is now.
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    self.end = lock(&self.state).next_seq - 1;
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use fstore_proto::api::log_record::Kind;

    use super::*;

    fn options(dir: Option<PathBuf>, segment_bytes: u64) -> LogOptions {
        LogOptions {
            dir,
            max_age: Duration::ZERO,
            max_bytes: u64::MAX,
            segment_bytes,
        }
    }

    fn record(entity: &str, at: i64) -> LogRecord {
        let mut r = LogRecord {
            tenant: "t".into(),
            entity_id: entity.into(),
            feature: "f".into(),
            version: 1,
            computed_at_ms: at,
            ..Default::default()
        };
        r.set_kind(Kind::Value);
        r
    }

    fn query(start: Start, follow: bool) -> LogQuery {
        LogQuery {
            tenant: "t".into(),
            features: Vec::new(),
            entities: HashSet::new(),
            include_inputs: false,
            start,
            follow,
            until_ms: 0,
        }
    }

    async fn all(log: &EmbeddedLog, start: Start) -> Vec<u64> {
        let s = log.read(query(start, false)).await.expect("read");
        s.map(|e| e.expect("event").sequence).collect().await
    }

    #[tokio::test]
    async fn appends_survive_a_reopen_across_segments_and_a_torn_tail() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().to_path_buf();
        {
            let log = EmbeddedLog::open(options(Some(path.clone()), 200), Duration::from_secs(60))
                .expect("open");
            for i in 0..20 {
                assert_eq!(
                    log.append(&format!("id{i}"), record("e", i))
                        .await
                        .expect("append"),
                    i as u64 + 1
                );
            }
            assert_eq!(
                log.append("id3", record("e", 3)).await.expect("dup"),
                0,
                "an id seen before appends nothing"
            );
        }
        let segments = fs::read_dir(&path).expect("ls").count();
        assert!(segments > 2, "small segments rotate: {segments}");
        // A crash mid-write leaves half a frame at the end of the last segment.
        let mut names: Vec<_> = fs::read_dir(&path)
            .expect("ls")
            .flatten()
            .map(|e| e.path())
            .collect();
        names.sort();
        let last = names.last().expect("a segment").clone();
        OpenOptions::new()
            .append(true)
            .open(&last)
            .expect("open")
            .write_all(&[9, 0, 0, 0, 1])
            .expect("write");
        let log =
            EmbeddedLog::open(options(Some(path), 200), Duration::from_secs(60)).expect("reopen");
        assert_eq!(
            all(&log, Start::After(0)).await,
            (1..=20).collect::<Vec<_>>()
        );
        assert_eq!(
            log.append("next", record("e", 99)).await.expect("append"),
            21
        );
        assert_eq!(all(&log, Start::After(18)).await, vec![19, 20, 21]);
    }

    #[tokio::test]
    async fn cursors_ahead_of_the_log_or_behind_retention_are_refused() {
        let log = EmbeddedLog::open(
            LogOptions {
                max_bytes: 300,
                ..options(None, 0)
            },
            Duration::from_secs(60),
        )
        .expect("open");
        for i in 0..40 {
            log.append(&format!("{i}"), record("e", i))
                .await
                .expect("append");
        }
        let err = log
            .read(query(Start::After(41), false))
            .await
            .err()
            .expect("ahead");
        assert!(
            err.to_string()
                .contains("ahead of the log, whose last sequence is 40"),
            "{err}"
        );
        let err = log
            .read(query(Start::After(1), false))
            .await
            .err()
            .expect("behind");
        assert!(err.to_string().contains("are gone"), "{err}");
        let kept = all(&log, Start::After(0)).await;
        assert!(kept.len() < 40 && kept.last() == Some(&40), "{kept:?}");
    }

    #[tokio::test]
    async fn a_follower_gets_what_was_there_then_every_append_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = Arc::new(
            EmbeddedLog::open(
                options(Some(dir.path().into()), 4096),
                Duration::from_secs(60),
            )
            .expect("open"),
        );
        for i in 0..5 {
            log.append(&format!("a{i}"), record("e", i))
                .await
                .expect("append");
        }
        let mut s = log.read(query(Start::After(2), true)).await.expect("read");
        let writer = log.clone();
        let appends = tokio::spawn(async move {
            for i in 0..5000 {
                writer
                    .append(&format!("b{i}"), record("e", i))
                    .await
                    .expect("append");
            }
        });
        let mut seen = Vec::new();
        while seen.len() < 5003 {
            let e = tokio::time::timeout(Duration::from_secs(10), s.next())
                .await
                .expect("in time")
                .expect("open")
                .expect("event");
            seen.push(e.sequence);
        }
        appends.await.expect("appends");
        assert_eq!(
            seen,
            (3..=5005).collect::<Vec<_>>(),
            "in order, none missed, none twice"
        );
    }

    #[tokio::test]
    async fn reads_by_time_skip_older_segments_and_records() {
        let log = EmbeddedLog::open(options(None, 0), Duration::from_secs(60)).expect("open");
        for i in 0..10 {
            log.append(&format!("{i}"), record("e", i * 100))
                .await
                .expect("append");
        }
        assert_eq!(all(&log, Start::Time(500)).await, vec![6, 7, 8, 9, 10]);
        assert!(all(&log, Start::Now).await.is_empty());
    }
}
