//! The real [`App`] over a fresh database, wired to the fake Microsoft and the fake Discord.

use std::collections::HashMap;
use std::sync::Arc;

use linkbot::config::Config;
use linkbot::{App, AppState};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::discord::FakeDiscord;
use super::microsoft::FakeMicrosoft;

/// A running app and the fakes it talks to.
pub struct TestApp {
    /// `http://127.0.0.1:PORT` of the internal API.
    pub api: String,
    /// A plain HTTP client for the API.
    pub client: reqwest::Client,
    /// The shared state, for arranging and inspecting the database.
    pub state: AppState,
    pub microsoft: FakeMicrosoft,
    pub discord: FakeDiscord,
    /// Holds the database and key file.
    pub dir: Arc<tempfile::TempDir>,
    shutdown: CancellationToken,
    running: JoinHandle<anyhow::Result<()>>,
}

/// The environment the app is started with; tests may add or override variables.
pub fn environment(
    microsoft: &FakeMicrosoft,
    discord: &FakeDiscord,
    dir: &tempfile::TempDir,
) -> HashMap<String, String> {
    let db = dir.path().join("linkbot.db");
    [
        ("DISCORD_TOKEN", "fake-bot-token".to_owned()),
        ("DISCORD_API_BASE", discord.base_url()),
        ("DISCORD_GUILD_ID", FakeDiscord::GUILD_ID.to_string()),
        ("MICROSOFT_CLIENT_ID", microsoft.client_id()),
        ("MICROSOFT_AUTHORITY", microsoft.base_url()),
        ("GRAPH_API_BASE", microsoft.base_url()),
        ("DATABASE_URL", format!("sqlite://{}", db.display())),
        ("API_LISTEN", "127.0.0.1:0".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// Starts the app against new fakes (device codes last 60 s, polled every second).
pub async fn spawn_app() -> TestApp {
    let microsoft = FakeMicrosoft::start().await;
    microsoft.set_device_code_timing(60, 1);
    let discord = FakeDiscord::start().await;
    let dir = Arc::new(tempfile::tempdir().expect("temporary folder"));
    spawn_app_with(microsoft, discord, dir, &[]).await
}

/// Starts the app against the given fakes and folder, with extra variables.
pub async fn spawn_app_with(
    microsoft: FakeMicrosoft,
    discord: FakeDiscord,
    dir: Arc<tempfile::TempDir>,
    extra: &[(&str, &str)],
) -> TestApp {
    super::init_test_logs();
    let mut env = environment(&microsoft, &discord, &dir);
    for (k, v) in extra {
        env.insert((*k).to_owned(), (*v).to_owned());
    }
    let config =
        Config::from_lookup(|name| env.get(name).cloned()).expect("test configuration is valid");
    let app = App::start(config).await.expect("app starts");
    let api = format!("http://{}", app.api_addr());
    let state = app.state().clone();
    let shutdown = app.shutdown_token();
    let running = tokio::spawn(app.wait());
    TestApp {
        api,
        client: reqwest::Client::new(),
        state,
        microsoft,
        discord,
        dir,
        shutdown,
        running,
    }
}

impl TestApp {
    /// Stops the app and waits for every job; returns the fakes and folder for a restart.
    pub async fn stop(self) -> (FakeMicrosoft, FakeDiscord, Arc<tempfile::TempDir>) {
        self.shutdown.cancel();
        self.running
            .await
            .expect("app task joins")
            .expect("app stops cleanly");
        (self.microsoft, self.discord, self.dir)
    }
}
