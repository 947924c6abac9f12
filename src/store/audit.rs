//! The `audit_events` table: who did what to whose link, kept for a configured number of days;
//! and `token_fetches`, each actor's latest successful token fetch per user, which is what
//! `/microsoft-status` shows and which stays cheap to keep however busy the API is.

use std::collections::HashMap;

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

/// The action the API records when it hands out (or refuses) a token.
pub const TOKEN_ISSUE: &str = "token.issue";

/// The outcome of an action that succeeded.
pub const OK: &str = "ok";

impl AuditEvent {
    /// Whether this is a token handed out, which `token_fetches` summarises.
    fn is_fetch(&self) -> bool {
        self.action == TOKEN_ISSUE && self.outcome == OK
    }
}

/// Appends an event.
///
/// # Errors
/// Fails on database errors.
pub async fn record(store: &Store, event: &AuditEvent) -> Result<(), StoreError> {
    record_batch(store, std::slice::from_ref(event)).await
}

/// Rows per `INSERT` of [`record_batch`]; 6 parameters each stays far below SQLite's limit.
const BATCH_ROWS: usize = 100;

/// Appends several events in one transaction, a hundred rows per statement, and moves each
/// actor's latest fetch forward in `token_fetches`: all of it lands, or none.
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
    // One row per (user, actor) however many fetches the batch holds, so a busy API rewrites
    // a few pages of a small table instead of one index page per token.
    let mut latest: HashMap<(&str, &str), i64> = HashMap::new();
    for event in events.iter().filter(|e| e.is_fetch()) {
        let at = latest
            .entry((&event.subject, &event.actor))
            .or_insert(i64::MIN);
        *at = (*at).max(to_millis(event.at));
    }
    let latest: Vec<_> = latest.into_iter().collect();
    for chunk in latest.chunks(BATCH_ROWS) {
        let mut upsert = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
            "INSERT INTO token_fetches (subject, actor, last_at) ",
        );
        upsert.push_values(chunk, |mut row, ((subject, actor), at)| {
            row.push_bind(*subject).push_bind(*actor).push_bind(*at);
        });
        upsert.push(
            " ON CONFLICT (subject, actor) DO UPDATE SET last_at = CASE \
             WHEN excluded.last_at > token_fetches.last_at THEN excluded.last_at \
             ELSE token_fetches.last_at END",
        );
        let full = chunk.len() == BATCH_ROWS;
        upsert.build().persistent(full).execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Events about `subject` since `since`, newest first. The table has no index by subject,
/// so this reads every event since `since`: it is for tests and investigations, not for a
/// path users hit (see [`fetches_for_subject`]).
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

/// Each actor that was handed a token for `subject` since `since`, with its latest fetch,
/// newest first.
///
/// # Errors
/// Fails on database errors.
pub async fn fetches_for_subject(
    store: &Store,
    subject: &str,
    since: DateTime<Utc>,
) -> Result<Vec<(String, DateTime<Utc>)>, StoreError> {
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT actor, last_at FROM token_fetches WHERE subject = ? AND last_at >= ? \
         ORDER BY last_at DESC, actor",
    )
    .bind(subject)
    .bind(to_millis(since))
    .fetch_all(store.pool())
    .await?;
    Ok(rows
        .into_iter()
        .map(|(actor, at)| (actor, from_millis(at)))
        .collect())
}

/// Deletes events, and latest fetches, older than `before`; returns how many events.
///
/// # Errors
/// Fails on database errors.
pub async fn prune(store: &Store, before: DateTime<Utc>) -> Result<u64, StoreError> {
    let before = to_millis(before);
    let mut tx = store.pool().begin().await?;
    let deleted = sqlx::query("DELETE FROM audit_events WHERE at < ?")
        .bind(before)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    sqlx::query("DELETE FROM token_fetches WHERE last_at < ?")
        .bind(before)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use chrono::TimeDelta;

    use super::*;
    use crate::store::Sealer;

    fn at(minutes: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000, 0).unwrap() + TimeDelta::minutes(minutes)
    }

    fn event(actor: &str, subject: &str, outcome: &str, minutes: i64) -> AuditEvent {
        AuditEvent {
            at: at(minutes),
            actor: actor.to_owned(),
            action: TOKEN_ISSUE.to_owned(),
            subject: subject.to_owned(),
            detail: None,
            outcome: outcome.to_owned(),
        }
    }

    async fn store() -> Store {
        Store::connect("sqlite::memory:", Sealer::new(&[1; 32]))
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn each_actor_keeps_its_latest_successful_fetch_per_subject() {
        let store = store().await;

        record_batch(
            &store,
            &[
                event("key:reporting", "42", OK, 5),
                event("key:reporting", "42", OK, 1),
                event("key:backup", "42", "relink_required", 9),
                event("key:backup", "42", OK, 3),
                event("key:reporting", "7", OK, 8),
            ],
        )
        .await
        .unwrap();
        // An older fetch stored later does not move the latest one back.
        record(&store, &event("key:reporting", "42", OK, 2))
            .await
            .unwrap();

        let fetches = fetches_for_subject(&store, "42", at(0)).await.unwrap();
        assert_eq!(
            fetches,
            vec![
                ("key:reporting".to_owned(), at(5)),
                ("key:backup".to_owned(), at(3)),
            ]
        );
        assert_eq!(
            fetches_for_subject(&store, "42", at(4)).await.unwrap(),
            vec![("key:reporting".to_owned(), at(5))]
        );
        assert_eq!(for_subject(&store, "42", at(0)).await.unwrap().len(), 5);
    }

    #[tokio::test]
    async fn other_actions_are_audited_but_are_not_fetches() {
        let store = store().await;
        let mut delete = event("discord:42", "42", OK, 1);
        delete.action = "link.delete".to_owned();

        record(&store, &delete).await.unwrap();

        assert!(
            fetches_for_subject(&store, "42", at(0))
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            for_subject(&store, "42", at(0)).await.unwrap(),
            vec![delete]
        );
    }

    #[tokio::test]
    async fn pruning_drops_old_events_and_old_fetches_only() {
        let store = store().await;
        record_batch(
            &store,
            &[
                event("key:old", "42", OK, 1),
                event("key:new", "42", OK, 10),
            ],
        )
        .await
        .unwrap();

        let deleted = prune(&store, at(5)).await.unwrap();

        assert_eq!(deleted, 1);
        assert_eq!(
            fetches_for_subject(&store, "42", at(0)).await.unwrap(),
            vec![("key:new".to_owned(), at(10))]
        );
    }

    #[tokio::test]
    async fn the_migration_summarises_fetches_already_audited() {
        let store = store().await;
        record(&store, &event("key:reporting", "42", OK, 1))
            .await
            .unwrap();
        // As a database made before `token_fetches` existed holds them: audit rows only.
        sqlx::query("DELETE FROM token_fetches")
            .execute(store.pool())
            .await
            .unwrap();

        let backfill = include_str!("../../migrations/20261204000001_summarise_token_fetches.sql");
        let insert = &backfill[backfill.find("INSERT").unwrap()..];
        sqlx::query(insert).execute(store.pool()).await.unwrap();

        assert_eq!(
            fetches_for_subject(&store, "42", at(0)).await.unwrap(),
            vec![("key:reporting".to_owned(), at(1))]
        );
    }
}
