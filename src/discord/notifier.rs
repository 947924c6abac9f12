//! [`DiscordNotifier`]: the core's outcomes and alerts as DMs, with the command's private reply
//! as the fallback when DMs are closed. Also the REST helpers the handler shares: retries with
//! backoff, and editing an interaction's reply.

use std::future::Future;
use std::num::NonZeroU64;
use std::sync::Arc;

use async_trait::async_trait;
use serenity::all::{
    ApplicationId, ChannelId, CreateActionRow, CreateButton, CreateMessage,
    EditInteractionResponse, EditMessage, MessageId, UserId,
};
use serenity::builder::Builder as _;
use serenity::http::Http;

use crate::discord::error::DiscordError;
use crate::discord::messages::{self, DmProblem, Message};
use crate::domain::DiscordUserId;
use crate::notify::{
    Alert, CodeMessage, CodePrompt, FlowOutcome, Notifier, NotifyError, ReplyHandle,
};

/// Tries per Discord request, the first included.
const MAX_ATTEMPTS: u32 = 3;

/// Reaches users through Discord.
pub struct DiscordNotifier {
    http: Arc<Http>,
}

impl DiscordNotifier {
    /// A notifier sending through `http`, the client the bot's handler also uses.
    pub fn new(http: Arc<Http>) -> Self {
        Self { http }
    }

    /// Opens (or finds) the DM channel with `user` and posts `message` there.
    async fn send_dm(
        &self,
        user: DiscordUserId,
        message: &Message,
    ) -> Result<(ChannelId, MessageId), DiscordError> {
        let recipient = NonZeroU64::new(user.get())
            .map(UserId::from)
            .ok_or(DiscordError::Other { kind: "user id" })?;
        let http = self.http.as_ref();
        let channel = with_retries("open_dm", || recipient.create_dm_channel(http)).await?;
        let sent = with_retries("send_dm", || {
            channel.id.send_message(http, create_message(message))
        })
        .await?;
        Ok((channel.id, sent.id))
    }

    async fn edit_dm(
        &self,
        channel_id: u64,
        message_id: u64,
        message: &Message,
    ) -> Result<(), DiscordError> {
        let ids = NonZeroU64::new(channel_id).zip(NonZeroU64::new(message_id));
        let (channel, id) = ids.ok_or(DiscordError::Other { kind: "message id" })?;
        let (channel, id) = (ChannelId::from(channel), MessageId::from(id));
        let http = self.http.as_ref();
        with_retries("edit_dm", || {
            channel.edit_message(http, id, edit_message(message))
        })
        .await?;
        Ok(())
    }
}

#[async_trait]
impl Notifier for DiscordNotifier {
    async fn send_code(
        &self,
        user: DiscordUserId,
        prompt: &CodePrompt,
        reply: Option<&ReplyHandle>,
    ) -> Result<CodeMessage, NotifyError> {
        let err = match self.send_dm(user, &messages::code_prompt(prompt)).await {
            Ok((channel, message)) => {
                return Ok(CodeMessage::Direct {
                    channel_id: channel.get(),
                    message_id: message.get(),
                });
            }
            Err(err) => err,
        };
        let problem = if err.is_dms_closed() {
            tracing::debug!(user_id = %user, "direct messages closed");
            DmProblem::Closed
        } else {
            tracing::warn!(user_id = %user, error = %err, "could not send the code by DM");
            DmProblem::Failed
        };

        let Some(reply) = reply else {
            return Err(notify_error(err));
        };
        let message = messages::code_prompt_in_reply(prompt, problem);
        edit_reply(&self.http, reply.token.expose(), &message)
            .await
            .map_err(notify_error)?;
        Ok(CodeMessage::Reply {
            token: reply.token.clone(),
        })
    }

    async fn update_code(
        &self,
        user: DiscordUserId,
        message: &CodeMessage,
        outcome: &FlowOutcome,
    ) -> Result<(), NotifyError> {
        let text = messages::outcome(outcome);
        let edited = match message {
            CodeMessage::Direct {
                channel_id,
                message_id,
            } => self.edit_dm(*channel_id, *message_id, &text).await,
            CodeMessage::Reply { token } => edit_reply(&self.http, token.expose(), &text).await,
            // The user never saw a code, so there is nothing to replace.
            CodeMessage::Nowhere => return Ok(()),
        };
        edited.map_err(|err| {
            tracing::warn!(user_id = %user, error = %err, "could not show the sign-in outcome");
            notify_error(err)
        })
    }

    async fn alert(&self, user: DiscordUserId, alert: &Alert) -> Result<(), NotifyError> {
        let message = match alert {
            Alert::RelinkRequired { reason } => messages::relink_required(reason),
        };
        self.send_dm(user, &message)
            .await
            .map(|_| ())
            .map_err(|err| {
                tracing::warn!(user_id = %user, error = %err, "could not send the alert by DM");
                notify_error(err)
            })
    }
}

/// Replaces the interaction's original (private) reply with `message`.
///
/// # Errors
/// Discord refused or could not be reached, after retries.
pub(crate) async fn edit_reply(
    http: &Http,
    token: &str,
    message: &Message,
) -> Result<(), DiscordError> {
    ensure_application_id(http).await?;
    with_retries("edit_reply", || edit_response(message).execute(http, token)).await?;
    Ok(())
}

/// Interaction webhooks live under the application id, which READY announces. A reply edited
/// before READY (a flow finishing right after a restart) asks Discord for it instead.
async fn ensure_application_id(http: &Http) -> Result<ApplicationId, DiscordError> {
    if let Some(id) = http.application_id() {
        return Ok(id);
    }
    let info = with_retries("application_info", || http.get_current_application_info()).await?;
    http.set_application_id(info.id);
    Ok(info.id)
}

/// Sends a request up to [`MAX_ATTEMPTS`] times while Discord fails in a way that waiting may
/// cure (5xx, 429, network), logging each retry with Discord's status and code.
///
/// A message POST that failed with a 5xx may still have been stored, so a retry can, rarely,
/// deliver a message twice; Discord's guidance is to retry anyway.
///
/// # Errors
/// The last failure.
pub(crate) async fn with_retries<T, F, Fut>(
    request: &'static str,
    mut send: F,
) -> Result<T, DiscordError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = serenity::Result<T>>,
{
    let mut attempt = 1;
    loop {
        let err = match send().await {
            Ok(value) => return Ok(value),
            Err(err) => DiscordError::from(err),
        };
        match err.retry_delay(attempt) {
            Some(delay) if attempt < MAX_ATTEMPTS => {
                tracing::warn!(request, attempt, error = %err, "discord request failed; retrying");
                tokio::time::sleep(delay).await;
                attempt += 1;
            }
            Some(_) | None => return Err(err),
        }
    }
}

fn notify_error(err: DiscordError) -> NotifyError {
    if err.is_dms_closed() {
        NotifyError::Unreachable
    } else {
        NotifyError::Failed(Box::new(err))
    }
}

fn buttons(message: &Message) -> Vec<CreateActionRow> {
    let button = message
        .button
        .as_ref()
        .map(|b| CreateButton::new_link(&b.url).label(&b.label));
    button
        .map(|b| vec![CreateActionRow::Buttons(vec![b])])
        .unwrap_or_default()
}

fn create_message(message: &Message) -> CreateMessage {
    CreateMessage::new()
        .content(&message.content)
        .components(buttons(message))
}

/// An edit that also drops a button the new text no longer has.
fn edit_message(message: &Message) -> EditMessage {
    EditMessage::new()
        .content(&message.content)
        .components(buttons(message))
}

fn edit_response(message: &Message) -> EditInteractionResponse {
    EditInteractionResponse::new()
        .content(&message.content)
        .components(buttons(message))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;
    use crate::discord::messages::LinkButton;

    #[test]
    fn a_message_with_a_button_becomes_one_link_button() {
        let message = Message {
            content: "hi".to_owned(),
            button: Some(LinkButton {
                label: "Open".to_owned(),
                url: "https://microsoft.com/devicelogin".to_owned(),
            }),
        };

        let json = serde_json::to_value(create_message(&message)).unwrap();

        assert_eq!(json["content"], "hi");
        let button = &json["components"][0]["components"][0];
        assert_eq!(button["url"], "https://microsoft.com/devicelogin");
        assert_eq!(button["style"], 5);
    }

    #[test]
    fn an_edit_without_a_button_clears_the_old_one() {
        let message = Message {
            content: "done".to_owned(),
            button: None,
        };

        let json = serde_json::to_value(edit_message(&message)).unwrap();

        assert_eq!(json["components"], serde_json::json!([]));
    }

    #[tokio::test]
    async fn refusals_are_not_retried() {
        let tries = AtomicU32::new(0);

        let result: Result<(), _> = with_retries("test", || {
            tries.fetch_add(1, Ordering::Relaxed);
            async { Err(serenity::Error::Other("refused")) }
        })
        .await;

        assert!(result.is_err());
        assert_eq!(tries.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn network_failures_are_tried_three_times() {
        let tries = AtomicU32::new(0);

        let result: Result<(), _> = with_retries("test", || {
            tries.fetch_add(1, Ordering::Relaxed);
            async {
                // Nothing listens on port 1, so the connection is refused.
                let refused = reqwest::get("http://127.0.0.1:1/").await.unwrap_err();
                Err(serenity::Error::Http(serenity::http::HttpError::Request(
                    refused,
                )))
            }
        })
        .await;

        assert_eq!(result, Err(DiscordError::Unreachable));
        assert_eq!(tries.load(Ordering::Relaxed), MAX_ATTEMPTS);
    }
}
