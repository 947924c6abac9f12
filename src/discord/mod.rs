//! The Discord front door (serenity): slash commands, the DMs that show device codes and
//! outcomes, and the [`Notifier`] the core uses to reach users.

use std::sync::Arc;

use async_trait::async_trait;
use serenity::http::{Http, HttpBuilder};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::AppState;
use crate::config::Config;
use crate::domain::DiscordUserId;
use crate::notify::{
    Alert, CodeMessage, CodePrompt, FlowOutcome, Notifier, NotifyError, ReplyHandle,
};

/// serenity's HTTP client, pointed at `DISCORD_API_BASE`.
pub fn http_client(config: &Config) -> Arc<Http> {
    let mut builder = HttpBuilder::new(config.discord_token.expose());
    let base = config.discord_api_base.as_str().trim_end_matches('/');
    if base != "https://discord.com" {
        // serenity's rate limiter ignores the proxy setting, so it must be off for a proxy.
        builder = builder.proxy(base).ratelimiter_disabled(true);
    }
    Arc::new(builder.build())
}

/// Reaches users through Discord.
pub struct DiscordNotifier {
    http: Arc<Http>,
}

impl DiscordNotifier {
    /// A notifier sending through `http`.
    pub fn new(http: Arc<Http>) -> Self {
        Self { http }
    }
}

#[async_trait]
impl Notifier for DiscordNotifier {
    async fn send_code(
        &self,
        _user: DiscordUserId,
        _prompt: &CodePrompt,
        _reply: Option<&ReplyHandle>,
    ) -> Result<CodeMessage, NotifyError> {
        let _ = &self.http;
        Ok(CodeMessage::Nowhere)
    }

    async fn update_code(
        &self,
        _user: DiscordUserId,
        _message: &CodeMessage,
        _outcome: &FlowOutcome,
    ) -> Result<(), NotifyError> {
        Ok(())
    }

    async fn alert(&self, _user: DiscordUserId, _alert: &Alert) -> Result<(), NotifyError> {
        Ok(())
    }
}

/// Connects the bot; the returned task ends when `shutdown` is cancelled.
///
/// # Errors
/// Fails when the client cannot be built.
pub async fn start(
    state: AppState,
    http: Arc<Http>,
    shutdown: CancellationToken,
) -> anyhow::Result<JoinHandle<anyhow::Result<()>>> {
    let _ = (state, http);
    Ok(tokio::spawn(async move {
        shutdown.cancelled().await;
        Ok(())
    }))
}
