//! The `api_keys` table. Only a SHA-256 of each key is stored; the key itself is shown once, at
//! creation.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use chrono::{DateTime, Utc};
use rand::RngCore as _;
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

#[derive(FromRow)]
struct HashedKeyRow {
    #[sqlx(flatten)]
    key: ApiKeyRow,
    key_hash: String,
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
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digest = Sha256::digest(key.expose().as_bytes());
    let mut text = String::with_capacity(digest.len() * 2);
    for byte in digest {
        text.push(char::from(HEX[usize::from(byte >> 4)]));
        text.push(char::from(HEX[usize::from(byte & 0x0f)]));
    }
    text
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

/// Revokes a key by name. Returns whether an unrevoked key of that name existed. Servers
/// that cache keys see the revocation at once through [`revocation_stamp`].
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
    // Signalled after the commit: a server that sees the new stamp and reads the key again
    // must find it revoked.
    if revoked > 0 {
        store.revocations().signal();
    }
    Ok(revoked == 1)
}

/// How revocations reach servers that cache keys: a counter for this process and, for a
/// SQLite file, a marker file beside the database that every revocation replaces, so a
/// server in another process notices with one `stat` instead of a query.
// Limitation: the marker works only on the machine holding the SQLite file; servers on other
// hosts (Postgres scale-out) would need a notification such as LISTEN/NOTIFY.
#[derive(Debug)]
pub struct Revocations {
    local: AtomicU64,
    marker: Option<PathBuf>,
}

/// A value that changes whenever a key is revoked, here or by another process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RevocationStamp {
    local: u64,
    marker: Option<(SystemTime, u64, u64)>,
}

/// `data/linkbot.db` signals revocations through `data/linkbot.db-revocations`.
pub fn marker_beside(database: &Path) -> PathBuf {
    let mut name = database.file_name().unwrap_or_default().to_owned();
    name.push("-revocations");
    database.with_file_name(name)
}

impl Revocations {
    /// Signals through `marker` (none for in-memory databases).
    pub fn new(marker: Option<PathBuf>) -> Self {
        Self {
            local: AtomicU64::new(0),
            marker,
        }
    }

    fn signal(&self) {
        self.local.fetch_add(1, Ordering::SeqCst);
        let Some(marker) = &self.marker else { return };
        // A new file renamed over the old one gets a new inode and time, which `stat` sees.
        let mut nonce = [0u8; 8];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let text: String = nonce.iter().map(|b| format!("{b:02x}")).collect();
        let mut temporary = marker.clone().into_os_string();
        temporary.push(format!(".{text}"));
        let written = std::fs::write(&temporary, format!("{text}\n"))
            .and_then(|()| std::fs::rename(&temporary, marker));
        if let Err(err) = written {
            let _ = std::fs::remove_file(&temporary);
            tracing::warn!(
                path = %marker.display(),
                error = %err,
                "could not signal the revocation to running servers; they notice within seconds"
            );
        }
    }

    fn stamp(&self) -> RevocationStamp {
        let marker = self.marker.as_ref().and_then(|path| {
            let meta = std::fs::metadata(path).ok()?;
            #[cfg(unix)]
            let inode = std::os::unix::fs::MetadataExt::ino(&meta);
            #[cfg(not(unix))]
            let inode = 0;
            Some((meta.modified().ok()?, meta.len(), inode))
        });
        RevocationStamp {
            local: self.local.load(Ordering::SeqCst),
            marker,
        }
    }
}

/// The current revocation stamp. A key found valid under one stamp stays valid while the
/// stamp is unchanged; this costs one `stat`, no query.
pub fn revocation_stamp(store: &Store) -> RevocationStamp {
    store.revocations().stamp()
}

/// The unrevoked key whose hash is `key_hash`, with the hash as stored, so the caller can
/// compare the two in constant time.
///
/// # Errors
/// Fails on database errors.
pub async fn find_by_hash(
    store: &Store,
    key_hash: &str,
) -> Result<Option<(ApiKey, String)>, StoreError> {
    let row: Option<HashedKeyRow> = sqlx::query_as(
        "SELECT name, role, created_at, last_used_at, revoked_at, key_hash FROM api_keys \
         WHERE key_hash = ? AND revoked_at IS NULL",
    )
    .bind(key_hash)
    .fetch_optional(store.pool())
    .await?;
    row.map(|row| Ok((row.key.into_key()?, row.key_hash)))
        .transpose()
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Sealer;

    #[tokio::test]
    async fn a_revocation_changes_the_stamp_seen_by_another_process() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("keys.db").display());
        let server = Store::connect(&url, Sealer::new(&[3; 32])).await.unwrap();
        let cli = Store::connect(&url, Sealer::new(&[3; 32])).await.unwrap();
        create(
            &cli,
            "cron",
            Role::Reader,
            &Secret::new("lbk_x"),
            Utc::now(),
        )
        .await
        .unwrap();
        let before = revocation_stamp(&server);

        let unchanged = revocation_stamp(&server);
        assert!(revoke(&cli, "cron", Utc::now()).await.unwrap());
        let after_first = revocation_stamp(&server);
        create(
            &cli,
            "cron2",
            Role::Reader,
            &Secret::new("lbk_y"),
            Utc::now(),
        )
        .await
        .unwrap();
        assert!(revoke(&cli, "cron2", Utc::now()).await.unwrap());
        let after_second = revocation_stamp(&server);

        assert_eq!(before, unchanged);
        assert_ne!(before, after_first);
        assert_ne!(after_first, after_second);
        assert!(
            find_by_hash(&server, &hash_key(&Secret::new("lbk_x")))
                .await
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn key_hashes_are_lower_case_hex_sha256() {
        assert_eq!(
            hash_key(&Secret::new("abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
