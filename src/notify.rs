//! The one way the core reaches chat. `linking` and `tokens` call a [`Notifier`]; the Discord
//! front door implements it, and tests record what would have been sent. Nothing in here knows
//! about Discord's types.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::domain::{Account, DiscordUserId, Secret};

/// What a user needs to finish signing in with a device code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CodePrompt {
    /// The short code the user types at the verification page.
    pub user_code: String,
    /// The page to open, exactly as Microsoft sent it.
    pub verification_uri: String,
    /// When the code stops working.
    pub expires_at: DateTime<Utc>,
    /// Microsoft's ready-made English instruction.
    pub message: String,
    /// The user already has (or had) a link, and this flow replaces it.
    pub relink: bool,
}

/// Where a code prompt was shown, so the outcome can replace it later.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CodeMessage {
    /// A direct message.
    Direct {
        /// The DM channel.
        channel_id: u64,
        /// The message holding the code.
        message_id: u64,
    },
    /// The private reply to the command, used when the user's DMs are closed. The token is
    /// the interaction's webhook token (valid for 15 minutes, like the code).
    Reply {
        /// Interaction webhook token.
        token: Secret,
    },
    /// Shown nowhere that can be edited (for example, the front door could not reach chat).
    Nowhere,
}

/// A handle on the interaction that started a flow, for the private-reply fallback.
#[derive(Clone, Debug)]
pub struct ReplyHandle {
    /// Interaction webhook token.
    pub token: Secret,
}

/// How a device flow ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FlowOutcome {
    /// The account is linked (or linked again).
    Linked {
        /// Who signed in.
        account: Account,
        /// A previous link was replaced or repaired.
        relinked: bool,
    },
    /// The user declined at the sign-in page.
    Declined,
    /// The code expired before the user finished.
    Expired,
    /// The tenant's Conditional Access policy blocked the sign-in (AADSTS53003).
    BlockedByPolicy,
    /// The app registration is misconfigured; an operator must fix it.
    Misconfigured,
    /// Something else ended the flow (an unrecognised code, a refused grant).
    Failed,
}

/// Why a user is told that their link needs attention.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Alert {
    /// Microsoft refused the refresh token for good; the user must link again.
    RelinkRequired {
        /// A plain-words reason, already fit to show the user.
        reason: String,
    },
}

/// A chat failure the core can log and move past.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// The user cannot be reached by direct message (Discord 50007).
    #[error("the user does not accept direct messages")]
    Unreachable,
    /// Chat answered with an error or could not be reached.
    #[error("chat request failed")]
    Failed(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// The core's view of chat.
#[async_trait]
pub trait Notifier: Send + Sync {
    /// Shows a device code to the user. `reply` is the command's own private reply, for when a
    /// direct message cannot be sent.
    async fn send_code(
        &self,
        user: DiscordUserId,
        prompt: &CodePrompt,
        reply: Option<&ReplyHandle>,
    ) -> Result<CodeMessage, NotifyError>;

    /// Replaces the code message with the flow's outcome.
    async fn update_code(
        &self,
        user: DiscordUserId,
        message: &CodeMessage,
        outcome: &FlowOutcome,
    ) -> Result<(), NotifyError>;

    /// Tells the user something needs their action.
    async fn alert(&self, user: DiscordUserId, alert: &Alert) -> Result<(), NotifyError>;
}

/// A notifier that reaches nobody, for tools and benchmarks that run the core without chat.
#[derive(Clone, Copy, Debug, Default)]
pub struct Discard;

#[async_trait]
impl Notifier for Discard {
    async fn send_code(
        &self,
        _user: DiscordUserId,
        _prompt: &CodePrompt,
        _reply: Option<&ReplyHandle>,
    ) -> Result<CodeMessage, NotifyError> {
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
