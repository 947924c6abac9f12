//! `/microsoft-status`: the user's link as they can see it (account, state, scopes, times, and
//! which API keys fetched their token lately), or their unfinished sign-in. Never a token.

use chrono::{DateTime, TimeDelta, Utc};
use serenity::all::{CommandDataOption, CreateCommand, UserId};

use crate::AppState;
use crate::discord::commands::{Answer, expect_no_options, invoker};
use crate::discord::error::CommandError;
use crate::discord::messages::{self, StatusView};
use crate::domain::DiscordUserId;
use crate::store::audit::{self, AuditEvent};
use crate::store::{flows, links};

/// The command's name.
pub const NAME: &str = "microsoft-status";

/// How far back the status looks for API keys that fetched the user's token.
const KEY_USE_WINDOW: TimeDelta = TimeDelta::days(7);

/// The audit action the API writes when it hands out a token.
const TOKEN_ISSUE: &str = "token.issue";

/// What the command needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Input {
    /// Who ran it; they see only their own link.
    pub user: DiscordUserId,
}

/// The registration.
pub fn register() -> CreateCommand {
    CreateCommand::new(NAME)
        .description("Show your linked Microsoft account and which scripts used it lately")
}

/// Reads the input from the interaction.
///
/// # Errors
/// [`CommandError::UnexpectedOption`] for any option, [`CommandError::InvalidUser`] for an id
/// the database cannot hold.
pub fn extract(user: UserId, options: &[CommandDataOption]) -> Result<Input, CommandError> {
    expect_no_options(options)?;
    Ok(Input {
        user: invoker(user)?,
    })
}

/// Gathers the link, any open sign-in and recent key uses.
///
/// # Errors
/// The database failed.
pub async fn run(state: &AppState, input: Input) -> Result<Answer, CommandError> {
    let now = Utc::now();
    let link = links::status(&state.store, input.user).await?;
    let flow = flows::find(&state.store, input.user).await?;
    let pending_until = flow
        .filter(|f| f.outcome.is_none() && f.expires_at > now)
        .map(|f| f.expires_at);
    let subject = input.user.to_string();
    let events = audit::for_subject(&state.store, &subject, now - KEY_USE_WINDOW).await?;

    let view = StatusView {
        link,
        pending_until,
        key_uses: key_uses(&events),
    };
    Ok(Answer::Show(messages::status(&view)))
}

/// Each API key that fetched a token, with its latest fetch, newest first. `events` come newest
/// first from the store.
fn key_uses(events: &[AuditEvent]) -> Vec<(String, DateTime<Utc>)> {
    let mut uses: Vec<(String, DateTime<Utc>)> = Vec::new();
    let fetches = events
        .iter()
        .filter(|e| e.action == TOKEN_ISSUE && e.outcome == "ok");
    for event in fetches {
        let Some(key) = event.actor.strip_prefix("key:") else {
            continue;
        };
        if !uses.iter().any(|(name, _)| name == key) {
            uses.push((key.to_owned(), event.at));
        }
    }
    uses
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(actor: &str, action: &str, outcome: &str, minutes_ago: i64) -> AuditEvent {
        AuditEvent {
            at: DateTime::from_timestamp(1_700_000_000, 0).unwrap()
                - TimeDelta::minutes(minutes_ago),
            actor: actor.to_owned(),
            action: action.to_owned(),
            subject: "42".to_owned(),
            detail: None,
            outcome: outcome.to_owned(),
        }
    }

    #[test]
    fn the_input_is_the_invoking_user() {
        assert_eq!(
            extract(UserId::new(9), &[]).unwrap(),
            Input {
                user: DiscordUserId::new(9)
            }
        );
    }

    #[test]
    fn key_uses_list_each_key_once_with_its_latest_successful_fetch() {
        let events = [
            event("key:reporting", TOKEN_ISSUE, "ok", 1),
            event("key:backup", TOKEN_ISSUE, "relink_required", 2),
            event("discord:42", "link.delete", "ok", 3),
            event("key:backup", TOKEN_ISSUE, "ok", 4),
            event("key:reporting", TOKEN_ISSUE, "ok", 5),
        ];

        let uses = key_uses(&events);

        assert_eq!(
            uses,
            [
                ("reporting".to_owned(), events[0].at),
                ("backup".to_owned(), events[3].at),
            ]
        );
    }
}
