//! Every text the bot shows in Discord, kept apart from the code that sends it so the wording can
//! be read, changed and tested in one place. Functions here are pure: no I/O, no serenity types.
//! Times are Discord timestamps (`<t:UNIX:R>`), which each reader's client shows in their locale.

use chrono::{DateTime, Utc};

use crate::domain::LinkState;
use crate::notify::{CodePrompt, FlowOutcome};
use crate::store::links::LinkStatus;

/// The command that links (or repairs) an account, as users type it.
pub const LINK_COMMAND: &str = "/link-microsoft";
/// The command that removes a link.
pub const UNLINK_COMMAND: &str = "/unlink-microsoft";
/// The command that shows a link.
pub const STATUS_COMMAND: &str = "/microsoft-status";

/// Where users of work or school accounts remove an app's access.
const MY_APPS_URL: &str = "https://myapps.microsoft.com";
/// Where users of personal accounts remove an app's access.
const CONSENT_URL: &str = "https://account.live.com/consent/Manage";

/// API keys named in a status; more would risk Discord's 2000-character limit.
const MAX_KEYS_SHOWN: usize = 10;

/// A message: Markdown text and at most one link button under it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// Markdown content, under Discord's 2000-character limit.
    pub content: String,
    /// A button that opens a web page.
    pub button: Option<LinkButton>,
}

/// A button that opens `url`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkButton {
    /// The button's text.
    pub label: String,
    /// The page it opens.
    pub url: String,
}

impl Message {
    fn text(content: String) -> Self {
        Self {
            content,
            button: None,
        }
    }
}

/// Why a device code is shown in the command's private reply instead of a DM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DmProblem {
    /// The user does not accept DMs from this server's members (Discord 50007).
    Closed,
    /// Discord failed or could not be reached.
    Failed,
}

/// What a user's link looks like, gathered for [`status`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusView {
    /// The link, if there is one.
    pub link: Option<LinkStatus>,
    /// When the pending sign-in's code expires, if one is open.
    pub pending_until: Option<DateTime<Utc>>,
    /// API keys that fetched the user's token recently, with the last time each did.
    pub key_uses: Vec<(String, DateTime<Utc>)>,
}

/// The DM that shows a device code: the code large and easy to copy, a button to the sign-in
/// page, the expiry, and what happens next.
pub fn code_prompt(prompt: &CodePrompt) -> Message {
    let title = if prompt.relink {
        "Re-link your Microsoft account"
    } else {
        "Link your Microsoft account"
    };
    let mut content = format!(
        "**{title}**\n\
         1. Open the Microsoft sign-in page with the button below.\n\
         2. Enter this code:\n\
         # `{code}`\n\
         3. Sign in with the account you want to link.\n\n\
         The code expires {expiry}. ",
        code = prompt.user_code,
        expiry = relative(prompt.expires_at),
    );
    if prompt.relink {
        content.push_str("Signing in replaces the account linked to you now. ");
    }
    content.push_str(
        "When you are done, this message changes to show the linked account, and this \
         server's scripts can then act with it for you. Only sign in if you trust this server.",
    );
    Message {
        content,
        button: Some(LinkButton {
            label: "Open the sign-in page".to_owned(),
            url: prompt.verification_uri.clone(),
        }),
    }
}

/// The code prompt in the command's private reply, saying why no DM came.
pub fn code_prompt_in_reply(prompt: &CodePrompt, problem: DmProblem) -> Message {
    let why = match problem {
        DmProblem::Closed => {
            "I could not DM you: your direct messages are closed for this server (turn on \
             **Direct Messages** in the server's Privacy Settings to get them next time)."
        }
        DmProblem::Failed => "I could not DM you just now.",
    };
    let mut message = code_prompt(prompt);
    message.content = format!(
        "{why} Here is your code instead; only you can see this reply, and it will show the \
         result.\n\n{}\nRunning {LINK_COMMAND} again before then shows this same code.",
        message.content
    );
    message
}

/// The command's reply once the code is in the user's DMs.
pub fn check_dms(prompt: &CodePrompt, reused: bool) -> Message {
    let lead = if reused {
        "Your sign-in code from before is still valid, so I sent the same code to your DMs again."
    } else if prompt.relink {
        "You already have a Microsoft account linked; signing in again replaces it. I sent you \
         a code in your DMs."
    } else {
        "Check your DMs: I sent you a code to sign in with Microsoft."
    };
    Message::text(format!(
        "{lead} It expires {}.",
        relative(prompt.expires_at)
    ))
}

/// What replaces the code prompt when the sign-in ends.
pub fn outcome(outcome: &FlowOutcome) -> Message {
    let content = match outcome {
        FlowOutcome::Linked { account, relinked } => {
            let verb = if *relinked { "Re-linked" } else { "Linked" };
            format!(
                "✅ {verb} as **{}** ({}).\n\
                 This server's scripts can now get Microsoft tokens for you. See the link with \
                 {STATUS_COMMAND}; remove it any time with {UNLINK_COMMAND}.",
                escape(&account.display_name),
                escape(&account.username),
            )
        }
        FlowOutcome::Declined => format!(
            "The sign-in was declined, so nothing was linked. Run {LINK_COMMAND} to try again."
        ),
        FlowOutcome::Expired => format!(
            "⌛ This code expired before the sign-in finished, so nothing was linked. Run \
             {LINK_COMMAND} to get a new code."
        ),
        FlowOutcome::BlockedByPolicy => format!(
            "⛔ Your organisation's access policy blocked this sign-in, so nothing was linked. \
             Ask your IT department to allow this app, or run {LINK_COMMAND} with another \
             account."
        ),
        FlowOutcome::Misconfigured => "⚠️ The sign-in failed because this bot's Microsoft app \
             registration is set up wrongly, so nothing was linked. Please tell the server's \
             admins; it will work again once they fix it."
            .to_owned(),
        FlowOutcome::Failed => format!(
            "The sign-in could not be completed, so nothing was linked. Run {LINK_COMMAND} to \
             try again."
        ),
    };
    Message::text(content)
}

/// The one DM sent when a link needs a new sign-in. `reason` is already in plain words.
pub fn relink_required(reason: &str) -> Message {
    Message::text(format!(
        "⚠️ **Your Microsoft account link needs a new sign-in.**\n\
         Microsoft no longer accepts it: {reason}. Until you sign in again, this server's \
         scripts cannot act with your account.\n\
         Run {LINK_COMMAND} to link it again."
    ))
}

/// The reply to `/unlink-microsoft`.
pub fn unlinked(was_linked: bool, was_pending: bool) -> Message {
    if !was_linked {
        let content = if was_pending {
            format!(
                "You had no Microsoft account linked. Your unfinished sign-in is cancelled: the \
                 code I sent you will not link anything now. Run {LINK_COMMAND} to start again."
            )
        } else {
            "You have no Microsoft account linked, so there is nothing to remove.".to_owned()
        };
        return Message::text(content);
    }
    Message::text(format!(
        "Your Microsoft account link is removed and its saved tokens are erased; this server's \
         scripts can no longer act with your account.\n\
         To withdraw this app's access on Microsoft's side too, remove it at <{MY_APPS_URL}> \
         (work or school account) or <{CONSENT_URL}> (personal account)."
    ))
}

/// The reply to `/microsoft-status`. Never shows a token.
pub fn status(view: &StatusView) -> Message {
    let pending = view.pending_until.map(|until| {
        format!(
            "⏳ Sign-in pending: use the code I sent you before it expires {}.",
            relative(until)
        )
    });
    let Some(link) = &view.link else {
        let content = match pending {
            Some(pending) => format!("You have no Microsoft account linked yet.\n{pending}"),
            None => {
                format!("You have no Microsoft account linked. Run {LINK_COMMAND} to link one.")
            }
        };
        return Message::text(content);
    };

    let state = match link.state {
        LinkState::Active => "✅ active".to_owned(),
        LinkState::RelinkRequired => {
            format!("⚠️ needs a new sign-in: run {LINK_COMMAND} to repair the link")
        }
        LinkState::Pending => "⏳ waiting for the sign-in to finish".to_owned(),
    };
    let scopes = if link.scopes.trim().is_empty() {
        "none".to_owned()
    } else {
        let names: Vec<String> = link
            .scopes
            .split_whitespace()
            .map(|s| format!("`{s}`"))
            .collect();
        names.join(", ")
    };
    let keys = if view.key_uses.is_empty() {
        "none".to_owned()
    } else {
        let mut uses: Vec<String> = view
            .key_uses
            .iter()
            .take(MAX_KEYS_SHOWN)
            .map(|(name, at)| format!("`{}` (last {})", name.replace('`', "'"), relative(*at)))
            .collect();
        let more = view.key_uses.len().saturating_sub(MAX_KEYS_SHOWN);
        if more > 0 {
            uses.push(format!("and {more} more"));
        }
        uses.join(", ")
    };
    let mut lines = vec![
        "**Your Microsoft account link**".to_owned(),
        format!(
            "Account: **{}** ({})",
            escape(&link.account.display_name),
            escape(&link.account.username)
        ),
        format!("Tenant: `{}`", link.account.tenant_id.replace('`', "'")),
        format!("State: {state}"),
        format!("Scopes: {scopes}"),
        format!(
            "Linked {}; last refreshed {}",
            relative(link.linked_at),
            relative(link.last_refresh_at)
        ),
        format!("API keys that fetched your token in the last 7 days: {keys}"),
    ];
    lines.extend(pending);
    Message::text(lines.join("\n"))
}

/// The reply to a command this version does not know.
pub fn unknown_command() -> Message {
    Message::text(
        "I do not know that command. The bot may have just been updated; try again in a minute."
            .to_owned(),
    )
}

/// The reply when the command arrived in a shape this version does not expect.
pub fn stale_command() -> Message {
    Message::text(
        "This command changed since Discord last loaded it. Try again in a minute.".to_owned(),
    )
}

/// The reply when Microsoft is busy or unreachable.
pub fn microsoft_unavailable() -> Message {
    Message::text(
        "Microsoft's sign-in service did not answer. Nothing changed; try again in a minute."
            .to_owned(),
    )
}

/// The reply when Microsoft refuses to start a sign-in because of the app registration.
pub fn misconfigured() -> Message {
    Message::text(
        "Microsoft refused to start a sign-in because this bot's app registration is set up \
         wrongly. Please tell the server's admins."
            .to_owned(),
    )
}

/// The reply when Microsoft refuses to start a sign-in for another reason.
pub fn microsoft_refused() -> Message {
    Message::text(
        "Microsoft refused to start a sign-in. Nothing changed; try again later, and tell the \
         server's admins if it keeps happening."
            .to_owned(),
    )
}

/// The reply when the code could be shown neither by DM nor here.
pub fn code_not_shown() -> Message {
    Message::text(format!(
        "I could not show you a sign-in code: Discord did not accept my messages. Try \
         {LINK_COMMAND} again in a minute."
    ))
}

/// The reply to a failure on the bot's side.
pub fn internal_error() -> Message {
    Message::text(
        "Something went wrong on my side. Nothing changed; try again later, and tell the \
         server's admins if it keeps happening."
            .to_owned(),
    )
}

/// `<t:UNIX:R>`: "in 15 minutes", "3 days ago", in the reader's language.
pub fn relative(at: DateTime<Utc>) -> String {
    format!("<t:{}:R>", at.timestamp())
}

/// Makes `text` show literally: Markdown marks and mentions are escaped, line breaks flattened.
pub fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' | '*' | '_' | '~' | '`' | '|' | '>' | '<' | '[' | ']' | '(' | ')' | '#' | '@' => {
                escaped.push('\\');
                escaped.push(c);
            }
            '\n' | '\r' => escaped.push(' '),
            c => escaped.push(c),
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    use chrono::TimeDelta;

    use super::*;
    use crate::domain::{Account, DiscordUserId};

    fn prompt(relink: bool) -> CodePrompt {
        CodePrompt {
            user_code: "FQK5HW3UF".to_owned(),
            verification_uri: "https://microsoft.com/devicelogin".to_owned(),
            expires_at: DateTime::from_timestamp(1_700_000_900, 0).unwrap(),
            message: "To sign in, use a web browser…".to_owned(),
            relink,
        }
    }

    fn account() -> Account {
        Account {
            tenant_id: "72f988bf-86f1-41af-91ab-2d7cd011db47".to_owned(),
            object_id: "oid".to_owned(),
            username: "ada@contoso.example".to_owned(),
            display_name: "Ada *Countess* Lovelace".to_owned(),
        }
    }

    fn link(state: LinkState) -> LinkStatus {
        let at = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        LinkStatus {
            user: DiscordUserId::new(42),
            account: account(),
            scopes: "User.Read offline_access".to_owned(),
            state,
            access_expires_at: at + TimeDelta::hours(1),
            linked_at: at,
            last_refresh_at: at + TimeDelta::minutes(30),
            last_used_at: None,
            next_refresh_at: at,
            transient_failures: 0,
            last_error: None,
            alerted_at: None,
        }
    }

    #[test]
    fn the_code_prompt_shows_the_code_large_a_button_and_the_expiry() {
        let message = code_prompt(&prompt(false));

        assert!(
            message.content.contains("# `FQK5HW3UF`"),
            "{}",
            message.content
        );
        assert!(message.content.contains("<t:1700000900:R>"));
        assert!(message.content.starts_with("**Link your"));
        let button = message.button.unwrap();
        assert_eq!(button.url, "https://microsoft.com/devicelogin");
        assert!(message.content.len() < 2000);
    }

    #[test]
    fn a_relink_prompt_says_it_replaces_the_current_link() {
        let message = code_prompt(&prompt(true));

        assert!(message.content.starts_with("**Re-link"));
        assert!(message.content.contains("replaces"));
    }

    #[test]
    fn the_reply_fallback_says_why_no_dm_came() {
        let closed = code_prompt_in_reply(&prompt(false), DmProblem::Closed);
        let failed = code_prompt_in_reply(&prompt(false), DmProblem::Failed);

        assert!(closed.content.contains("direct messages are closed"));
        assert!(!failed.content.contains("closed"));
        for message in [closed, failed] {
            assert!(message.content.contains("`FQK5HW3UF`"));
            assert!(message.content.contains("only you can see"));
            assert!(message.button.is_some());
            assert!(message.content.len() < 2000);
        }
    }

    #[test]
    fn the_command_reply_says_whether_the_code_is_new_reused_or_a_relink() {
        let new = check_dms(&prompt(false), false).content;
        let reused = check_dms(&prompt(false), true).content;
        let relink = check_dms(&prompt(true), false).content;

        assert!(new.contains("Check your DMs"));
        assert!(reused.contains("same code"));
        assert!(relink.contains("replaces"));
        for text in [new, reused, relink] {
            assert!(!text.contains("FQK5HW3UF"), "the code stays in the DM");
            assert!(text.contains("<t:1700000900:R>"));
        }
    }

    #[test]
    fn every_outcome_has_plain_words() {
        let linked = FlowOutcome::Linked {
            account: account(),
            relinked: false,
        };
        let relinked = FlowOutcome::Linked {
            account: account(),
            relinked: true,
        };

        let linked = outcome(&linked).content;
        assert!(
            linked.starts_with("✅ Linked as **Ada \\*Countess\\* Lovelace**"),
            "{linked}"
        );
        assert!(linked.contains("(ada\\@contoso.example)"));
        assert!(outcome(&relinked).content.contains("Re-linked as"));
        assert!(outcome(&FlowOutcome::Declined).content.contains("declined"));
        let expired = outcome(&FlowOutcome::Expired).content;
        assert!(expired.contains("expired") && expired.contains(LINK_COMMAND));
        assert!(
            outcome(&FlowOutcome::BlockedByPolicy)
                .content
                .contains("access policy")
        );
        assert!(
            outcome(&FlowOutcome::Misconfigured)
                .content
                .contains("admins")
        );
        assert!(outcome(&FlowOutcome::Failed).content.contains("try again"));
        assert!(outcome(&FlowOutcome::Failed).button.is_none());
    }

    #[test]
    fn the_relink_alert_gives_the_reason_and_the_command() {
        let message = relink_required("the saved sign-in was revoked");

        assert!(message.content.contains("the saved sign-in was revoked"));
        assert!(message.content.contains(LINK_COMMAND));
    }

    #[test]
    fn unlinking_explains_how_to_withdraw_access_at_microsoft() {
        let removed = unlinked(true, false).content;

        assert!(removed.contains(MY_APPS_URL) && removed.contains(CONSENT_URL));
        assert!(unlinked(false, false).content.contains("nothing to remove"));
        assert!(unlinked(false, true).content.contains("cancelled"));
    }

    #[test]
    fn the_status_shows_the_account_state_scopes_times_and_key_uses() {
        let used = DateTime::from_timestamp(1_700_000_500, 0).unwrap();
        let view = StatusView {
            link: Some(link(LinkState::Active)),
            pending_until: None,
            key_uses: vec![("reporting".to_owned(), used)],
        };

        let text = status(&view).content;

        assert!(text.contains("**Ada \\*Countess\\* Lovelace** (ada\\@contoso.example)"));
        assert!(text.contains("`72f988bf-86f1-41af-91ab-2d7cd011db47`"));
        assert!(text.contains("✅ active"));
        assert!(text.contains("`User.Read`, `offline_access`"));
        assert!(text.contains("Linked <t:1700000000:R>; last refreshed <t:1700001800:R>"));
        assert!(text.contains("`reporting` (last <t:1700000500:R>)"));
    }

    #[test]
    fn the_status_names_at_most_ten_keys() {
        let used = DateTime::from_timestamp(1_700_000_500, 0).unwrap();
        let view = StatusView {
            link: Some(link(LinkState::Active)),
            pending_until: None,
            key_uses: (0..40).map(|i| (format!("key-{i:02}"), used)).collect(),
        };

        let text = status(&view).content;

        assert!(text.contains("`key-09`") && !text.contains("`key-10`"));
        assert!(text.contains("and 30 more"));
        assert!(text.len() < 2000);
    }

    #[test]
    fn the_status_tells_a_broken_link_to_run_the_link_command() {
        let view = StatusView {
            link: Some(link(LinkState::RelinkRequired)),
            pending_until: None,
            key_uses: Vec::new(),
        };

        let text = status(&view).content;

        assert!(text.contains("needs a new sign-in") && text.contains(LINK_COMMAND));
        assert!(text.contains("last 7 days: none"));
    }

    #[test]
    fn the_status_without_a_link_says_so_and_shows_a_pending_sign_in() {
        let until = DateTime::from_timestamp(1_700_000_900, 0).unwrap();
        let none = StatusView {
            link: None,
            pending_until: None,
            key_uses: Vec::new(),
        };
        let pending = StatusView {
            pending_until: Some(until),
            ..none.clone()
        };

        assert!(
            status(&none)
                .content
                .contains("no Microsoft account linked")
        );
        let pending = status(&pending).content;
        assert!(pending.contains("Sign-in pending") && pending.contains("<t:1700000900:R>"));
    }

    #[test]
    fn escaping_keeps_names_literal() {
        assert_eq!(escape("a_b*c`d"), "a\\_b\\*c\\`d");
        assert_eq!(escape("@everyone"), "\\@everyone");
        assert_eq!(escape("two\nlines"), "two lines");
        assert_eq!(escape("Zoë"), "Zoë");
    }

    #[test]
    fn error_replies_are_distinct_sentences() {
        let texts = [
            unknown_command(),
            stale_command(),
            microsoft_unavailable(),
            misconfigured(),
            microsoft_refused(),
            code_not_shown(),
            internal_error(),
        ];
        for (i, a) in texts.iter().enumerate() {
            assert!(a.content.ends_with('.'));
            for b in &texts[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }
}
