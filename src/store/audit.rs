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

/// Appends an event.
///
/// # Errors
/// Fails on database errors.
pub async fn record(store: &Store, event: &AuditEvent) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO audit_events (at, actor, action, subject, detail, outcome) VALUES (?, ?, ?, ?, ?, ?)")
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
