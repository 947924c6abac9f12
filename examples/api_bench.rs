//! The internal API alone, over a SQLite database seeded with linked users, for the load
//! benchmark in `scripts/bench-api.sh`. It runs the real store (with sealing), token service,
//! refresh worker and `api::serve`, but no Discord bot; Microsoft points at a closed loopback
//! port, so a request that would need a refresh fails fast instead of leaving the machine.
//!
//! Usage: `api_bench OUT_FILE [USERS]`. Once listening, it writes the seeded Discord ids to
//! `OUT_FILE.ids`, one a line, then `API_URL KEY` to OUT_FILE, and serves until SIGINT or
//! SIGTERM; it then reports the stored audit rows on standard error.

use std::sync::Arc;

use anyhow::Context as _;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{TimeDelta, Utc};
use rand::RngCore as _;
use tokio_util::sync::CancellationToken;

use linkbot::config::Config;
use linkbot::domain::{Account, DiscordUserId, Secret};
use linkbot::microsoft::MicrosoftSettings;
use linkbot::notify::Discard;
use linkbot::store::api_keys::{self, Role};
use linkbot::store::links::{self, NewLink};
use linkbot::{AppState, api, cli};

/// Seeded users get consecutive ids from here.
const FIRST_ID: u64 = 300_000_000_000_000_001;

/// About the size of a real Microsoft Graph access token (a signed JWT).
const ACCESS_TOKEN_BYTES: usize = 1200;
const REFRESH_TOKEN_BYTES: usize = 750;

fn random_text(bytes: usize) -> Secret {
    let mut raw = vec![0u8; bytes * 3 / 4];
    rand::rngs::OsRng.fill_bytes(&mut raw);
    Secret::new(URL_SAFE_NO_PAD.encode(raw))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    linkbot::telemetry::init();
    let mut args = std::env::args().skip(1);
    let out = args.next().context("usage: api_bench OUT_FILE [USERS]")?;
    let users: u64 = match args.next() {
        Some(text) => text.parse().context("USERS must be a number")?,
        None => 500,
    };
    let dir = tempfile::tempdir().context("creating a temporary folder")?;
    let database = format!("sqlite://{}", dir.path().join("bench.db").display());
    let key =
        base64::engine::general_purpose::STANDARD.encode(linkbot::store::seal::generate_key());
    let env = [
        ("DISCORD_TOKEN", "unused"),
        (
            "MICROSOFT_CLIENT_ID",
            "00000000-0000-0000-0000-000000000000",
        ),
        ("MICROSOFT_AUTHORITY", "http://127.0.0.1:9"),
        ("GRAPH_API_BASE", "http://127.0.0.1:9"),
        ("DATABASE_URL", database.as_str()),
        ("LINKBOT_SECRET_KEY", key.as_str()),
    ];
    let config = Config::from_lookup(|name| {
        env.iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| (*v).to_owned())
    })?;
    let config = Arc::new(config);
    let store = cli::open_store(&config)
        .await
        .context("opening the store")?;

    seed(&store, users).await?;
    let api_key = cli::generate_api_key();
    api_keys::create(&store, "bench", Role::Reader, &api_key, Utc::now())
        .await
        .context("creating the API key")?;

    let shutdown = CancellationToken::new();
    let settings = MicrosoftSettings::from_config(&config);
    let state = AppState::new(
        config,
        store.clone(),
        settings,
        Arc::new(Discard),
        shutdown.clone(),
    )?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let worker = tokio::spawn(state.tokens.clone().run_worker(shutdown.clone()));
    let server = tokio::spawn(api::serve(listener, state, shutdown.clone()));
    let ids: String = (0..users).map(|n| format!("{}\n", FIRST_ID + n)).collect();
    std::fs::write(format!("{out}.ids"), ids).context("writing OUT_FILE.ids")?;
    let ready = format!("{url} {}\n", api_key.expose());
    std::fs::write(&out, ready).context("writing OUT_FILE")?;

    wait_for_signal().await;
    shutdown.cancel();
    server.await?.context("serving")?;
    worker.await?;
    let (audited,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM audit_events")
        .fetch_one(store.pool())
        .await?;
    store.close().await;
    eprintln!("api_bench: stopped; {audited} audit events stored");
    Ok(())
}

/// Stores `users` active links with tokens valid for an hour, sealed as in production.
async fn seed(store: &linkbot::store::Store, users: u64) -> anyhow::Result<()> {
    let now = Utc::now();
    let mut conn = store.pool().begin().await?;
    for n in 0..users {
        let user = DiscordUserId::new(FIRST_ID + n);
        let link = NewLink {
            user,
            account: Account {
                tenant_id: "5f3c9a7e-2b41-4d8e-9c06-7a1b3e5d2f84".into(),
                object_id: format!("8d2f0c4e-1a7b-4c3d-9e5f-{n:012}"),
                username: format!("user{n}@contoso.example"),
                display_name: format!("User {n}"),
            },
            scopes: "User.Read openid profile email".into(),
            access_token: random_text(ACCESS_TOKEN_BYTES),
            access_expires_at: now + TimeDelta::minutes(75),
            refresh_token: random_text(REFRESH_TOKEN_BYTES),
            linked_at: now,
            next_refresh_at: now + TimeDelta::minutes(65),
        };
        links::save_new(&mut conn, store, &link).await?;
    }
    conn.commit().await?;
    Ok(())
}

async fn wait_for_signal() {
    let interrupted = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    if let Ok(mut terminate) =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
    {
        tokio::select! {
            () = interrupted => {}
            _ = terminate.recv() => {}
        }
        return;
    }
    interrupted.await;
}
