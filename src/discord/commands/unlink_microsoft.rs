//! `/unlink-microsoft`: erases the user's link and tokens (and any unfinished sign-in), records
//! it in the audit log, and says how to withdraw the app's access at Microsoft too.

use chrono::Utc;
use serenity::all::{CommandDataOption, CreateCommand, UserId};

use crate::AppState;
use crate::discord::commands::{Answer, expect_no_options, invoker};
use crate::discord::error::CommandError;
use crate::discord::messages;
use crate::domain::DiscordUserId;
use crate::store::audit::{self, AuditEvent};
use crate::store::{flows, links};

/// The command's name.
pub const NAME: &str = "unlink-microsoft";

/// The audit action of an unlink (the API's `DELETE` writes the same).
const ACTION: &str = "link.delete";

/// What the command needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Input {
    /// Who ran it, and whose link goes.
    pub user: DiscordUserId,
}

/// The registration.
pub fn register() -> CreateCommand {
    CreateCommand::new(NAME)
        .description("Remove your linked Microsoft account and erase its saved tokens")
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

/// Deletes the link and audits it.
///
/// # Errors
/// The database failed before anything was deleted.
pub async fn run(state: &AppState, input: Input) -> Result<Answer, CommandError> {
    let user = input.user;
    let flow = flows::find(&state.store, user).await?;
    let was_pending = flow.is_some_and(|f| f.outcome.is_none() && f.expires_at > Utc::now());

    let was_linked = links::delete(&state.store, user).await?;

    if was_linked {
        tracing::info!(user_id = %user, "account unlinked");
        let event = AuditEvent {
            at: Utc::now(),
            actor: format!("discord:{user}"),
            action: ACTION.to_owned(),
            subject: user.to_string(),
            detail: None,
            outcome: "ok".to_owned(),
        };
        // The link is gone either way; the user must hear so even if the record fails.
        if let Err(err) = audit::record(&state.store, &event).await {
            tracing::error!(user_id = %user, error = %err, "could not audit an unlink");
        }
    }
    Ok(Answer::Show(messages::unlinked(was_linked, was_pending)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discord::commands::tests::options;

    #[test]
    fn the_input_is_the_invoking_user() {
        assert_eq!(
            extract(UserId::new(7), &[]).unwrap(),
            Input {
                user: DiscordUserId::new(7)
            }
        );
    }

    #[test]
    fn options_are_refused() {
        let stale = options(serde_json::json!([{"name": "user", "type": 6, "value": "1"}]));

        assert!(extract(UserId::new(7), &stale).is_err());
    }
}
