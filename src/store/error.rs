//! The store's error type.

/// What can go wrong in `store`.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database failed or could not be reached.
    #[error("database error")]
    Database(#[from] sqlx::Error),
    /// A migration failed.
    #[error("database migration failed")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A secret was sealed under another key than the configured one.
    #[error(
        "stored secrets were sealed with key {found}, but LINKBOT_SECRET_KEY (or the key file) is \
         key {expected}; restore the original key"
    )]
    WrongKey {
        /// Id of the configured key.
        expected: String,
        /// Id found beside the ciphertext.
        found: String,
    },
    /// A sealed value is malformed, was altered, or was moved from another row.
    #[error("a stored secret failed its integrity check")]
    Unseal,
    /// Sealing failed.
    #[error("a secret could not be sealed")]
    Seal,
    /// The key file is unreadable or malformed.
    #[error("secret key file {path}: {reason}")]
    KeyFile {
        /// The file.
        path: String,
        /// What is wrong, never quoting the contents.
        reason: String,
    },
    /// A row holds a value no code path writes.
    #[error("corrupt row in {table}: {reason}")]
    Corrupt {
        /// The table.
        table: &'static str,
        /// What is wrong.
        reason: String,
    },
}
