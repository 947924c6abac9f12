//! `/microsoft-status`: the user's link as they can see it (account, state, scopes, times, and
//! which API keys fetched their token lately), or their unfinished sign-in. Never a token.

use chrono::{DateTime, TimeDelta, Utc};
use serenity::all::{CommandDataOption, CreateCommand, UserId};

use crate::AppState;
use crate::discord::commands::{Answer, expect_no_options, invoker};
use crate::discord::error::CommandError;
use crate::discord::messages::{self, StatusView};
use crate::domain::DiscordUserId;
use crate::store::audit;
use crate::store::{flows, links};

/// The command's name.
pub const NAME: &str = "microsoft-status";

/// How far back the status looks for API keys that fetched the user's token.
const KEY_USE_WINDOW: TimeDelta = TimeDelta::days(7);

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
    let fetches = audit::fetches_for_subject(&state.store, &subject, now - KEY_USE_WINDOW).await?;

    let view = StatusView {
        link,
        pending_until,
        key_uses: key_uses(fetches),
    };
    Ok(Answer::Show(messages::status(&view)))
}

/// The API keys among the actors that fetched a token, by name, newest first as the store
/// returns them.
fn key_uses(fetches: Vec<(String, DateTime<Utc>)>) -> Vec<(String, DateTime<Utc>)> {
    fetches
        .into_iter()
        .filter_map(|(actor, at)| Some((actor.strip_prefix("key:")?.to_owned(), at)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn key_uses_name_the_keys_and_skip_other_actors() {
        let now = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let fetches = vec![
            ("key:reporting".to_owned(), now),
            ("discord:42".to_owned(), now - TimeDelta::minutes(1)),
            ("key:backup".to_owned(), now - TimeDelta::minutes(2)),
        ];

        let uses = key_uses(fetches);

        assert_eq!(
            uses,
            [
                ("reporting".to_owned(), now),
                ("backup".to_owned(), now - TimeDelta::minutes(2)),
            ]
        );
    }
}
