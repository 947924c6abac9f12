//! The API's single writer: audit events and API-key last-use times go through one task, so
//! requests never wait for SQLite's write lock and many events share one transaction.
//!
//! An audit event is queued before its token is handed out, and the queue is bounded: when
//! the writer falls behind, requests wait for room instead of events being dropped. The
//! writer retries a failed batch, and when the API stops it writes out everything queued
//! before `serve` returns.
// Limitation: events still queued when the process is killed (SIGKILL, power loss) are lost,
// about one commit period's worth (25 ms); awaiting each batch's commit before answering would
// close the gap at the cost of most of the throughput (docs/benchmarks.md).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::store::audit::{self, AuditEvent};
use crate::store::{Store, api_keys};

/// Entries waiting for the writer at most before senders wait too; also the most entries
/// one commit takes.
const QUEUE: usize = 16384;

/// Under load, one commit per this period: each commit rewrites every index page it touched,
/// so fewer, larger transactions cost far less than many small ones. An event arriving
/// after a quiet spell is committed at once.
const COMMIT_EVERY: Duration = Duration::from_millis(25);

/// Waits before retrying a batch the database refused.
const RETRIES: [Duration; 3] = [
    Duration::from_millis(100),
    Duration::from_millis(500),
    Duration::from_secs(2),
];

/// A key's `last_used_at` is written at most this often, keeping reads free of writes.
pub const KEY_USE_PERIOD: Duration = Duration::from_secs(60);

enum Entry {
    Audit(AuditEvent),
    KeyUsed { name: String, at: DateTime<Utc> },
}

/// A handle on the writer task. Cheap to clone; the task stops once every handle is dropped
/// and the queue is written out.
#[derive(Clone)]
pub struct Recorder {
    queue: mpsc::Sender<Entry>,
}

/// The writer is gone, so nothing can be audited.
#[derive(Debug)]
pub struct NotRecorded;

impl Recorder {
    /// Starts the writer over `store`. Await the handle after dropping every [`Recorder`] to
    /// be sure the queue was written out.
    pub fn start(store: Store) -> (Self, JoinHandle<()>) {
        let (queue, entries) = mpsc::channel(QUEUE);
        let task = tokio::spawn(write(store, entries));
        (Self { queue }, task)
    }

    /// Queues `event` for the next batch, waiting for room when the queue is full.
    ///
    /// # Errors
    /// [`NotRecorded`] when the writer has stopped.
    pub async fn audit(&self, event: AuditEvent) -> Result<(), NotRecorded> {
        self.queue
            .send(Entry::Audit(event))
            .await
            .map_err(|_| NotRecorded)
    }

    /// Queues a key's last-use time without waiting for it.
    fn key_used(&self, name: &str, at: DateTime<Utc>) {
        let entry = Entry::KeyUsed {
            name: name.to_owned(),
            at,
        };
        // A full queue means the writer is busy with audit rows; this update can wait for the
        // next period.
        let _ = self.queue.try_send(entry);
    }
}

/// Remembers when each key's use was last written, so it is written once per period.
#[derive(Default)]
pub struct KeyUse {
    written: Mutex<HashMap<String, Instant>>,
}

impl KeyUse {
    /// Notes a use of key `name`, queuing a write when the last one is older than
    /// [`KEY_USE_PERIOD`].
    pub fn note(&self, recorder: &Recorder, name: &str, at: DateTime<Utc>) {
        let now = Instant::now();
        let due = {
            let mut written = self.written.lock().expect("key-use map is never poisoned");
            match written.get_mut(name) {
                Some(last) if now.duration_since(*last) < KEY_USE_PERIOD => false,
                Some(last) => {
                    *last = now;
                    true
                }
                None => {
                    written.insert(name.to_owned(), now);
                    true
                }
            }
        };
        if due {
            recorder.key_used(name, at);
        }
    }
}

async fn write(store: Store, mut entries: mpsc::Receiver<Entry>) {
    let mut batch = Vec::new();
    let mut last_commit: Option<tokio::time::Instant> = None;
    while entries.recv_many(&mut batch, QUEUE).await > 0 {
        if let Some(last) = last_commit {
            tokio::time::sleep_until(last + COMMIT_EVERY).await;
        }
        while batch.len() < QUEUE {
            match entries.try_recv() {
                Ok(entry) => batch.push(entry),
                Err(_) => break,
            }
        }
        last_commit = Some(tokio::time::Instant::now());
        let mut events = Vec::with_capacity(batch.len());
        let mut used: HashMap<String, DateTime<Utc>> = HashMap::new();
        for entry in batch.drain(..) {
            match entry {
                Entry::Audit(event) => events.push(event),
                Entry::KeyUsed { name, at } => {
                    used.insert(name, at);
                }
            }
        }
        if !events.is_empty() {
            store_events(&store, &events).await;
        }
        for (name, at) in used {
            if let Err(err) = api_keys::touch(&store, &name, at).await {
                tracing::warn!(api_key = %name, error = %err, "could not record an API key's last use");
            }
        }
    }
}

/// Stores one batch, retrying while the database refuses it (locked, disk full).
async fn store_events(store: &Store, events: &[AuditEvent]) {
    let mut waits = RETRIES.iter();
    loop {
        let Err(err) = audit::record_batch(store, events).await else {
            return;
        };
        match waits.next() {
            Some(wait) => {
                tracing::warn!(error = %err, events = events.len(), "could not store audit events; retrying");
                tokio::time::sleep(*wait).await;
            }
            None => {
                tracing::error!(error = %err, events = events.len(), "audit events lost: the database refused them");
                return;
            }
        }
    }
}
