//! The Discord front door end to end: the real `App` against the fake Discord (gateway and REST)
//! and the fake Microsoft. Every wait is on a recorded fake call, bounded by `PATIENCE`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{TimeDelta, Utc};
use linkbot::domain::{DiscordUserId, LinkState};
use linkbot::store::api_keys::{self, Role};
use linkbot::store::{audit, links};
use serde_json::Value;

use crate::logs::{Captured, assert_no_secrets};
use crate::support::PATIENCE;
use crate::support::app::{TestApp, spawn_app, spawn_app_with};
use crate::support::discord::{FakeDiscord, InvokedInteraction, RecordedCall, StoredMessage};
use crate::support::microsoft::{FakeMicrosoft, FakeUser};

const USER: u64 = 80351110224678912;

/// What the fake Microsoft sends as `verification_uri`.
const VERIFICATION_URI: &str = "https://microsoft.com/devicelogin";

/// Interaction response flag: only the invoking user sees the message.
const EPHEMERAL: u64 = 64;

fn user() -> DiscordUserId {
    DiscordUserId::new(USER)
}

/// Waits for the first fake Discord call matching `pred`, failing the test after `PATIENCE`.
async fn call(discord: &FakeDiscord, pred: impl Fn(&RecordedCall) -> bool) -> RecordedCall {
    tokio::time::timeout(PATIENCE, discord.wait_for_call(pred))
        .await
        .expect("the expected Discord call came in time")
}

/// An edit of the interaction's private reply whose content contains `text`.
fn reply_edit_with(token: &str, text: &str) -> impl Fn(&RecordedCall) -> bool {
    let path = format!(
        "/api/v10/webhooks/{}/{token}/messages/@original",
        FakeDiscord::APPLICATION_ID
    );
    let text = text.to_owned();
    move |c| c.method == "PATCH" && c.path == path && content_of(c).contains(&text)
}

/// An edit of one channel message whose content contains `text`.
fn message_edit_with(message: &StoredMessage, text: &str) -> impl Fn(&RecordedCall) -> bool {
    let path = format!(
        "/api/v10/channels/{}/messages/{}",
        message.channel_id, message.id
    );
    let text = text.to_owned();
    move |c| c.method == "PATCH" && c.path == path && content_of(c).contains(&text)
}

/// A message posted to `channel_id` whose content contains `text`.
fn post_with(channel_id: u64, text: &str) -> impl Fn(&RecordedCall) -> bool {
    let path = format!("/api/v10/channels/{channel_id}/messages");
    let text = text.to_owned();
    move |c| c.method == "POST" && c.path == path && content_of(c).contains(&text)
}

fn content_of(call: &RecordedCall) -> &str {
    call.body["content"].as_str().unwrap_or_default()
}

/// Runs a command and waits until its private reply holds `text`; returns the reply.
async fn run_command(app: &TestApp, command: &str, text: &str) -> (InvokedInteraction, String) {
    let interaction = app.discord.invoke(command, USER, Value::Null).await;
    call(&app.discord, reply_edit_with(&interaction.token, text)).await;
    let reply = app
        .discord
        .original_response(&interaction.token)
        .expect("the command has a reply");
    assert_ne!(reply.flags & EPHEMERAL, 0, "the reply is private");
    (interaction, reply.content)
}

/// Runs `/link-microsoft` with DMs open; returns the DM holding the code, and the code.
async fn link_command(app: &TestApp, reply_text: &str) -> (StoredMessage, String) {
    let (_, reply) = run_command(app, "link-microsoft", reply_text).await;
    assert!(
        !reply.contains('`'),
        "the code stays out of the reply: {reply}"
    );
    let dm = app
        .discord
        .dm_channel_of(USER)
        .expect("a DM channel was opened");
    let message = app.discord.messages_in(dm).pop().expect("a DM was sent");
    let code = app
        .microsoft
        .issued_user_codes()
        .pop()
        .expect("a code was issued");
    (message, code)
}

/// Links `who` through the commands and waits until the DM says so.
async fn link_through_discord(app: &TestApp, who: &FakeUser) -> StoredMessage {
    let (message, code) = link_command(app, "Check your DMs").await;
    app.microsoft.approve(&code, who);
    call(&app.discord, message_edit_with(&message, "Linked as")).await;
    message
}

fn button_urls(message: &StoredMessage) -> Vec<String> {
    let rows = message.components.as_array().cloned().unwrap_or_default();
    rows.iter()
        .flat_map(|row| row["components"].as_array().cloned().unwrap_or_default())
        .filter(|button| button["style"] == 5)
        .filter_map(|button| button["url"].as_str().map(str::to_owned))
        .collect()
}

fn devicecode_requests(microsoft: &FakeMicrosoft) -> usize {
    let requests = microsoft.requests();
    let to_devicecode = requests.iter().filter(|r| r.path.ends_with("/devicecode"));
    to_devicecode.count()
}

#[tokio::test]
async fn linking_through_discord_dms_the_code_then_edits_that_dm_to_the_account() {
    let app = spawn_app().await;
    let ada = FakeUser::entra("ada lovelace");

    let commands = tokio::time::timeout(PATIENCE, app.discord.wait_commands(3))
        .await
        .expect("commands registered");
    let asked = Instant::now();
    let interaction = app
        .discord
        .invoke("link-microsoft", USER, Value::Null)
        .await;
    let callback_path = format!(
        "/api/v10/interactions/{}/{}/callback",
        interaction.id, interaction.token
    );
    let callback = call(&app.discord, |c| c.path == callback_path).await;
    call(
        &app.discord,
        reply_edit_with(&interaction.token, "Check your DMs"),
    )
    .await;
    let dm = app.discord.dm_channel_of(USER).expect("a DM channel");
    let prompt = app.discord.messages_in(dm);
    let code = app.microsoft.issued_user_codes().pop().expect("a code");
    app.microsoft.approve(&code, &ada);
    call(&app.discord, message_edit_with(&prompt[0], "Linked as")).await;
    let (_, status) = run_command(&app, "microsoft-status", "Your Microsoft account").await;

    // Registered in the guild, answered privately within Discord's 3 seconds.
    let mut names: Vec<&str> = commands.iter().filter_map(|c| c["name"].as_str()).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        ["link-microsoft", "microsoft-status", "unlink-microsoft"]
    );
    let guild = FakeDiscord::GUILD_ID.to_string();
    assert!(commands.iter().all(|c| c["guild_id"] == guild.as_str()));
    assert!(callback.at.duration_since(asked) < Duration::from_secs(3));
    assert_eq!(callback.body["type"], 5);
    assert_eq!(callback.body["data"]["flags"], EPHEMERAL);
    // One DM: the code large, a button to the sign-in page, a relative expiry.
    assert_eq!(prompt.len(), 1);
    assert!(prompt[0].content.contains(&format!("# `{code}`")));
    assert!(prompt[0].content.contains(":R>"));
    assert_eq!(button_urls(&prompt[0]), [VERIFICATION_URI]);
    // The same DM now names the account, and its button is gone.
    let linked = app.discord.messages_in(dm);
    assert_eq!(linked.len(), 1);
    assert_eq!(linked[0].id, prompt[0].id);
    assert!(
        linked[0].content.contains("Linked as **Ada Lovelace**"),
        "{}",
        linked[0].content
    );
    assert!(!linked[0].content.contains(&code));
    assert!(button_urls(&linked[0]).is_empty());
    // The status shows the account and nothing secret.
    assert!(status.contains("Ada Lovelace"), "{status}");
    assert!(status.contains(&ada.tenant_id));
    assert!(status.contains("active"));
    for token in app.microsoft.issued_access_tokens() {
        assert!(!status.contains(&token));
    }
    app.stop().await;
}

#[tokio::test]
async fn a_declined_sign_in_edits_the_dm_to_say_so() {
    let app = spawn_app().await;

    let (message, code) = link_command(&app, "Check your DMs").await;
    app.microsoft.decline(&code);
    call(&app.discord, message_edit_with(&message, "declined")).await;

    let edited = &app.discord.messages_in(message.channel_id)[0];
    assert!(edited.content.contains("/link-microsoft"));
    assert!(button_urls(edited).is_empty());
    let status = links::status(&app.state.store, user()).await.unwrap();
    assert!(status.is_none());
    app.stop().await;
}

#[tokio::test]
async fn an_expired_code_edits_the_dm_and_says_how_to_start_again() {
    let microsoft = FakeMicrosoft::start().await;
    microsoft.set_device_code_timing(3, 1);
    let discord = FakeDiscord::start().await;
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let app = spawn_app_with(microsoft, discord, dir, &[]).await;

    let (message, _) = link_command(&app, "Check your DMs").await;
    call(&app.discord, message_edit_with(&message, "expired")).await;

    let edited = &app.discord.messages_in(message.channel_id)[0];
    assert!(
        edited.content.contains("Run /link-microsoft"),
        "{}",
        edited.content
    );
    app.stop().await;
}

#[tokio::test]
async fn with_dms_closed_the_code_and_then_the_outcome_go_to_the_private_reply() {
    let app = spawn_app().await;
    app.discord.close_dms(USER);

    let interaction = app
        .discord
        .invoke("link-microsoft", USER, Value::Null)
        .await;
    call(
        &app.discord,
        reply_edit_with(&interaction.token, "could not DM you"),
    )
    .await;
    let shown = app.discord.original_response(&interaction.token).unwrap();
    let code = app.microsoft.issued_user_codes().pop().unwrap();
    app.microsoft.approve(&code, &FakeUser::msa("grace hopper"));
    call(
        &app.discord,
        reply_edit_with(&interaction.token, "Linked as"),
    )
    .await;

    assert!(shown.content.contains("direct messages are closed"));
    assert!(shown.content.contains(&format!("`{code}`")));
    assert_eq!(button_urls(&shown), [VERIFICATION_URI]);
    assert_ne!(shown.flags & EPHEMERAL, 0);
    let dm = app.discord.dm_channel_of(USER).unwrap();
    assert!(app.discord.messages_in(dm).is_empty(), "no DM got through");
    let outcome = app.discord.original_response(&interaction.token).unwrap();
    assert!(
        outcome.content.contains("Grace Hopper"),
        "{}",
        outcome.content
    );
    assert!(button_urls(&outcome).is_empty());
    app.stop().await;
}

#[tokio::test]
async fn unlinking_erases_the_link_audits_it_and_status_then_says_not_linked() {
    let app = spawn_app().await;
    link_through_discord(&app, &FakeUser::entra("ada")).await;

    let (_, unlinked) = run_command(&app, "unlink-microsoft", "removed").await;
    let (_, status) = run_command(&app, "microsoft-status", "no Microsoft account").await;
    let (_, again) = run_command(&app, "unlink-microsoft", "nothing to remove").await;

    assert!(unlinked.contains("https://myapps.microsoft.com"));
    assert!(unlinked.contains("https://account.live.com/consent/Manage"));
    assert!(
        links::status(&app.state.store, user())
            .await
            .unwrap()
            .is_none()
    );
    let since = chrono::Utc::now() - chrono::TimeDelta::minutes(5);
    let events = audit::for_subject(&app.state.store, &USER.to_string(), since)
        .await
        .unwrap();
    let deletes: Vec<_> = events
        .iter()
        .filter(|e| e.action == "link.delete")
        .collect();
    assert_eq!(deletes.len(), 1, "{events:?}");
    assert_eq!(deletes[0].actor, format!("discord:{USER}"));
    assert!(status.contains("/link-microsoft"));
    assert!(again.contains("no Microsoft account linked"));
    app.stop().await;
}

#[tokio::test]
async fn running_link_again_while_the_code_is_valid_resends_the_same_code() {
    let app = spawn_app().await;

    let (first, code) = link_command(&app, "Check your DMs").await;
    let (second, again) = link_command(&app, "same code").await;

    assert_eq!(again, code);
    assert_ne!(second.id, first.id);
    assert!(second.content.contains(&format!("`{code}`")));
    assert_eq!(devicecode_requests(&app.microsoft), 1);
    // The outcome lands on the newest message.
    app.microsoft.approve(&code, &FakeUser::entra("ada"));
    call(&app.discord, message_edit_with(&second, "Linked as")).await;
    app.stop().await;
}

#[tokio::test]
async fn running_link_while_linked_starts_a_relink_and_says_so() {
    let app = spawn_app().await;
    link_through_discord(&app, &FakeUser::entra("ada")).await;

    let (message, code) = link_command(&app, "replaces it").await;
    app.microsoft.approve(&code, &FakeUser::entra("ada"));
    call(&app.discord, message_edit_with(&message, "Re-linked as")).await;

    assert!(message.content.starts_with("**Re-link"));
    assert_eq!(devicecode_requests(&app.microsoft), 2);
    app.stop().await;
}

#[tokio::test]
async fn a_restart_mid_flow_still_edits_the_original_dm() {
    let app = spawn_app().await;
    let (message, code) = link_command(&app, "Check your DMs").await;

    let (microsoft, discord, dir) = app.stop().await;
    let restarted = Instant::now();
    let app = spawn_app_with(microsoft, discord, dir, &[]).await;
    // The new bot connects afresh and registers its commands again.
    call(&app.discord, |c| c.method == "PUT" && c.at > restarted).await;
    app.microsoft.approve(&code, &FakeUser::entra("ada"));
    call(&app.discord, message_edit_with(&message, "Linked as")).await;

    assert_eq!(app.discord.identify_payloads().len(), 2);
    let dm = app.discord.messages_in(message.channel_id);
    assert_eq!(dm.len(), 1, "the DM was edited, not sent again");
    let status = links::status(&app.state.store, user()).await.unwrap();
    assert_eq!(status.map(|s| s.state), Some(LinkState::Active));
    app.stop().await;
}

#[tokio::test]
async fn a_revoked_link_gets_exactly_one_dm_saying_why_and_how_to_relink() {
    let app = spawn_app().await;
    let ada = FakeUser::entra("ada");
    let prompt = link_through_discord(&app, &ada).await;

    app.microsoft.revoke(&ada);
    for _ in 0..2 {
        let refreshed = app
            .state
            .tokens
            .fresh_token(user(), None, Duration::from_secs(300), true)
            .await;
        assert!(refreshed.is_err());
    }
    call(
        &app.discord,
        post_with(prompt.channel_id, "/link-microsoft"),
    )
    .await;

    let dms = app.discord.messages_in(prompt.channel_id);
    assert_eq!(dms.len(), 2, "the code prompt and one alert");
    assert!(dms[1].content.contains("revoked"), "{}", dms[1].content);
    assert!(dms[1].content.contains("/link-microsoft"));
    app.stop().await;
}

#[tokio::test]
async fn a_discord_500_on_the_dm_is_retried_and_the_dm_arrives() {
    let app = spawn_app().await;
    app.discord.fail_next_messages(500, 1);

    let (message, code) = link_command(&app, "Check your DMs").await;

    assert!(message.content.contains(&code));
    let posts = app.discord.calls();
    let posts = posts
        .iter()
        .filter(|c| c.method == "POST" && c.path.ends_with("/messages"));
    assert_eq!(posts.count(), 2, "one failed try and one retry");
    app.stop().await;
}

#[tokio::test]
async fn a_discord_rate_limit_on_the_dm_is_waited_out_and_the_dm_arrives() {
    let app = spawn_app().await;
    app.discord.fail_next_messages(429, 1);

    let (message, code) = link_command(&app, "Check your DMs").await;

    assert!(message.content.contains(&code));
    let posts = app.discord.calls();
    let posts: Vec<_> = posts
        .iter()
        .filter(|c| c.method == "POST" && c.path.ends_with("/messages"))
        .collect();
    assert_eq!(posts.len(), 2, "one refused try and one retry");
    assert!(posts[1].at.duration_since(posts[0].at) >= Duration::from_secs(1));
    app.stop().await;
}

#[tokio::test]
async fn an_unknown_command_gets_a_private_answer() {
    let app = spawn_app().await;

    let (_, reply) = run_command(&app, "link-google", "do not know that command").await;

    assert!(!reply.is_empty());
    app.stop().await;
}

// A current-thread runtime keeps the app's tasks on the thread whose default subscriber
// captures the logs.
#[tokio::test(flavor = "current_thread")]
async fn a_discord_sign_in_logs_no_interaction_token_code_or_token_even_at_trace() {
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(linkbot::telemetry::filter(Some("trace")))
        .with_writer(captured.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let app = spawn_app().await;
    app.discord.close_dms(USER);

    let interaction = app
        .discord
        .invoke("link-microsoft", USER, Value::Null)
        .await;
    call(
        &app.discord,
        reply_edit_with(&interaction.token, "could not DM you"),
    )
    .await;
    let code = app.microsoft.issued_user_codes().pop().unwrap();
    app.microsoft.approve(&code, &FakeUser::entra("ada"));
    call(
        &app.discord,
        reply_edit_with(&interaction.token, "Linked as"),
    )
    .await;
    let (status, _) = run_command(&app, "microsoft-status", "Your Microsoft account").await;
    let microsoft = app.microsoft.clone();
    app.stop().await;

    let logs = captured.text();
    assert!(logs.contains("discord bot ready"), "the capture works");
    assert!(logs.contains("TRACE") || logs.contains("DEBUG"));
    let mut secrets = vec![
        interaction.token,
        status.token,
        code,
        "fake-bot-token".to_owned(),
    ];
    secrets.extend(microsoft.issued_access_tokens());
    secrets.extend(microsoft.issued_refresh_tokens());
    secrets.extend(microsoft.issued_device_codes());
    assert_no_secrets(&logs, &secrets);
}

#[tokio::test]
async fn status_names_the_api_keys_that_fetched_the_token() {
    let app = spawn_app().await;
    link_through_discord(&app, &FakeUser::entra("ada lovelace")).await;
    let key = linkbot::cli::generate_api_key();
    api_keys::create(
        &app.state.store,
        "reporting",
        Role::Reader,
        &key,
        Utc::now(),
    )
    .await
    .expect("key is stored");
    api_keys::create(
        &app.state.store,
        "idle-cron",
        Role::Reader,
        &linkbot::cli::generate_api_key(),
        Utc::now(),
    )
    .await
    .expect("key is stored");

    let (_, before) = run_command(&app, "microsoft-status", "Your Microsoft account").await;
    let answer = app
        .client
        .get(format!("{}/v1/users/{USER}/token", app.api))
        .bearer_auth(key.expose())
        .send()
        .await
        .expect("the API answers");
    assert_eq!(answer.status(), 200);
    // The API stores audit rows in batches, shortly after answering.
    let stored = async {
        let since = Utc::now() - TimeDelta::hours(1);
        while audit::fetches_for_subject(&app.state.store, &USER.to_string(), since)
            .await
            .expect("audit reads")
            .is_empty()
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(PATIENCE, stored)
        .await
        .expect("the fetch is audited");
    let (_, after) = run_command(&app, "microsoft-status", "Your Microsoft account").await;

    assert!(!before.contains("reporting"), "{before}");
    assert!(
        after.contains("API keys that fetched your token in the last 7 days: `reporting`"),
        "{after}"
    );
    assert!(!after.contains("idle-cron"), "{after}");
    assert!(!after.contains(key.expose()));
    app.stop().await;
}
