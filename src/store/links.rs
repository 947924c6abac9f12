//! The `links` table (one row per linked Discord user) and `scoped_tokens` (access tokens
//! minted for other resources from a link's refresh token).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use sqlx::{FromRow, SqliteConnection};

use crate::domain::{Account, DiscordUserId, LinkState, Secret};
use crate::store::{Store, StoreError, from_millis, to_millis};

/// A link without its secrets: what status pages and the API show.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkStatus {
    /// The Discord user.
    pub user: DiscordUserId,
    /// The Microsoft account.
    pub account: Account,
    /// Scopes granted to the main access token, space-separated as Microsoft sent them.
    pub scopes: String,
    /// `Active` or `RelinkRequired`.
    pub state: LinkState,
    /// When the main access token expires.
    pub access_expires_at: DateTime<Utc>,
    /// When the account was (last) linked.
    pub linked_at: DateTime<Utc>,
    /// When the tokens were last refreshed (the link time if never).
    pub last_refresh_at: DateTime<Utc>,
    /// When a token was last handed out.
    pub last_used_at: Option<DateTime<Utc>>,
    /// When the background worker should next refresh the link.
    pub next_refresh_at: DateTime<Utc>,
    /// Transient refresh failures since the last success.
    pub transient_failures: i64,
    /// The last refresh error code (`invalid_grant`, `AADSTS50173`, `http_503`, …).
    pub last_error: Option<String>,
    /// When the user was told to re-link, if they were.
    pub alerted_at: Option<DateTime<Utc>>,
}

/// A link with its opened tokens.
#[derive(Clone, Debug)]
pub struct Link {
    /// Everything but the secrets.
    pub status: LinkStatus,
    /// The main access token.
    pub access_token: Secret,
    /// The latest refresh token.
    pub refresh_token: Secret,
}

/// What a finished device flow writes.
#[derive(Clone, Debug)]
pub struct NewLink {
    /// The Discord user.
    pub user: DiscordUserId,
    /// The Microsoft account.
    pub account: Account,
    /// Granted scopes.
    pub scopes: String,
    /// Access token.
    pub access_token: Secret,
    /// Its expiry.
    pub access_expires_at: DateTime<Utc>,
    /// Refresh token.
    pub refresh_token: Secret,
    /// Now.
    pub linked_at: DateTime<Utc>,
    /// When the background worker should first refresh it.
    pub next_refresh_at: DateTime<Utc>,
}

/// An access token for another resource.
#[derive(Clone, Debug)]
pub struct ScopedToken {
    /// The token.
    pub access_token: Secret,
    /// Scopes Microsoft granted it.
    pub scope: String,
    /// Its expiry.
    pub expires_at: DateTime<Utc>,
}

/// How long an unchanged link stays cached; this only bounds memory, since every write
/// through this module drops the user's entry.
const CACHE_TTL: Duration = Duration::from_secs(300);

/// Links read recently, so hot token reads skip the database. Every write below drops the
/// user's entry, and only this process writes links.
// Limitation: the cache is per process; several instances sharing one database (Postgres
// scale-out) would serve a link another instance changed; notify instances of writes
// (Postgres LISTEN/NOTIFY) before running more than one.
#[derive(Debug, Default)]
pub struct LinkCache {
    inner: Mutex<CacheInner>,
}

#[derive(Debug, Default)]
struct CacheInner {
    /// Bumped by every write, so a read that overlapped one does not cache what it read.
    writes: u64,
    entries: HashMap<DiscordUserId, (Instant, Arc<Link>)>,
    /// Links written by [`save_new`] inside a caller's transaction, by their `linked_at`
    /// (millis): until a read sees that row, what it reads may predate the commit.
    uncommitted: HashMap<DiscordUserId, i64>,
    /// Entry count at which expired entries are swept next.
    sweep_at: usize,
}

impl LinkCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, CacheInner> {
        self.inner.lock().expect("link cache is never poisoned")
    }

    /// The cached link, or the write count to hand to [`LinkCache::fill`] after reading it.
    fn get(&self, user: DiscordUserId) -> Result<Arc<Link>, u64> {
        let inner = self.lock();
        match inner.entries.get(&user) {
            Some((read_at, link)) if read_at.elapsed() < CACHE_TTL => Ok(Arc::clone(link)),
            _ => Err(inner.writes),
        }
    }

    /// Caches `link`, unless a write happened since `writes` was taken or the row may still
    /// change when a caller's transaction commits.
    fn fill(&self, user: DiscordUserId, link: &Arc<Link>, writes: u64) {
        let mut inner = self.lock();
        if inner.writes != writes {
            return;
        }
        if let Some(linked_at) = inner.uncommitted.get(&user) {
            if *linked_at != to_millis(link.status.linked_at) {
                return;
            }
            inner.uncommitted.remove(&user);
        }
        if inner.entries.len() >= inner.sweep_at {
            inner
                .entries
                .retain(|_, (read_at, _)| read_at.elapsed() < CACHE_TTL);
            inner.sweep_at = (inner.entries.len() * 2).max(1024);
        }
        inner
            .entries
            .insert(user, (Instant::now(), Arc::clone(link)));
    }

    /// Drops `user`'s entry after a write to their row. A write on the pool finishes only
    /// after any transaction holding SQLite's write lock ended, so it also settles a
    /// [`save_new`] that was waiting for its commit.
    fn forget(&self, user: DiscordUserId) {
        let mut inner = self.lock();
        inner.writes += 1;
        inner.entries.remove(&user);
        inner.uncommitted.remove(&user);
    }

    /// Drops `user`'s entry for a write that commits later, with its caller's transaction.
    fn forget_uncommitted(&self, user: DiscordUserId, linked_at: DateTime<Utc>) {
        let mut inner = self.lock();
        inner.writes += 1;
        inner.entries.remove(&user);
        inner.uncommitted.insert(user, to_millis(linked_at));
    }
}

#[derive(FromRow)]
struct LinkRow {
    discord_user_id: i64,
    tenant_id: String,
    object_id: String,
    username: String,
    display_name: String,
    scopes: String,
    access_token: String,
    access_expires_at: i64,
    refresh_token: String,
    state: String,
    linked_at: i64,
    last_refresh_at: i64,
    last_used_at: Option<i64>,
    next_refresh_at: i64,
    transient_failures: i64,
    last_error: Option<String>,
    alerted_at: Option<i64>,
}

const COLUMNS: &str = "discord_user_id, tenant_id, object_id, username, display_name, scopes, \
    access_token, access_expires_at, refresh_token, state, linked_at, last_refresh_at, \
    last_used_at, next_refresh_at, transient_failures, last_error, alerted_at";

fn access_context(user: DiscordUserId) -> String {
    format!("links:{user}:access_token")
}

fn refresh_context(user: DiscordUserId) -> String {
    format!("links:{user}:refresh_token")
}

fn scoped_context(user: DiscordUserId, scope_key: &str) -> String {
    format!("scoped_tokens:{user}:{scope_key}")
}

fn db_id(user: DiscordUserId) -> Result<i64, StoreError> {
    user.to_db().map_err(|_| StoreError::Corrupt {
        table: "links",
        reason: "user id out of range".into(),
    })
}

impl LinkRow {
    fn status(&self) -> Result<LinkStatus, StoreError> {
        let corrupt = |reason: &str| StoreError::Corrupt {
            table: "links",
            reason: reason.into(),
        };
        Ok(LinkStatus {
            user: DiscordUserId::from_db(self.discord_user_id)
                .map_err(|_| corrupt("negative user id"))?,
            account: Account {
                tenant_id: self.tenant_id.clone(),
                object_id: self.object_id.clone(),
                username: self.username.clone(),
                display_name: self.display_name.clone(),
            },
            scopes: self.scopes.clone(),
            state: LinkState::parse(&self.state).ok_or_else(|| corrupt("unknown state"))?,
            access_expires_at: from_millis(self.access_expires_at),
            linked_at: from_millis(self.linked_at),
            last_refresh_at: from_millis(self.last_refresh_at),
            last_used_at: self.last_used_at.map(from_millis),
            next_refresh_at: from_millis(self.next_refresh_at),
            transient_failures: self.transient_failures,
            last_error: self.last_error.clone(),
            alerted_at: self.alerted_at.map(from_millis),
        })
    }
}

/// Writes a freshly linked account, replacing any earlier link of the user and clearing its
/// failure history. Runs on `conn` so it can share the flow's transaction.
///
/// # Errors
/// Fails on database or sealing errors.
pub async fn save_new(
    conn: &mut SqliteConnection,
    store: &Store,
    link: &NewLink,
) -> Result<(), StoreError> {
    let id = db_id(link.user)?;
    let access = store
        .sealer()
        .seal(&link.access_token, &access_context(link.user))?;
    let refresh = store
        .sealer()
        .seal(&link.refresh_token, &refresh_context(link.user))?;
    sqlx::query("DELETE FROM scoped_tokens WHERE discord_user_id = ?")
        .bind(id)
        .execute(&mut *conn)
        .await?;
    sqlx::query(
        "INSERT INTO links (discord_user_id, tenant_id, object_id, username, display_name, scopes, \
         access_token, access_expires_at, refresh_token, state, linked_at, last_refresh_at, \
         next_refresh_at, transient_failures) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'active', ?, ?, ?, 0) \
         ON CONFLICT (discord_user_id) DO UPDATE SET tenant_id = excluded.tenant_id, \
         object_id = excluded.object_id, username = excluded.username, \
         display_name = excluded.display_name, scopes = excluded.scopes, \
         access_token = excluded.access_token, access_expires_at = excluded.access_expires_at, \
         refresh_token = excluded.refresh_token, state = 'active', linked_at = excluded.linked_at, \
         last_refresh_at = excluded.last_refresh_at, next_refresh_at = excluded.next_refresh_at, \
         transient_failures = 0, last_error = NULL, alerted_at = NULL",
    )
    .bind(id)
    .bind(&link.account.tenant_id)
    .bind(&link.account.object_id)
    .bind(&link.account.username)
    .bind(&link.account.display_name)
    .bind(&link.scopes)
    .bind(access)
    .bind(to_millis(link.access_expires_at))
    .bind(refresh)
    .bind(to_millis(link.linked_at))
    .bind(to_millis(link.linked_at))
    .bind(to_millis(link.next_refresh_at))
    .execute(&mut *conn)
    .await?;
    store
        .link_cache()
        .forget_uncommitted(link.user, link.linked_at);
    Ok(())
}

/// The user's link with its tokens opened.
///
/// # Errors
/// Fails on database errors, or when a token cannot be opened (wrong key, tampering).
pub async fn find(store: &Store, user: DiscordUserId) -> Result<Option<Arc<Link>>, StoreError> {
    let writes = match store.link_cache().get(user) {
        Ok(link) => return Ok(Some(link)),
        Err(writes) => writes,
    };
    let row: Option<LinkRow> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM links WHERE discord_user_id = ?"
    ))
    .bind(db_id(user)?)
    .fetch_optional(store.pool())
    .await?;
    let Some(row) = row else { return Ok(None) };
    let status = row.status()?;
    let link = Arc::new(Link {
        access_token: store
            .sealer()
            .open(&row.access_token, &access_context(user))?,
        refresh_token: store
            .sealer()
            .open(&row.refresh_token, &refresh_context(user))?,
        status,
    });
    store.link_cache().fill(user, &link, writes);
    Ok(Some(link))
}

/// The user's link without its secrets.
///
/// # Errors
/// Fails on database errors.
pub async fn status(store: &Store, user: DiscordUserId) -> Result<Option<LinkStatus>, StoreError> {
    let row: Option<LinkRow> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM links WHERE discord_user_id = ?"
    ))
    .bind(db_id(user)?)
    .fetch_optional(store.pool())
    .await?;
    row.map(|r| r.status()).transpose()
}

/// Links in user-id order after `after`, optionally only those in `state`.
///
/// # Errors
/// Fails on database errors.
pub async fn list(
    store: &Store,
    state: Option<LinkState>,
    after: Option<DiscordUserId>,
    limit: u32,
) -> Result<Vec<LinkStatus>, StoreError> {
    let after = after.map(db_id).transpose()?.unwrap_or(0);
    let rows: Vec<LinkRow> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM links WHERE discord_user_id > ? AND (? IS NULL OR state = ?) \
         ORDER BY discord_user_id LIMIT ?"
    ))
    .bind(after)
    .bind(state.map(LinkState::as_str))
    .bind(state.map(LinkState::as_str))
    .bind(i64::from(limit))
    .fetch_all(store.pool())
    .await?;
    rows.iter().map(LinkRow::status).collect()
}

/// What a successful refresh writes.
#[derive(Clone, Debug)]
pub struct Refreshed {
    /// New access token.
    pub access_token: Secret,
    /// Its expiry.
    pub access_expires_at: DateTime<Utc>,
    /// The rotated refresh token, or `None` to keep the stored one.
    pub refresh_token: Option<Secret>,
    /// Granted scopes.
    pub scopes: String,
    /// Now.
    pub refreshed_at: DateTime<Utc>,
    /// The next planned refresh.
    pub next_refresh_at: DateTime<Utc>,
}

/// Stores a refresh's tokens together (one statement, so both land or neither) and clears the
/// failure count.
///
/// # Errors
/// Fails on database or sealing errors.
pub async fn save_refresh(
    store: &Store,
    user: DiscordUserId,
    refreshed: &Refreshed,
) -> Result<(), StoreError> {
    let access = store
        .sealer()
        .seal(&refreshed.access_token, &access_context(user))?;
    let refresh = refreshed
        .refresh_token
        .as_ref()
        .map(|rt| store.sealer().seal(rt, &refresh_context(user)))
        .transpose()?;
    sqlx::query(
        "UPDATE links SET access_token = ?, access_expires_at = ?, \
         refresh_token = COALESCE(?, refresh_token), scopes = ?, last_refresh_at = ?, \
         next_refresh_at = ?, transient_failures = 0, last_error = NULL \
         WHERE discord_user_id = ? AND state = 'active'",
    )
    .bind(access)
    .bind(to_millis(refreshed.access_expires_at))
    .bind(refresh)
    .bind(&refreshed.scopes)
    .bind(to_millis(refreshed.refreshed_at))
    .bind(to_millis(refreshed.next_refresh_at))
    .bind(db_id(user)?)
    .execute(store.pool())
    .await?;
    store.link_cache().forget(user);
    Ok(())
}

/// Records a transient refresh failure and when to try again.
///
/// # Errors
/// Fails on database errors.
pub async fn record_transient_failure(
    store: &Store,
    user: DiscordUserId,
    error: &str,
    retry_at: DateTime<Utc>,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE links SET transient_failures = transient_failures + 1, last_error = ?, \
         next_refresh_at = ? WHERE discord_user_id = ?",
    )
    .bind(error)
    .bind(to_millis(retry_at))
    .bind(db_id(user)?)
    .execute(store.pool())
    .await?;
    store.link_cache().forget(user);
    Ok(())
}

/// Marks the link as needing a new sign-in. Returns `true` when this call claimed the (single)
/// alert for it, so exactly one caller notifies the user.
///
/// # Errors
/// Fails on database errors.
pub async fn mark_relink_required(
    store: &Store,
    user: DiscordUserId,
    error: &str,
    now: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let claimed = sqlx::query(
        "UPDATE links SET state = 'relink_required', last_error = ?, alerted_at = ? \
         WHERE discord_user_id = ? AND alerted_at IS NULL",
    )
    .bind(error)
    .bind(to_millis(now))
    .bind(db_id(user)?)
    .execute(store.pool())
    .await?
    .rows_affected();
    store.link_cache().forget(user);
    Ok(claimed == 1)
}

/// Notes that a token was handed out.
///
/// # Errors
/// Fails on database errors.
pub async fn touch(
    store: &Store,
    user: DiscordUserId,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE links SET last_used_at = ? WHERE discord_user_id = ?")
        .bind(to_millis(now))
        .bind(db_id(user)?)
        .execute(store.pool())
        .await?;
    store.link_cache().forget(user);
    Ok(())
}

/// Moves the link's next planned refresh.
///
/// # Errors
/// Fails on database errors.
pub async fn reschedule(
    store: &Store,
    user: DiscordUserId,
    at: DateTime<Utc>,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE links SET next_refresh_at = ? WHERE discord_user_id = ?")
        .bind(to_millis(at))
        .bind(db_id(user)?)
        .execute(store.pool())
        .await?;
    store.link_cache().forget(user);
    Ok(())
}

/// Erases the link, its scoped tokens and any device flow. Returns whether a link existed.
///
/// # Errors
/// Fails on database errors.
pub async fn delete(store: &Store, user: DiscordUserId) -> Result<bool, StoreError> {
    let id = db_id(user)?;
    let mut tx = store.pool().begin().await?;
    sqlx::query("DELETE FROM scoped_tokens WHERE discord_user_id = ?")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    sqlx::query("DELETE FROM device_flows WHERE discord_user_id = ?")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    let deleted = sqlx::query("DELETE FROM links WHERE discord_user_id = ?")
        .bind(id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    tx.commit().await?;
    store.link_cache().forget(user);
    Ok(deleted == 1)
}

/// Served by the `links_due` index on `(state, next_refresh_at)`.
const DUE_SQL: &str = "SELECT discord_user_id FROM links WHERE state = 'active' \
    AND next_refresh_at <= ? ORDER BY next_refresh_at LIMIT ?";

/// Active links whose planned refresh is at or before `now`, soonest first.
///
/// # Errors
/// Fails on database errors.
pub async fn due(
    store: &Store,
    now: DateTime<Utc>,
    limit: u32,
) -> Result<Vec<DiscordUserId>, StoreError> {
    let rows: Vec<(i64,)> = sqlx::query_as(DUE_SQL)
        .bind(to_millis(now))
        .bind(i64::from(limit))
        .fetch_all(store.pool())
        .await?;
    rows.into_iter()
        .map(|(id,)| {
            DiscordUserId::from_db(id).map_err(|_| StoreError::Corrupt {
                table: "links",
                reason: "negative user id".into(),
            })
        })
        .collect()
}

/// Counts links by state, for metrics.
///
/// # Errors
/// Fails on database errors.
pub async fn count_by_state(store: &Store) -> Result<Vec<(String, i64)>, StoreError> {
    Ok(
        sqlx::query_as("SELECT state, COUNT(*) FROM links GROUP BY state ORDER BY state")
            .fetch_all(store.pool())
            .await?,
    )
}

/// A cached token for another resource.
///
/// # Errors
/// Fails on database errors or when the token cannot be opened.
pub async fn find_scoped(
    store: &Store,
    user: DiscordUserId,
    scope_key: &str,
) -> Result<Option<ScopedToken>, StoreError> {
    let row: Option<(String, String, i64)> = sqlx::query_as(
        "SELECT access_token, scope, expires_at FROM scoped_tokens \
         WHERE discord_user_id = ? AND scope_key = ?",
    )
    .bind(db_id(user)?)
    .bind(scope_key)
    .fetch_optional(store.pool())
    .await?;
    let Some((sealed, scope, expires_at)) = row else {
        return Ok(None);
    };
    Ok(Some(ScopedToken {
        access_token: store
            .sealer()
            .open(&sealed, &scoped_context(user, scope_key))?,
        scope,
        expires_at: from_millis(expires_at),
    }))
}

/// Caches a token for another resource and stores the refresh token that came with it, in one
/// transaction.
///
/// # Errors
/// Fails on database or sealing errors.
pub async fn save_scoped(
    store: &Store,
    user: DiscordUserId,
    scope_key: &str,
    token: &ScopedToken,
    refresh_token: Option<&Secret>,
) -> Result<(), StoreError> {
    let id = db_id(user)?;
    let sealed = store
        .sealer()
        .seal(&token.access_token, &scoped_context(user, scope_key))?;
    let refresh = refresh_token
        .map(|rt| store.sealer().seal(rt, &refresh_context(user)))
        .transpose()?;
    let mut tx = store.pool().begin().await?;
    sqlx::query(
        "INSERT INTO scoped_tokens (discord_user_id, scope_key, access_token, scope, expires_at) \
         VALUES (?, ?, ?, ?, ?) ON CONFLICT (discord_user_id, scope_key) DO UPDATE SET \
         access_token = excluded.access_token, scope = excluded.scope, expires_at = excluded.expires_at",
    )
    .bind(id)
    .bind(scope_key)
    .bind(sealed)
    .bind(&token.scope)
    .bind(to_millis(token.expires_at))
    .execute(&mut *tx)
    .await?;
    if let Some(refresh) = refresh {
        sqlx::query("UPDATE links SET refresh_token = ? WHERE discord_user_id = ?")
            .bind(refresh)
            .bind(id)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    store.link_cache().forget(user);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Sealer;

    #[tokio::test]
    async fn the_due_links_query_is_served_by_its_index() {
        let store = Store::connect("sqlite::memory:", Sealer::new(&[1; 32]))
            .await
            .unwrap();

        let plan: Vec<(i64, i64, i64, String)> =
            sqlx::query_as(&format!("EXPLAIN QUERY PLAN {DUE_SQL}"))
                .bind(0_i64)
                .bind(10_i64)
                .fetch_all(store.pool())
                .await
                .unwrap();

        let details: Vec<_> = plan.iter().map(|row| row.3.as_str()).collect();
        assert!(
            details.iter().any(|d| d.contains("USING INDEX links_due")),
            "{details:?}"
        );
        assert!(
            !details.iter().any(|d| d.contains("TEMP B-TREE")),
            "no sort step: {details:?}"
        );
    }

    fn new_link(user: DiscordUserId, name: &str, linked_at: DateTime<Utc>) -> NewLink {
        NewLink {
            user,
            account: Account {
                tenant_id: "t".into(),
                object_id: format!("oid-{name}"),
                username: format!("{name}@contoso.example"),
                display_name: name.into(),
            },
            scopes: "User.Read".into(),
            access_token: Secret::new(format!("at-{name}")),
            access_expires_at: linked_at + chrono::TimeDelta::hours(1),
            refresh_token: Secret::new(format!("rt-{name}")),
            linked_at,
            next_refresh_at: linked_at + chrono::TimeDelta::minutes(50),
        }
    }

    async fn file_store(dir: &tempfile::TempDir) -> Store {
        let url = format!("sqlite://{}", dir.path().join("links.db").display());
        Store::connect(&url, Sealer::new(&[2; 32])).await.unwrap()
    }

    #[tokio::test]
    async fn a_cached_link_is_dropped_by_every_write_through_this_module() {
        let dir = tempfile::tempdir().unwrap();
        let store = file_store(&dir).await;
        let user = DiscordUserId::new(7);
        let mut conn = store.pool().acquire().await.unwrap();
        save_new(&mut conn, &store, &new_link(user, "ada", Utc::now()))
            .await
            .unwrap();
        drop(conn);
        find(&store, user).await.unwrap().unwrap();

        // Behind the module's back, as no code path may: the cache does not see it.
        sqlx::query("UPDATE links SET display_name = 'changed'")
            .execute(store.pool())
            .await
            .unwrap();
        let cached = find(&store, user).await.unwrap().unwrap();
        touch(&store, user, Utc::now()).await.unwrap();
        let reread = find(&store, user).await.unwrap().unwrap();
        delete(&store, user).await.unwrap();

        assert_eq!(cached.status.account.display_name, "ada");
        assert_eq!(reread.status.account.display_name, "changed");
        assert!(find(&store, user).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_relink_inside_an_open_transaction_is_not_cached_before_it_commits() {
        let dir = tempfile::tempdir().unwrap();
        let store = file_store(&dir).await;
        let user = DiscordUserId::new(8);
        let first = Utc::now() - chrono::TimeDelta::hours(2);
        let mut conn = store.pool().acquire().await.unwrap();
        save_new(&mut conn, &store, &new_link(user, "ada", first))
            .await
            .unwrap();
        drop(conn);
        find(&store, user).await.unwrap().unwrap();

        let mut tx = store.pool().begin().await.unwrap();
        save_new(&mut tx, &store, &new_link(user, "eve", Utc::now()))
            .await
            .unwrap();
        let during = find(&store, user).await.unwrap().unwrap();
        tx.commit().await.unwrap();
        let after = find(&store, user).await.unwrap().unwrap();

        assert_eq!(during.status.account.display_name, "ada");
        assert_eq!(after.status.account.display_name, "eve");
        assert_eq!(after.access_token.expose(), "at-eve");
    }
}
