//! The `api_keys` table. Only a SHA-256 of each key is stored; the key itself is shown once, at
//! creation.

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use sqlx::FromRow;

use crate::domain::Secret;
use crate::store::{Store, StoreError, from_millis, to_millis};

/// What a key may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Read tokens and link status.
    Reader,
    /// Everything a reader may, plus unlinking.
    Admin,
}

impl Role {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reader => "reader",
            Self::Admin => "admin",
        }
    }

    /// Parses the stored spelling.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "reader" => Some(Self::Reader),
            "admin" => Some(Self::Admin),
            _ => None,
        }
    }
}

/// A key's record, never the key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiKey {
    /// Unique name chosen by the operator.
    pub name: String,
    /// Its role.
    pub role: Role,
    /// When it was made.
    pub created_at: DateTime<Utc>,
    /// When it was last used.
    pub last_used_at: Option<DateTime<Utc>>,
    /// When it was revoked.
    pub revoked_at: Option<DateTime<Utc>>,
}

#[derive(FromRow)]
struct ApiKeyRow {
    name: String,
    role: String,
    created_at: i64,
    last_used_at: Option<i64>,
    revoked_at: Option<i64>,
}

impl ApiKeyRow {
    fn into_key(self) -> Result<ApiKey, StoreError> {
        Ok(ApiKey {
            role: Role::parse(&self.role).ok_or_else(|| StoreError::Corrupt {
                table: "api_keys",
                reason: "unknown role".into(),
            })?,
            name: self.name,
            created_at: from_millis(self.created_at),
            last_used_at: self.last_used_at.map(from_millis),
            revoked_at: self.revoked_at.map(from_millis),
        })
    }
}

/// Hex SHA-256 of a key, the only form in which keys are stored.
pub fn hash_key(key: &Secret) -> String {
    Sha256::digest(key.expose().as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Why a key could not be created.
#[derive(Debug, thiserror::Error)]
pub enum CreateKeyError {
    /// The name is taken.
    #[error("an API key named {0:?} already exists")]
    NameTaken(String),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Stores a new key's hash.
///
/// # Errors
/// [`CreateKeyError::NameTaken`] when the name exists (revoked keys keep their names).
pub async fn create(
    store: &Store,
    name: &str,
    role: Role,
    key: &Secret,
    now: DateTime<Utc>,
) -> Result<(), CreateKeyError> {
    let result =
        sqlx::query("INSERT INTO api_keys (name, role, key_hash, created_at) VALUES (?, ?, ?, ?)")
            .bind(name)
            .bind(role.as_str())
            .bind(hash_key(key))
            .bind(to_millis(now))
            .execute(store.pool())
            .await;
    match result {
        Ok(_) => Ok(()),
        Err(sqlx::Error::Database(db)) if db.is_unique_violation() => {
            Err(CreateKeyError::NameTaken(name.to_owned()))
        }
        Err(err) => Err(StoreError::from(err).into()),
    }
}

/// All keys, oldest first.
///
/// # Errors
/// Fails on database errors.
pub async fn list(store: &Store) -> Result<Vec<ApiKey>, StoreError> {
    let rows: Vec<ApiKeyRow> = sqlx::query_as(
        "SELECT name, role, created_at, last_used_at, revoked_at FROM api_keys ORDER BY created_at, name",
    )
    .fetch_all(store.pool())
    .await?;
    rows.into_iter().map(ApiKeyRow::into_key).collect()
}

/// Revokes a key by name. Returns whether an unrevoked key of that name existed.
///
/// # Errors
/// Fails on database errors.
pub async fn revoke(store: &Store, name: &str, now: DateTime<Utc>) -> Result<bool, StoreError> {
    let revoked =
        sqlx::query("UPDATE api_keys SET revoked_at = ? WHERE name = ? AND revoked_at IS NULL")
            .bind(to_millis(now))
            .bind(name)
            .execute(store.pool())
            .await?
            .rows_affected();
    Ok(revoked == 1)
}

/// The unrevoked key whose hash is `key_hash`.
///
/// # Errors
/// Fails on database errors.
pub async fn find_by_hash(store: &Store, key_hash: &str) -> Result<Option<ApiKey>, StoreError> {
    let row: Option<ApiKeyRow> = sqlx::query_as(
        "SELECT name, role, created_at, last_used_at, revoked_at FROM api_keys \
         WHERE key_hash = ? AND revoked_at IS NULL",
    )
    .bind(key_hash)
    .fetch_optional(store.pool())
    .await?;
    row.map(ApiKeyRow::into_key).transpose()
}

/// Notes a key's use.
///
/// # Errors
/// Fails on database errors.
pub async fn touch(store: &Store, name: &str, now: DateTime<Utc>) -> Result<(), StoreError> {
    sqlx::query("UPDATE api_keys SET last_used_at = ? WHERE name = ?")
        .bind(to_millis(now))
        .bind(name)
        .execute(store.pool())
        .await?;
    Ok(())
}
