//! The database: connection, migrations, sealing of secrets and one file of typed queries per
//! table group. All SQL lives below this module, in portable statements with upper-case
//! keywords, so the same queries can later run on Postgres.

pub mod api_keys;
pub mod audit;
mod error;
pub mod flows;
pub mod links;
pub mod seal;

use std::io::Write as _;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use chrono::{DateTime, TimeZone, Utc};
use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

pub use error::StoreError;
pub use seal::Sealer;

use crate::config::{self, KeySource};

/// The pool and the sealer, cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    pool: SqlitePool,
    sealer: Sealer,
    /// Links read recently, so hot token reads skip the database (see [`links::find`]).
    links: Arc<links::LinkCache>,
    /// How running servers learn of key revocations (see [`api_keys::revocation_stamp`]).
    revocations: Arc<api_keys::Revocations>,
}

/// Where the sealing key came from, for the one start-up log line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyOrigin {
    /// `LINKBOT_SECRET_KEY`.
    Environment,
    /// An existing key file.
    FileRead,
    /// A key file created just now.
    FileCreated,
}

impl Store {
    /// Opens (creating if needed) the database at `database_url` and runs pending migrations.
    ///
    /// # Errors
    /// Fails when the folder or file cannot be created, the database cannot be opened, or a
    /// migration fails.
    pub async fn connect(database_url: &str, sealer: Sealer) -> Result<Self, StoreError> {
        if let Some(path) = config::sqlite_path(database_url) {
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent).map_err(|err| StoreError::KeyFile {
                    path: parent.display().to_string(),
                    reason: format!("cannot create the database folder: {err}"),
                })?;
            }
        }
        let in_memory = config::sqlite_path(database_url).is_none();
        let options = SqliteConnectOptions::from_str(database_url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(true);
        // An in-memory database lives only as long as its one connection.
        let pool = if in_memory {
            SqlitePoolOptions::new()
                .max_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
                .connect_with(options)
                .await?
        } else {
            SqlitePoolOptions::new()
                .max_connections(8)
                .connect_with(options)
                .await?
        };
        sqlx::migrate!("./migrations").run(&pool).await?;
        let marker = config::sqlite_path(database_url).map(|db| api_keys::marker_beside(&db));
        Ok(Self {
            pool,
            sealer,
            links: Arc::default(),
            revocations: Arc::new(api_keys::Revocations::new(marker)),
        })
    }

    /// The connection pool, for transactions spanning several query fns. Writes to `links`
    /// must go through [`links`], whose functions keep the in-memory link cache right.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// The sealer for secrets.
    pub fn sealer(&self) -> &Sealer {
        &self.sealer
    }

    pub(crate) fn link_cache(&self) -> &links::LinkCache {
        &self.links
    }

    pub(crate) fn revocations(&self) -> &api_keys::Revocations {
        &self.revocations
    }

    /// Closes every connection, checkpointing the WAL.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Loads the sealing key from the environment or the key file, creating the file (mode 0600)
/// when it does not exist.
///
/// # Errors
/// Fails when the key file cannot be read, created or decoded.
pub fn load_key(source: &KeySource) -> Result<([u8; 32], KeyOrigin), StoreError> {
    let path = match source {
        KeySource::Given(key) => return Ok((*key, KeyOrigin::Environment)),
        KeySource::File(path) => path,
    };
    let key_file_error = |reason: String| StoreError::KeyFile {
        path: path.display().to_string(),
        reason,
    };
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let key = config::decode_key(&text).map_err(&key_file_error)?;
            Ok((key, KeyOrigin::FileRead))
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            let key = seal::generate_key();
            write_key_file(path, &key)
                .map_err(|err| key_file_error(format!("cannot create it: {err}")))?;
            Ok((key, KeyOrigin::FileCreated))
        }
        Err(err) => Err(key_file_error(format!("cannot read it: {err}"))),
    }
}

fn write_key_file(path: &Path, key: &[u8; 32]) -> std::io::Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    writeln!(file, "{}", BASE64.encode(key))?;
    file.sync_all()
}

/// Checks that the configured key opens the stored secrets, by opening one link and one open
/// device flow.
///
/// # Errors
/// [`StoreError::WrongKey`] or [`StoreError::Unseal`] when it does not.
pub async fn verify_key(store: &Store) -> Result<(), StoreError> {
    let link: Option<(i64,)> = sqlx::query_as("SELECT discord_user_id FROM links LIMIT 1")
        .fetch_optional(store.pool())
        .await?;
    let flow: Option<(i64,)> =
        sqlx::query_as("SELECT discord_user_id FROM device_flows WHERE outcome IS NULL LIMIT 1")
            .fetch_optional(store.pool())
            .await?;
    let user = |id: i64| {
        crate::domain::DiscordUserId::from_db(id).map_err(|_| StoreError::Corrupt {
            table: "links",
            reason: "negative user id".into(),
        })
    };
    if let Some((id,)) = link {
        links::find(store, user(id)?).await?;
    }
    if let Some((id,)) = flow {
        flows::find(store, user(id)?).await?;
    }
    Ok(())
}

/// Milliseconds since the Unix epoch, the unit of every time column.
pub fn to_millis(time: DateTime<Utc>) -> i64 {
    time.timestamp_millis()
}

/// Reads a time column back.
pub fn from_millis(millis: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(millis)
        .single()
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_missing_key_file_is_created_private_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/linkbot.key");
        let source = KeySource::File(path.clone());

        let (created, origin) = load_key(&source).unwrap();
        let (read, again) = load_key(&source).unwrap();

        assert_eq!(origin, KeyOrigin::FileCreated);
        assert_eq!(again, KeyOrigin::FileRead);
        assert_eq!(created, read);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[tokio::test]
    async fn a_malformed_key_file_is_reported_without_its_contents() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("linkbot.key");
        std::fs::write(&path, "hunter2hunter2").unwrap();

        let err = load_key(&KeySource::File(path)).unwrap_err().to_string();

        assert!(err.contains("linkbot.key"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[tokio::test]
    async fn connecting_creates_the_folder_and_migrates() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/nested/db.sqlite", dir.path().display());

        let store = Store::connect(&url, Sealer::new(&[7; 32])).await.unwrap();

        let tables: Vec<(String,)> =
            sqlx::query_as("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
                .fetch_all(store.pool())
                .await
                .unwrap();
        let names: Vec<_> = tables.into_iter().map(|t| t.0).collect();
        for table in [
            "api_keys",
            "audit_events",
            "device_flows",
            "links",
            "scoped_tokens",
        ] {
            assert!(
                names.iter().any(|n| n == table),
                "{table} missing from {names:?}"
            );
        }
    }
}
