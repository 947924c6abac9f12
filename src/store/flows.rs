//! The `device_flows` table: one device-code flow per Discord user, kept so a restart resumes
//! polling and can still edit the message that showed the code.

use chrono::{DateTime, Utc};
use sqlx::{FromRow, SqliteConnection};

use crate::domain::{DiscordUserId, Secret};
use crate::notify::CodeMessage;
use crate::store::{Store, StoreError, from_millis, to_millis};

/// A device flow as stored.
#[derive(Clone, Debug)]
pub struct Flow {
    /// The Discord user.
    pub user: DiscordUserId,
    /// The secret polling code.
    pub device_code: Secret,
    /// The code shown to the user.
    pub user_code: String,
    /// Where the user enters it.
    pub verification_uri: String,
    /// Microsoft's instruction sentence.
    pub message: String,
    /// When the code stops working.
    pub expires_at: DateTime<Utc>,
    /// Current polling interval in seconds (grows by 5 on each `slow_down`).
    pub interval_secs: u64,
    /// The earliest time the next poll may be sent.
    pub next_poll_at: DateTime<Utc>,
    /// The flow replaces an existing link.
    pub relink: bool,
    /// Where the code was shown.
    pub message_ref: CodeMessage,
    /// How it ended, or `None` while open.
    pub outcome: Option<String>,
    /// When it started.
    pub created_at: DateTime<Utc>,
}

#[derive(FromRow)]
struct FlowRow {
    discord_user_id: i64,
    device_code: String,
    user_code: String,
    verification_uri: String,
    message: String,
    expires_at: i64,
    interval_secs: i64,
    next_poll_at: i64,
    relink: i64,
    dm_channel_id: Option<i64>,
    dm_message_id: Option<i64>,
    reply_token: Option<String>,
    outcome: Option<String>,
    created_at: i64,
}

const COLUMNS: &str = "discord_user_id, device_code, user_code, verification_uri, message, \
    expires_at, interval_secs, next_poll_at, relink, dm_channel_id, dm_message_id, reply_token, \
    outcome, created_at";

fn corrupt(reason: &str) -> StoreError {
    StoreError::Corrupt {
        table: "device_flows",
        reason: reason.into(),
    }
}

fn db_id(user: DiscordUserId) -> Result<i64, StoreError> {
    user.to_db().map_err(|_| corrupt("user id out of range"))
}

fn device_code_context(user: DiscordUserId) -> String {
    format!("device_flows:{user}:device_code")
}

fn reply_context(user: DiscordUserId) -> String {
    format!("device_flows:{user}:reply_token")
}

fn to_snowflake(value: Option<i64>) -> Result<Option<u64>, StoreError> {
    value
        .map(|v| u64::try_from(v).map_err(|_| corrupt("negative snowflake")))
        .transpose()
}

fn from_snowflake(value: u64) -> Result<i64, StoreError> {
    i64::try_from(value).map_err(|_| corrupt("snowflake out of range"))
}

impl FlowRow {
    fn open(self, store: &Store) -> Result<Flow, StoreError> {
        let user = DiscordUserId::from_db(self.discord_user_id)
            .map_err(|_| corrupt("negative user id"))?;
        let message_ref = match (
            to_snowflake(self.dm_channel_id)?,
            to_snowflake(self.dm_message_id)?,
            self.reply_token,
        ) {
            (Some(channel_id), Some(message_id), _) => CodeMessage::Direct {
                channel_id,
                message_id,
            },
            (_, _, Some(sealed)) => CodeMessage::Reply {
                token: store.sealer().open(&sealed, &reply_context(user))?,
            },
            _ => CodeMessage::Nowhere,
        };
        Ok(Flow {
            // A finished flow's device code is erased (empty), not sealed.
            device_code: if self.device_code.is_empty() {
                Secret::new("")
            } else {
                store
                    .sealer()
                    .open(&self.device_code, &device_code_context(user))?
            },
            user,
            user_code: self.user_code,
            verification_uri: self.verification_uri,
            message: self.message,
            expires_at: from_millis(self.expires_at),
            interval_secs: u64::try_from(self.interval_secs)
                .map_err(|_| corrupt("negative interval"))?,
            next_poll_at: from_millis(self.next_poll_at),
            relink: self.relink != 0,
            message_ref,
            outcome: self.outcome,
            created_at: from_millis(self.created_at),
        })
    }
}

/// Stores a new flow for the user, replacing any earlier one.
///
/// # Errors
/// Fails on database or sealing errors.
pub async fn insert(store: &Store, flow: &Flow) -> Result<(), StoreError> {
    let id = db_id(flow.user)?;
    let device_code = store
        .sealer()
        .seal(&flow.device_code, &device_code_context(flow.user))?;
    sqlx::query(
        "INSERT INTO device_flows (discord_user_id, device_code, user_code, verification_uri, \
         message, expires_at, interval_secs, next_poll_at, relink, outcome, created_at) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, ?) \
         ON CONFLICT (discord_user_id) DO UPDATE SET device_code = excluded.device_code, \
         user_code = excluded.user_code, verification_uri = excluded.verification_uri, \
         message = excluded.message, expires_at = excluded.expires_at, \
         interval_secs = excluded.interval_secs, next_poll_at = excluded.next_poll_at, \
         relink = excluded.relink, dm_channel_id = NULL, dm_message_id = NULL, \
         reply_token = NULL, outcome = NULL, created_at = excluded.created_at",
    )
    .bind(id)
    .bind(device_code)
    .bind(&flow.user_code)
    .bind(&flow.verification_uri)
    .bind(&flow.message)
    .bind(to_millis(flow.expires_at))
    .bind(i64::try_from(flow.interval_secs).map_err(|_| corrupt("interval out of range"))?)
    .bind(to_millis(flow.next_poll_at))
    .bind(i64::from(flow.relink))
    .bind(to_millis(flow.created_at))
    .execute(store.pool())
    .await?;
    Ok(())
}

/// The user's flow, open or finished.
///
/// # Errors
/// Fails on database or unsealing errors.
pub async fn find(store: &Store, user: DiscordUserId) -> Result<Option<Flow>, StoreError> {
    let row: Option<FlowRow> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM device_flows WHERE discord_user_id = ?"
    ))
    .bind(db_id(user)?)
    .fetch_optional(store.pool())
    .await?;
    row.map(|r| r.open(store)).transpose()
}

/// Every flow without an outcome.
///
/// # Errors
/// Fails on database or unsealing errors.
pub async fn open_flows(store: &Store) -> Result<Vec<Flow>, StoreError> {
    let rows: Vec<FlowRow> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM device_flows WHERE outcome IS NULL ORDER BY created_at"
    ))
    .fetch_all(store.pool())
    .await?;
    rows.into_iter().map(|r| r.open(store)).collect()
}

/// Records where the code was shown.
///
/// # Errors
/// Fails on database or sealing errors.
pub async fn set_message(
    store: &Store,
    user: DiscordUserId,
    message: &CodeMessage,
) -> Result<(), StoreError> {
    let (channel, message_id, reply) = match message {
        CodeMessage::Direct {
            channel_id,
            message_id,
        } => (
            Some(from_snowflake(*channel_id)?),
            Some(from_snowflake(*message_id)?),
            None,
        ),
        CodeMessage::Reply { token } => (
            None,
            None,
            Some(store.sealer().seal(token, &reply_context(user))?),
        ),
        CodeMessage::Nowhere => (None, None, None),
    };
    sqlx::query(
        "UPDATE device_flows SET dm_channel_id = ?, dm_message_id = ?, reply_token = ? \
         WHERE discord_user_id = ?",
    )
    .bind(channel)
    .bind(message_id)
    .bind(reply)
    .bind(db_id(user)?)
    .execute(store.pool())
    .await?;
    Ok(())
}

/// Records the next allowed poll time and the (possibly grown) interval.
///
/// # Errors
/// Fails on database errors.
pub async fn set_next_poll(
    store: &Store,
    user: DiscordUserId,
    next_poll_at: DateTime<Utc>,
    interval_secs: u64,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE device_flows SET next_poll_at = ?, interval_secs = ? WHERE discord_user_id = ?",
    )
    .bind(to_millis(next_poll_at))
    .bind(i64::try_from(interval_secs).map_err(|_| corrupt("interval out of range"))?)
    .bind(db_id(user)?)
    .execute(store.pool())
    .await?;
    Ok(())
}

/// Closes the flow with `outcome`, erasing its device code and reply token. Runs on `conn` so
/// it can share the link's transaction. Returns whether an open flow was closed.
///
/// # Errors
/// Fails on database errors.
pub async fn finish(
    conn: &mut SqliteConnection,
    user: DiscordUserId,
    outcome: &str,
) -> Result<bool, StoreError> {
    let closed = sqlx::query(
        "UPDATE device_flows SET outcome = ?, device_code = '', reply_token = NULL \
         WHERE discord_user_id = ? AND outcome IS NULL",
    )
    .bind(outcome)
    .bind(db_id(user)?)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    Ok(closed == 1)
}
