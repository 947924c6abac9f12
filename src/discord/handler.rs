//! The serenity event handler: registers the commands at READY and dispatches each slash command
//! by name to its module, turning the result into the command's private reply.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use serenity::all::{
    Command, CommandInteraction, Context, CreateInteractionResponse,
    CreateInteractionResponseMessage, EventHandler, GuildId, Interaction, Ready,
};
use serenity::http::Http;

use crate::AppState;
use crate::discord::commands::{self, Answer, link_microsoft, microsoft_status, unlink_microsoft};
use crate::discord::error::{CommandError, DiscordError};
use crate::discord::messages;
use crate::discord::notifier::{edit_reply, with_retries};

/// Holds the shared state as a field (not in serenity's TypeMap) and the HTTP client the
/// notifier also uses, so the application id learnt at READY serves both.
pub struct Handler {
    state: AppState,
    http: Arc<Http>,
}

impl Handler {
    /// A handler over `state`, answering through `http`.
    pub fn new(state: AppState, http: Arc<Http>) -> Self {
        Self { state, http }
    }

    /// Registers every command: in `DISCORD_GUILD_ID` (instant) or globally. A bulk overwrite,
    /// so registering again at each READY changes nothing.
    async fn register_commands(&self) {
        let http = self.http.as_ref();
        let (scope, registered) = match self.state.config.discord_guild_id {
            Some(guild) => {
                // Config refuses 0, the one id `GuildId::new` panics on.
                let guild = GuildId::new(guild);
                let put = with_retries("register_commands", || {
                    guild.set_commands(http, commands::all())
                });
                ("guild", put.await)
            }
            None => {
                let put = with_retries("register_commands", || {
                    Command::set_global_commands(http, commands::all())
                });
                ("global", put.await)
            }
        };
        match registered {
            Ok(commands) => tracing::info!(scope, count = commands.len(), "commands registered"),
            Err(err) => tracing::error!(scope, error = %err, "could not register the commands"),
        }
    }

    /// Acknowledges the command, runs it and replaces the acknowledgement with its answer.
    async fn dispatch(&self, interaction: &CommandInteraction) {
        let started = Instant::now();
        let command = interaction.data.name.as_str();
        let user_id = interaction.user.id.get();

        // Discord drops an interaction unanswered after 3 s, and asking Microsoft for a code
        // can take longer, so every command first defers its private reply.
        let defer = CreateInteractionResponseMessage::new().ephemeral(true);
        let deferred = interaction
            .create_response(self.http.as_ref(), CreateInteractionResponse::Defer(defer))
            .await;
        if let Err(err) = deferred {
            let err = DiscordError::from(err);
            tracing::warn!(user_id, command, error = %err, "could not acknowledge the command");
            return;
        }

        let answer = self.run(interaction).await.unwrap_or_else(|err| {
            log_failure(user_id, command, &err);
            Answer::Show(err.reply())
        });
        if let Answer::Show(message) = answer {
            if let Err(err) = edit_reply(&self.http, &interaction.token, &message).await {
                tracing::warn!(user_id, command, error = %err, "could not answer the command");
            }
        }
        let elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        tracing::debug!(user_id, command, elapsed_ms, "command completed");
    }

    /// Picks the command by name.
    async fn run(&self, interaction: &CommandInteraction) -> Result<Answer, CommandError> {
        let user = interaction.user.id;
        let options = interaction.data.options.as_slice();
        match interaction.data.name.as_str() {
            link_microsoft::NAME => {
                let input = link_microsoft::extract(user, &interaction.token, options)?;
                link_microsoft::run(&self.state, input).await
            }
            unlink_microsoft::NAME => {
                let input = unlink_microsoft::extract(user, options)?;
                unlink_microsoft::run(&self.state, input).await
            }
            microsoft_status::NAME => {
                let input = microsoft_status::extract(user, options)?;
                microsoft_status::run(&self.state, input).await
            }
            unknown => {
                tracing::warn!(user_id = user.get(), command = unknown, "unknown command");
                Ok(Answer::Show(messages::unknown_command()))
            }
        }
    }
}

#[async_trait]
impl EventHandler for Handler {
    async fn ready(&self, _ctx: Context, ready: Ready) {
        self.http.set_application_id(ready.application.id);
        tracing::info!(guilds = ready.guilds.len(), "discord bot ready");
        self.register_commands().await;
    }

    async fn interaction_create(&self, _ctx: Context, interaction: Interaction) {
        if let Interaction::Command(command) = interaction {
            self.http.set_application_id(command.application_id);
            self.dispatch(&command).await;
        }
    }
}

/// Logs a failed command once: bugs and operator problems as errors with the cause chain,
/// expected trouble as a warning.
fn log_failure(user_id: u64, command: &str, err: &CommandError) {
    let mut chain = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        chain.push_str(": ");
        chain.push_str(&cause.to_string());
        source = cause.source();
    }
    if err.is_bug() {
        tracing::error!(user_id, command, error = %chain, "command failed");
    } else {
        tracing::warn!(user_id, command, error = %chain, "command failed");
    }
}
