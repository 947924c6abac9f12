//! linkbot links Discord users' Microsoft accounts through the device code flow and keeps their
//! tokens fresh for the server's own scripts. `main.rs` parses the command line; [`App`] wires
//! the modules below together (see DESIGN.md for how they depend on each other).

pub mod cli;
pub mod config;
pub mod domain;
pub mod linking;
pub mod microsoft;
pub mod notify;
pub mod store;
pub mod telemetry;
pub mod tokens;

use std::sync::Arc;

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::linking::Linking;
use crate::microsoft::{MicrosoftClient, MicrosoftSettings};
use crate::notify::Notifier;
use crate::store::Store;

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
        let linking = Linking::new(store.clone(), microsoft.clone(), notifier, shutdown);
        Ok(Self {
            config,
            store,
            microsoft,
            linking,
        })
    }
}

/// Runs linkbot until Ctrl-C or SIGTERM.
///
/// # Errors
/// Fails when start-up fails (database, key, listener) or a job dies.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    tokio::spawn(stop_on_signal(shutdown.clone()));
    let store = cli::open_store(&config)
        .await
        .context("opening the database")?;
    tracing::info!(version = env!("CARGO_PKG_VERSION"), "linkbot starting");
    let _ = store;
    anyhow::bail!("the Discord front door is not wired in yet")
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
