//! linkbot links Discord users' Microsoft accounts through the device code flow and keeps their
//! tokens fresh for the server's own scripts. `main.rs` parses the command line; [`App`] wires
//! the modules below together (see DESIGN.md for how they depend on each other).

pub mod api;
pub mod cli;
pub mod config;
pub mod discord;
pub mod domain;
pub mod linking;
pub mod microsoft;
pub mod notify;
pub mod store;
pub mod telemetry;
pub mod tokens;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use chrono::Utc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::linking::Linking;
use crate::microsoft::{MicrosoftClient, MicrosoftSettings};
use crate::notify::Notifier;
use crate::store::Store;
use crate::tokens::{Clock, Tokens};

/// The shared state every front door and worker uses. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    /// Validated configuration.
    pub config: Arc<Config>,
    /// The database.
    pub store: Store,
    /// Microsoft's endpoints.
    pub microsoft: MicrosoftClient,
    /// Device flows.
    pub linking: Linking,
    /// Fresh tokens.
    pub tokens: Tokens,
}

impl AppState {
    /// Builds the core over an open store, reaching chat through `notifier`.
    ///
    /// # Errors
    /// Fails when the HTTP client cannot be built.
    pub fn new(
        config: Arc<Config>,
        store: Store,
        settings: MicrosoftSettings,
        notifier: Arc<dyn Notifier>,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Self> {
        let microsoft = MicrosoftClient::new(settings).context("building the HTTP client")?;
        let linking = Linking::new(store.clone(), microsoft.clone(), notifier.clone(), shutdown);
        let tokens = Tokens::new(
            store.clone(),
            microsoft.clone(),
            notifier,
            Clock::system(),
            config.keepalive,
        );
        Ok(Self {
            config,
            store,
            microsoft,
            linking,
            tokens,
        })
    }
}

/// A running linkbot: the Discord bot, the internal API and the workers.
pub struct App {
    state: AppState,
    api_addr: SocketAddr,
    shutdown: CancellationToken,
    jobs: JoinSet<(&'static str, anyhow::Result<()>)>,
}

impl App {
    /// Migrates the database, then starts every job. Returns once the API listens and the bot
    /// is connecting.
    ///
    /// # Errors
    /// Fails when the key, the database, the API address or the Discord client cannot be set up.
    pub async fn start(config: Config) -> anyhow::Result<Self> {
        let config = Arc::new(config);
        let shutdown = CancellationToken::new();
        let store = cli::open_store(&config)
            .await
            .context("opening the database")?;
        store::verify_key(&store)
            .await
            .context("checking the secret key against stored secrets")?;

        let http = discord::http_client(&config)?;
        let notifier = Arc::new(discord::DiscordNotifier::new(http.clone()));
        let settings = MicrosoftSettings::from_config(&config);
        let state = AppState::new(config.clone(), store, settings, notifier, shutdown.clone())?;

        let listener = tokio::net::TcpListener::bind(config.api_listen)
            .await
            .with_context(|| format!("binding API_LISTEN={}", config.api_listen))?;
        let api_addr = listener.local_addr().context("reading the API address")?;
        tracing::info!(version = env!("CARGO_PKG_VERSION"), api = %api_addr, "linkbot starting");

        let mut jobs = JoinSet::new();
        let api_state = state.clone();
        let api_shutdown = shutdown.clone();
        jobs.spawn(async move {
            let result = api::serve(listener, api_state, api_shutdown)
                .await
                .context("internal API");
            ("api", result)
        });
        let bot = discord::start(state.clone(), http, shutdown.clone())
            .context("starting the Discord bot")?;
        jobs.spawn(async move { ("discord", bot.await.unwrap_or_else(|err| Err(err.into()))) });

        let resumed = state
            .linking
            .resume()
            .await
            .context("resuming device flows")?;
        tracing::debug!(resumed, "device flows resumed at start-up");
        let worker = state.tokens.clone();
        let worker_shutdown = shutdown.clone();
        jobs.spawn(async move {
            worker.run_worker(worker_shutdown).await;
            ("refresh worker", Ok(()))
        });
        let pruner_state = state.clone();
        let pruner_shutdown = shutdown.clone();
        jobs.spawn(async move {
            prune_audit(pruner_state, pruner_shutdown).await;
            ("audit pruner", Ok(()))
        });

        Ok(Self {
            state,
            api_addr,
            shutdown,
            jobs,
        })
    }

    /// The address the internal API listens on (useful with port 0).
    pub fn api_addr(&self) -> SocketAddr {
        self.api_addr
    }

    /// The shared state.
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Cancelling this token stops every job.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Waits until every job has stopped. The first job that fails stops the others.
    ///
    /// # Errors
    /// The first job failure.
    pub async fn wait(mut self) -> anyhow::Result<()> {
        let mut failure = None;
        while let Some(joined) = self.jobs.join_next().await {
            let (job, result) = joined.unwrap_or_else(|err| ("task", Err(err.into())));
            if let Err(err) = result {
                tracing::error!(job, error = %format!("{err:#}"), "job failed; shutting down");
                self.shutdown.cancel();
                failure.get_or_insert(err);
            } else if !self.shutdown.is_cancelled() {
                tracing::error!(job, "job stopped unexpectedly; shutting down");
                self.shutdown.cancel();
            }
        }
        self.state.linking.wait_stopped().await;
        self.state.store.close().await;
        tracing::info!("linkbot stopped");
        failure.map_or(Ok(()), Err)
    }
}

/// Runs linkbot until Ctrl-C or SIGTERM.
///
/// # Errors
/// Fails when start-up fails (database, key, listener) or a job dies.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let app = App::start(config).await?;
    tokio::spawn(stop_on_signal(app.shutdown_token()));
    app.wait().await
}

/// Deletes audit events older than `LINKBOT_AUDIT_RETENTION_DAYS`, hourly.
async fn prune_audit(state: AppState, shutdown: CancellationToken) {
    loop {
        let retention = chrono::TimeDelta::from_std(state.config.audit_retention)
            .unwrap_or(chrono::TimeDelta::days(90));
        match store::audit::prune(&state.store, Utc::now() - retention).await {
            Ok(0) => {}
            Ok(deleted) => tracing::info!(deleted, "old audit events deleted"),
            Err(err) => tracing::warn!(error = %err, "could not prune audit events"),
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(Duration::from_secs(3600)) => {}
        }
    }
}

/// Cancels `shutdown` on Ctrl-C or SIGTERM.
async fn stop_on_signal(shutdown: CancellationToken) {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
    tracing::info!("shutting down");
    shutdown.cancel();
}
