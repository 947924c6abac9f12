//! The `audit_events` table: who did what to whose link, kept for a configured number of days.

use chrono::{DateTime, Utc};

use crate::store::{Store, StoreError, from_millis, to_millis};

/// One audit event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditEvent {
    /// When.
    pub at: DateTime<Utc>,
    /// API key name (`key:NAME`) or Discord user (`discord:ID`).
    pub actor: String,
    /// What was done (`token.issue`, `link.delete`, …).
    pub action: String,
    /// Whose link (the Discord user id).
    pub subject: String,
    /// Extra detail such as the scope; never a secret.
    pub detail: Option<String>,
    /// `ok` or an error code.
    pub outcome: String,
}

const INSERT: &str = "INSERT INTO audit_events (at, actor, action, subject, detail, outcome) \
    VALUES (?, ?, ?, ?, ?, ?)";

/// Appends an event.
///
/// # Errors
/// Fails on database errors.
pub async fn record(store: &Store, event: &AuditEvent) -> Result<(), StoreError> {
    sqlx::query(INSERT)
        .bind(to_millis(event.at))
        .bind(&event.actor)
        .bind(&event.action)
        .bind(&event.subject)
        .bind(&event.detail)
        .bind(&event.outcome)
        .execute(store.pool())
        .await?;
    Ok(())
}

/// Rows per `INSERT` of [`record_batch`]; 6 parameters each stays far below SQLite's limit.
const BATCH_ROWS: usize = 100;

/// Appends several events in one transaction, a hundred rows per statement: all of them land,
/// or none.
///
/// # Errors
/// Fails on database errors.
pub async fn record_batch(store: &Store, events: &[AuditEvent]) -> Result<(), StoreError> {
    let mut tx = store.pool().begin().await?;
    for chunk in events.chunks(BATCH_ROWS) {
        let mut insert = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
            "INSERT INTO audit_events (at, actor, action, subject, detail, outcome) ",
        );
        insert.push_values(chunk, |mut row, event| {
            row.push_bind(to_millis(event.at))
                .push_bind(&event.actor)
                .push_bind(&event.action)
                .push_bind(&event.subject)
                .push_bind(&event.detail)
                .push_bind(&event.outcome);
        });
        // Full chunks share one cached statement; each shorter length would be a statement
        // of its own, crowding the connection's statement cache.
        let full = chunk.len() == BATCH_ROWS;
        insert.build().persistent(full).execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Events about `subject` since `since`, newest first.
///
/// # Errors
/// Fails on database errors.
pub async fn for_subject(
    store: &Store,
    subject: &str,
    since: DateTime<Utc>,
) -> Result<Vec<AuditEvent>, StoreError> {
    let rows: Vec<(i64, String, String, String, Option<String>, String)> = sqlx::query_as(
        "SELECT at, actor, action, subject, detail, outcome FROM audit_events \
         WHERE subject = ? AND at >= ? ORDER BY at DESC, id DESC",
    )
    .bind(subject)
    .bind(to_millis(since))
    .fetch_all(store.pool())
    .await?;
    Ok(rows
        .into_iter()
        .map(|(at, actor, action, subject, detail, outcome)| AuditEvent {
            at: from_millis(at),
            actor,
            action,
            subject,
            detail,
            outcome,
        })
        .collect())
}

/// Deletes events older than `before`; returns how many.
///
/// # Errors
/// Fails on database errors.
pub async fn prune(store: &Store, before: DateTime<Utc>) -> Result<u64, StoreError> {
    Ok(sqlx::query("DELETE FROM audit_events WHERE at < ?")
        .bind(to_millis(before))
        .execute(store.pool())
        .await?
        .rows_affected())
}
