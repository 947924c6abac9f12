//! `/link-microsoft`: starts a device-code sign-in (or shows the still-valid code again). The
//! code goes to the user's DMs through the notifier, or into this command's private reply when
//! DMs are closed.

use serenity::all::{CommandDataOption, CreateCommand, UserId};

use crate::AppState;
use crate::discord::commands::{Answer, expect_no_options, invoker};
use crate::discord::error::CommandError;
use crate::discord::messages;
use crate::domain::{DiscordUserId, Secret};
use crate::notify::{CodeMessage, ReplyHandle};

/// The command's name.
pub const NAME: &str = "link-microsoft";

/// What the command needs.
#[derive(Clone, Debug)]
pub struct Input {
    /// Who ran it.
    pub user: DiscordUserId,
    /// The interaction's private reply, where the code goes when DMs are closed.
    pub reply: ReplyHandle,
}

/// The registration.
pub fn register() -> CreateCommand {
    CreateCommand::new(NAME)
        .description("Link your Microsoft account: I DM you a code to sign in with")
}

/// Reads the input from the interaction.
///
/// # Errors
/// [`CommandError::UnexpectedOption`] for any option, [`CommandError::InvalidUser`] for an id
/// the database cannot hold.
pub fn extract(
    user: UserId,
    token: &str,
    options: &[CommandDataOption],
) -> Result<Input, CommandError> {
    expect_no_options(options)?;
    Ok(Input {
        user: invoker(user)?,
        reply: ReplyHandle {
            token: Secret::new(token),
        },
    })
}

/// Starts the sign-in; the core shows the code through the notifier.
///
/// # Errors
/// Microsoft or the database failed, or the code could be shown nowhere.
// Limitation: a code shown again arrives in a new DM and only that one gets the outcome, so the
// older DM keeps the code; editing it would need the core to hand over the previous message.
pub async fn run(state: &AppState, input: Input) -> Result<Answer, CommandError> {
    let started = state.linking.start(input.user, Some(&input.reply)).await?;
    match started.message {
        CodeMessage::Direct { .. } => Ok(Answer::Show(messages::check_dms(
            &started.prompt,
            started.reused,
        ))),
        CodeMessage::Reply { .. } => Ok(Answer::Keep),
        CodeMessage::Nowhere => Err(CommandError::CodeNotShown),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discord::commands::tests::options;

    #[test]
    fn the_input_carries_the_user_and_the_reply_token() {
        let input = extract(UserId::new(42), "interaction-token", &[]).unwrap();

        assert_eq!(input.user, DiscordUserId::new(42));
        assert_eq!(input.reply.token.expose(), "interaction-token");
    }

    #[test]
    fn an_option_from_an_older_registration_is_refused() {
        let stale = options(serde_json::json!([{"name": "tenant", "type": 3, "value": "x"}]));

        assert!(matches!(
            extract(UserId::new(42), "t", &stale),
            Err(CommandError::UnexpectedOption)
        ));
    }
}
