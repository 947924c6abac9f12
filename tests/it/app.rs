//! The whole app starts, serves and stops against the fakes.

use std::sync::Arc;

use crate::support::PATIENCE;
use crate::support::app::{spawn_app, spawn_app_with};
use crate::support::discord::FakeDiscord;
use crate::support::microsoft::FakeMicrosoft;

#[tokio::test]
async fn the_app_starts_serves_health_and_stops_cleanly() {
    let app = spawn_app().await;

    let health = app
        .client
        .get(format!("{}/healthz", app.api))
        .send()
        .await
        .unwrap();

    assert!(health.status().is_success());
    assert!(
        linkbot::store::links::status(&app.state.store, linkbot::domain::DiscordUserId::new(1))
            .await
            .unwrap()
            .is_none()
    );
    app.stop().await;
}

#[tokio::test]
async fn a_failing_gateway_lookup_is_retried_at_the_configured_base_not_discord_com() {
    let microsoft = FakeMicrosoft::start().await;
    let discord = FakeDiscord::start().await;
    discord.fail_next_gateway_lookups(502, 2);
    let dir = Arc::new(tempfile::tempdir().expect("temporary folder"));

    let app = spawn_app_with(microsoft, discord, dir, &[]).await;

    // Falling back to Discord's public gateway would never reach the fake, so the bot would
    // never identify there or register its commands.
    let commands = tokio::time::timeout(PATIENCE, app.discord.wait_commands(3))
        .await
        .expect("the bot registered its commands at the fake");
    assert_eq!(commands.len(), 3);
    let lookups = app
        .discord
        .calls()
        .into_iter()
        .filter(|c| c.method == "GET" && c.path == "/api/v10/gateway")
        .count();
    assert!(lookups >= 3, "{lookups} gateway lookups");
    assert_eq!(app.discord.identify_payloads().len(), 1);
    app.stop().await;
}
