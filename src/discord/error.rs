//! The Discord front door's two error types: [`CommandError`], a failed slash command turned into
//! a private reply, and [`DiscordError`], a failed call to Discord described without the URL
//! (which can hold an interaction token) or any message content.

use std::time::Duration;

use crate::discord::messages::{self, Message};
use crate::linking::LinkError;
use crate::microsoft::MicrosoftError;
use crate::store::StoreError;

/// Discord's code for "Cannot send messages to this user" (DMs closed, or no shared server).
pub const DMS_CLOSED: isize = 50007;

/// Why a command could not do what was asked. Each variant has one reply in [`Self::reply`].
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The command arrived with options this version does not register: Discord still holds
    /// an older registration.
    #[error("the command carried an unexpected option")]
    UnexpectedOption,
    /// The invoking user's id does not fit the database (Discord issues none such).
    #[error("the user id is out of range")]
    InvalidUser,
    /// Microsoft was busy or unreachable.
    #[error("Microsoft is unavailable")]
    MicrosoftUnavailable(#[source] MicrosoftError),
    /// Microsoft refuses the app registration; an operator must fix it.
    #[error("Microsoft refuses the app registration")]
    Misconfigured(#[source] MicrosoftError),
    /// Microsoft refused to start a sign-in for another reason.
    #[error("Microsoft refused to start a sign-in")]
    MicrosoftRefused(#[source] MicrosoftError),
    /// The code could be shown neither by DM nor in the reply.
    #[error("the device code could not be shown")]
    CodeNotShown,
    /// The database failed.
    #[error("database failure")]
    Store(#[from] StoreError),
}

impl From<LinkError> for CommandError {
    fn from(err: LinkError) -> Self {
        match err {
            LinkError::Store(err) => Self::Store(err),
            LinkError::Microsoft(err) => match err {
                MicrosoftError::Transient { .. } => Self::MicrosoftUnavailable(err),
                MicrosoftError::Operator { .. } => Self::Misconfigured(err),
                MicrosoftError::Declined
                | MicrosoftError::Expired
                | MicrosoftError::BadVerificationCode
                | MicrosoftError::PolicyBlocked
                | MicrosoftError::RelinkRequired { .. }
                | MicrosoftError::Rejected { .. } => Self::MicrosoftRefused(err),
            },
        }
    }
}

impl CommandError {
    /// The private reply the user sees.
    pub fn reply(&self) -> Message {
        match self {
            Self::UnexpectedOption | Self::InvalidUser => messages::stale_command(),
            Self::MicrosoftUnavailable(_) => messages::microsoft_unavailable(),
            Self::Misconfigured(_) => messages::misconfigured(),
            Self::MicrosoftRefused(_) => messages::microsoft_refused(),
            Self::CodeNotShown => messages::code_not_shown(),
            Self::Store(_) => messages::internal_error(),
        }
    }

    /// Whether the failure is ours to fix (logged as an error) rather than expected trouble.
    pub fn is_bug(&self) -> bool {
        match self {
            Self::InvalidUser | Self::Misconfigured(_) | Self::Store(_) => true,
            Self::UnexpectedOption
            | Self::MicrosoftUnavailable(_)
            | Self::MicrosoftRefused(_)
            | Self::CodeNotShown => false,
        }
    }

    /// A short code for logs: the Microsoft error code where there is one.
    pub fn code(&self) -> String {
        match self {
            Self::MicrosoftUnavailable(err)
            | Self::Misconfigured(err)
            | Self::MicrosoftRefused(err) => err.code(),
            Self::UnexpectedOption => "unexpected_option".to_owned(),
            Self::InvalidUser => "invalid_user".to_owned(),
            Self::CodeNotShown => "code_not_shown".to_owned(),
            Self::Store(err) => format!("store: {err}"),
        }
    }
}

/// A failed call to Discord. Its text holds the HTTP status and Discord's error code only.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DiscordError {
    /// Discord answered with an error status.
    #[error("Discord answered HTTP {status} (code {code})")]
    Refused {
        /// HTTP status.
        status: u16,
        /// Discord's JSON error code; serenity reports -1 when the body has none (a 429).
        code: isize,
    },
    /// Discord could not be reached, or did not answer in time.
    #[error("Discord could not be reached")]
    Unreachable,
    /// The request was not sent or the answer not understood (`kind` says which part failed).
    #[error("Discord request failed ({kind})")]
    Other {
        /// Which part failed: `model`, `json`, `http`, …
        kind: &'static str,
    },
}

/// Wait after a 429. Against discord.com serenity's own rate limiter waits out 429s before they
/// reach us; behind `DISCORD_API_BASE` (limiter off) serenity drops the `Retry-After` header and
/// cannot parse Discord's rate-limit body (it lacks `code`), so the delay asked for is unknown.
// Limitation: behind a proxy a 429 waits a fixed second, not Discord's retry_after; a longer
// limit fails the call after three tries; keeping the header needs a raw request path.
const RATE_LIMIT_WAIT: Duration = Duration::from_secs(1);

/// First wait after a 5xx or network failure; doubled for each further try.
const BASE_BACKOFF: Duration = Duration::from_millis(250);

impl DiscordError {
    /// Whether the user refuses DMs from the bot (Discord 50007).
    pub fn is_dms_closed(&self) -> bool {
        matches!(self, Self::Refused { code, .. } if *code == DMS_CLOSED)
    }

    /// How long to wait before try number `attempt + 1`, or `None` when retrying cannot help.
    pub fn retry_delay(&self, attempt: u32) -> Option<Duration> {
        let backoff = BASE_BACKOFF * 2u32.saturating_pow(attempt.saturating_sub(1));
        match self {
            Self::Refused { status: 429, .. } => Some(RATE_LIMIT_WAIT),
            Self::Refused { status, .. } if *status >= 500 => Some(backoff),
            Self::Refused { .. } | Self::Other { .. } => None,
            Self::Unreachable => Some(backoff),
        }
    }
}

impl From<serenity::Error> for DiscordError {
    fn from(err: serenity::Error) -> Self {
        use serenity::http::HttpError;
        match err {
            serenity::Error::Http(HttpError::UnsuccessfulRequest(response)) => Self::Refused {
                status: response.status_code.as_u16(),
                code: response.error.code,
            },
            serenity::Error::Http(HttpError::Request(_)) | serenity::Error::Tungstenite(_) => {
                Self::Unreachable
            }
            serenity::Error::Http(_) => Self::Other { kind: "http" },
            serenity::Error::Json(_) => Self::Other { kind: "json" },
            serenity::Error::Model(_) => Self::Other { kind: "model" },
            _ => Self::Other { kind: "other" },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_command_error_has_a_reply() {
        let transient = MicrosoftError::Transient {
            reason: "http_503".into(),
            retry_after: None,
        };
        let operator = MicrosoftError::Operator {
            error: "invalid_client".into(),
            code: Some(7000218),
        };

        let unavailable = CommandError::from(LinkError::Microsoft(transient));
        let misconfigured = CommandError::from(LinkError::Microsoft(operator));
        let refused = CommandError::from(LinkError::Microsoft(MicrosoftError::Declined));

        assert_eq!(unavailable.reply(), messages::microsoft_unavailable());
        assert!(!unavailable.is_bug());
        assert_eq!(misconfigured.reply(), messages::misconfigured());
        assert!(misconfigured.is_bug());
        assert_eq!(misconfigured.code(), "invalid_client:AADSTS7000218");
        assert_eq!(refused.reply(), messages::microsoft_refused());
        assert_eq!(
            CommandError::CodeNotShown.reply(),
            messages::code_not_shown()
        );
        assert_eq!(
            CommandError::UnexpectedOption.reply(),
            messages::stale_command()
        );
        let store = CommandError::from(StoreError::Unseal);
        assert_eq!(store.reply(), messages::internal_error());
        assert!(store.is_bug());
    }

    #[test]
    fn server_errors_and_rate_limits_are_retried_but_refusals_are_not() {
        let server = DiscordError::Refused {
            status: 502,
            code: 0,
        };
        let limited = DiscordError::Refused {
            status: 429,
            code: -1,
        };
        let closed = DiscordError::Refused {
            status: 403,
            code: DMS_CLOSED,
        };

        assert_eq!(server.retry_delay(1), Some(BASE_BACKOFF));
        assert_eq!(server.retry_delay(2), Some(BASE_BACKOFF * 2));
        assert_eq!(limited.retry_delay(1), Some(RATE_LIMIT_WAIT));
        assert_eq!(DiscordError::Unreachable.retry_delay(1), Some(BASE_BACKOFF));
        assert_eq!(closed.retry_delay(1), None);
        assert!(closed.is_dms_closed());
        assert!(!server.is_dms_closed());
    }

    #[test]
    fn discord_errors_show_status_and_code_only() {
        let err = DiscordError::Refused {
            status: 403,
            code: DMS_CLOSED,
        };

        assert_eq!(err.to_string(), "Discord answered HTTP 403 (code 50007)");
    }
}
