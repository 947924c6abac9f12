//! The Discord front door (serenity): the gateway client, the slash commands, the DMs that show
//! device codes and outcomes, and the [`DiscordNotifier`] the core uses to reach users. Nothing
//! outside this module knows Discord's types.

pub mod commands;
pub mod error;
mod handler;
pub mod messages;
mod notifier;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use serenity::all::{Client, ClientBuilder, CreateAllowedMentions, GatewayIntents};
use serenity::http::{Http, HttpBuilder};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use self::notifier::DiscordNotifier;

use self::handler::Handler;
use crate::AppState;
use crate::config::Config;

/// Discord's own base URL; anything else is a proxy or a fake.
const DISCORD_BASE: &str = "https://discord.com";

/// Longest wait for a TCP (and TLS) connection to Discord's REST API.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Longest wait for a whole REST request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// Longest wait for the gateway connection to close at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// First wait before asking for the gateway address again; it doubles up to the next.
const GATEWAY_RETRY_FIRST: Duration = Duration::from_secs(1);

/// Longest wait between two requests for the gateway address.
const GATEWAY_RETRY_MAX: Duration = Duration::from_secs(60);

/// How often shutdown asks the shard manager again while a shard is still connecting.
const SHUTDOWN_POLL: Duration = Duration::from_millis(250);

/// serenity's HTTP client, pointed at `DISCORD_API_BASE`.
///
/// # Errors
/// Fails when the HTTP client cannot be built.
pub fn http_client(config: &Config) -> anyhow::Result<Arc<Http>> {
    build_http(config).map(Arc::new)
}

fn build_http(config: &Config) -> anyhow::Result<Http> {
    let client = reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(REQUEST_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .context("building the Discord HTTP client")?;
    // Names in messages are escaped, but no text the bot sends should ever ping anyone.
    let mut builder = HttpBuilder::new(config.discord_token.expose())
        .client(client)
        .default_allowed_mentions(CreateAllowedMentions::new());
    let base = config.discord_api_base.as_str().trim_end_matches('/');
    if base != DISCORD_BASE {
        // serenity's rate limiter ignores the proxy setting, so it must be off for a proxy.
        builder = builder.proxy(base).ratelimiter_disabled(true);
    }
    Ok(builder.build())
}

/// Connects the bot in a task of its own, which ends when `shutdown` is cancelled (after the
/// gateway connection closed) or when the gateway fails for good.
///
/// # Errors
/// Fails when serenity's HTTP client cannot be built.
pub fn start(
    state: AppState,
    http: Arc<Http>,
    shutdown: CancellationToken,
) -> anyhow::Result<JoinHandle<anyhow::Result<()>>> {
    // serenity's client takes its HTTP client by value; it uses its own only to find the
    // gateway, while the handler answers through `http`, shared with the notifier.
    let gateway_http = build_http(&state.config)?;
    Ok(tokio::spawn(async move {
        let Some(url) = find_gateway(&http, &shutdown).await else {
            return Ok(());
        };
        let handler = Handler::new(state, http);
        // Slash commands and DMs the bot sends need no gateway intent.
        let client = ClientBuilder::new_with_http(gateway_http, GatewayIntents::empty())
            .event_handler(handler)
            .await
            .context("building the Discord client")?;
        // serenity asks for the gateway again while building, and when that answer fails it
        // connects to Discord's public gateway whatever base URL was configured, which would
        // take the bot token past a proxy. The address found above is the one used.
        *client.ws_url.lock().await = url;
        run(client, shutdown).await
    }))
}

/// The gateway address from `GET /gateway`, asked again with growing waits until it comes or
/// `shutdown` is cancelled (then `None`). Discord being down must not stop the API.
async fn find_gateway(http: &Http, shutdown: &CancellationToken) -> Option<String> {
    let mut wait = GATEWAY_RETRY_FIRST;
    loop {
        let found = tokio::select! {
            found = http.get_gateway() => found,
            () = shutdown.cancelled() => return None,
        };
        match found {
            Ok(gateway) => return Some(gateway.url),
            Err(err) => {
                tracing::warn!(
                    error = %err,
                    retry_in_secs = wait.as_secs(),
                    "could not ask Discord for its gateway address; retrying"
                );
            }
        }
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = shutdown.cancelled() => return None,
        }
        wait = (wait * 2).min(GATEWAY_RETRY_MAX);
    }
}

async fn run(mut client: Client, shutdown: CancellationToken) -> anyhow::Result<()> {
    let shard_manager = client.shard_manager.clone();
    let running = client.start();
    tokio::pin!(running);
    tokio::select! {
        result = &mut running => return result.context("Discord gateway"),
        () = shutdown.cancelled() => {}
    }

    tracing::info!("discord bot stopping");
    let stopped = async {
        loop {
            shard_manager.shutdown_all().await;
            // shutdown_all skips a shard that is still connecting; ask again until it stops.
            tokio::select! {
                result = &mut running => return result,
                () = tokio::time::sleep(SHUTDOWN_POLL) => {}
            }
        }
    };
    match tokio::time::timeout(SHUTDOWN_GRACE, stopped).await {
        Ok(result) => result.context("Discord gateway"),
        Err(_) => {
            tracing::warn!("discord gateway did not close in time");
            Ok(())
        }
    }
}
