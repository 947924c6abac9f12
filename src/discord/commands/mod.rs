//! One module per slash command: its registration builder, a pure fn that turns the interaction
//! into plain input, and `run` over that input. Replies are texts from `messages`; sending them
//! is the handler's job.

pub mod link_microsoft;
pub mod microsoft_status;
pub mod unlink_microsoft;

use serenity::all::{CommandDataOption, CreateCommand, UserId};

use crate::discord::error::CommandError;
use crate::discord::messages::Message;
use crate::domain::DiscordUserId;

/// What a command leaves in its private reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// Replace the "thinking…" reply with this message.
    Show(Message),
    /// The reply already holds what the user needs (the code, when DMs are closed).
    Keep,
}

/// Every command the bot registers.
pub fn all() -> Vec<CreateCommand> {
    vec![
        link_microsoft::register(),
        unlink_microsoft::register(),
        microsoft_status::register(),
    ]
}

/// The invoking user as the core knows them.
fn invoker(user: UserId) -> Result<DiscordUserId, CommandError> {
    let user = DiscordUserId::new(user.get());
    user.to_db().map_err(|_| CommandError::InvalidUser)?;
    Ok(user)
}

/// None of the commands takes options; any means Discord holds an older registration.
fn expect_no_options(options: &[CommandDataOption]) -> Result<(), CommandError> {
    if options.is_empty() {
        Ok(())
    } else {
        Err(CommandError::UnexpectedOption)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use serenity::all::CommandDataOption;

    use super::*;

    /// Options as Discord sends them in `data.options`.
    pub(crate) fn options(json: serde_json::Value) -> Vec<CommandDataOption> {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn every_command_is_registered_once_with_a_description() {
        let names: Vec<String> = all()
            .iter()
            .map(|command| serde_json::to_value(command).unwrap())
            .map(|json| {
                assert!(!json["description"].as_str().unwrap().is_empty());
                json["name"].as_str().unwrap().to_owned()
            })
            .collect();

        assert_eq!(
            names,
            ["link-microsoft", "unlink-microsoft", "microsoft-status"]
        );
    }

    #[test]
    fn the_invoker_must_fit_the_database() {
        assert_eq!(
            invoker(UserId::new(80351110224678912)).unwrap(),
            DiscordUserId::new(80351110224678912)
        );
        assert!(matches!(
            invoker(UserId::new(u64::MAX)),
            Err(CommandError::InvalidUser)
        ));
    }

    #[test]
    fn options_are_refused() {
        let one = options(serde_json::json!([{"name": "user", "type": 3, "value": "x"}]));

        assert!(expect_no_options(&[]).is_ok());
        assert!(matches!(
            expect_no_options(&one),
            Err(CommandError::UnexpectedOption)
        ));
    }
}
