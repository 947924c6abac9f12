//! Shared newtypes: Discord ids, link states, linked accounts and the redacting wrapper for
//! secrets. Nothing here talks to the network or the database.

use std::fmt;
use std::sync::Arc;

use serde::Serialize;

/// A Discord user snowflake.
///
/// SQLite stores integers as `i64`; [`DiscordUserId::to_db`] and [`DiscordUserId::from_db`]
/// are the only conversions between the two, so no id is ever truncated by an `as` cast.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct DiscordUserId(u64);

/// Why a string is not a Discord user id.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("a Discord user id is a positive number of at most 20 digits")]
pub struct InvalidDiscordUserId;

impl DiscordUserId {
    /// Wraps a snowflake taken from Discord.
    pub const fn new(id: u64) -> Self {
        Self(id)
    }

    /// Parses a decimal snowflake as found in URLs and command lines.
    ///
    /// # Errors
    /// Fails on anything but a non-zero decimal number that fits a signed 64-bit integer
    /// (Discord snowflakes do, and the database needs it).
    pub fn parse(text: &str) -> Result<Self, InvalidDiscordUserId> {
        if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
            return Err(InvalidDiscordUserId);
        }
        let id: u64 = text.parse().map_err(|_| InvalidDiscordUserId)?;
        if id == 0 || i64::try_from(id).is_err() {
            return Err(InvalidDiscordUserId);
        }
        Ok(Self(id))
    }

    /// The raw snowflake.
    pub fn get(self) -> u64 {
        self.0
    }

    /// The value stored in an `INTEGER` column.
    ///
    /// # Errors
    /// Fails for ids above `i64::MAX`, which Discord does not issue.
    pub fn to_db(self) -> Result<i64, InvalidDiscordUserId> {
        i64::try_from(self.0).map_err(|_| InvalidDiscordUserId)
    }

    /// Reads the value of an `INTEGER` column back.
    ///
    /// # Errors
    /// Fails for negative values, which no stored id can have.
    pub fn from_db(value: i64) -> Result<Self, InvalidDiscordUserId> {
        u64::try_from(value)
            .map(Self)
            .map_err(|_| InvalidDiscordUserId)
    }
}

impl fmt::Display for DiscordUserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Where a user's link stands (see DESIGN.md, "Link states").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkState {
    /// A device code was shown and the user has not finished signing in yet.
    Pending,
    /// Tokens are stored and refresh normally.
    Active,
    /// Microsoft refused the refresh token for good; the user must run `/link-microsoft` again.
    RelinkRequired,
}

impl LinkState {
    /// The spelling used in the database, the API and filters.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Active => "active",
            Self::RelinkRequired => "relink_required",
        }
    }

    /// Parses the spelling of [`LinkState::as_str`].
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "pending" => Some(Self::Pending),
            "active" => Some(Self::Active),
            "relink_required" => Some(Self::RelinkRequired),
            _ => None,
        }
    }
}

/// The Microsoft account behind a link, identified by tenant and object id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Account {
    /// Directory (tenant) id; MSA users share the consumer tenant.
    pub tenant_id: String,
    /// Immutable object id of the user in that tenant.
    pub object_id: String,
    /// Sign-in name (UPN or e-mail). Personal data: never logged at `info` or above.
    pub username: String,
    /// Display name. Personal data, like `username`.
    pub display_name: String,
}

/// A secret string (token, device code, key) that prints as `[redacted]`.
///
/// The value is reachable only through [`Secret::expose`], so every place that handles the
/// plain text is easy to find. Clones share one allocation: a cached access token is handed
/// to every caller that asks for it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Arc<str>);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(Arc::from(value.into()))
    }

    /// The plain value, for the few places that must send or seal it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self(Arc::from(value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discord_ids_parse_only_plain_positive_numbers() {
        assert_eq!(
            DiscordUserId::parse("80351110224678912").unwrap().get(),
            80351110224678912
        );
        for bad in [
            "",
            "0",
            "-1",
            "+5",
            "12a",
            " 1",
            "99999999999999999999",
            "9223372036854775808",
        ] {
            assert_eq!(
                DiscordUserId::parse(bad),
                Err(InvalidDiscordUserId),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn discord_ids_round_trip_through_the_database_type() {
        let id = DiscordUserId::new(i64::MAX as u64);
        assert_eq!(DiscordUserId::from_db(id.to_db().unwrap()).unwrap(), id);
        assert!(DiscordUserId::new(u64::MAX).to_db().is_err());
        assert!(DiscordUserId::from_db(-3).is_err());
    }

    #[test]
    fn secrets_never_show_in_debug_output() {
        let secret = Secret::new("EwAtopsecret");
        assert_eq!(format!("{secret:?}"), "[redacted]");
        assert_eq!(secret.expose(), "EwAtopsecret");
    }

    #[test]
    fn link_states_round_trip() {
        for state in [
            LinkState::Pending,
            LinkState::Active,
            LinkState::RelinkRequired,
        ] {
            assert_eq!(LinkState::parse(state.as_str()), Some(state));
        }
        assert_eq!(LinkState::parse("linked"), None);
    }
}
