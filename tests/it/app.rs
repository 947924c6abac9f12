//! The whole app starts, serves and stops against the fakes.

use crate::support::app::spawn_app;

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
