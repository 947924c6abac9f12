//! The internal HTTP API for server scripts (axum): tokens, link status, unlinking, health and
//! metrics, behind API keys.

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::AppState;

/// The API's routes over `state`.
pub fn router(state: AppState) -> axum::Router {
    let _ = state;
    axum::Router::new().route("/healthz", axum::routing::get(|| async { "ok" }))
}

/// Serves the API on `listener` until `shutdown` is cancelled.
///
/// # Errors
/// Fails when the server fails.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}
