//! The internal HTTP API for server scripts (axum): fresh tokens, link status, unlinking,
//! health, metrics and the OpenAPI document, behind API keys. Handlers live one file per
//! resource; the key check is the [`auth`] extractor and every failure is an [`ApiError`].
//! The API calls the core (`tokens`, `store`); nothing in the core calls back into it.

mod auth;
mod error;
mod health;
mod metrics;
mod openapi;
mod params;
mod recorder;
mod tokens;
mod users;

use std::sync::Arc;

use axum::Router;
use axum::http::Method;
use axum::routing::{MethodRouter, delete, get};
use axum::serve::ListenerExt as _;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use error::{ApiError, ERROR_CODES};

use crate::AppState;
use metrics::HttpCounters;
use recorder::{KeyUse, Recorder};

/// What every handler sees: the core plus the API's own bookkeeping. One pointer, since
/// axum clones the state for each extractor of each request.
#[derive(Clone)]
pub(crate) struct ApiState(Arc<Shared>);

/// The contents of [`ApiState`].
pub(crate) struct Shared {
    app: AppState,
    recorder: Recorder,
    keys: auth::KeyCache,
    key_use: KeyUse,
    http: HttpCounters,
}

impl std::ops::Deref for ApiState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// Every route as (method, path template, handler). The router and [`routes`] are both built
/// from this table, so the list the OpenAPI test checks is the list that is served.
fn table() -> Vec<(Method, &'static str, MethodRouter<ApiState>)> {
    let user = "/v1/users/{discord_id}";
    let token = "/v1/users/{discord_id}/token";
    vec![
        (Method::GET, "/healthz", get(health::healthz)),
        (Method::GET, "/metrics", get(metrics::metrics)),
        (Method::GET, "/openapi.json", get(openapi::document)),
        (Method::GET, "/v1/users", get(users::list)),
        (Method::GET, user, get(users::status)),
        (Method::DELETE, user, delete(users::delete)),
        (Method::GET, token, get(tokens::token)),
    ]
}

/// Every served (method, path template) pair.
pub fn routes() -> Vec<(Method, &'static str)> {
    table()
        .into_iter()
        .map(|(method, path, _)| (method, path))
        .collect()
}

fn router(state: ApiState) -> Router {
    let routes = table()
        .into_iter()
        .fold(Router::new(), |router, (_, path, handler)| {
            router.route(path, handler)
        });
    routes
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            metrics::count,
        ))
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::NotFound
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// Serves the API on `listener` until `shutdown` is cancelled, then waits for the audit
/// writer to store everything queued.
///
/// # Errors
/// Fails when the server fails.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let (recorder, writer) = Recorder::start(state.store.clone());
    let api = ApiState(Arc::new(Shared {
        app: state,
        recorder,
        keys: auth::KeyCache::default(),
        key_use: KeyUse::default(),
        http: HttpCounters::default(),
    }));
    // Small answers go out at once instead of waiting on Nagle's algorithm.
    let listener = listener.tap_io(|tcp| {
        if let Err(err) = tcp.set_nodelay(true) {
            tracing::debug!(error = %err, "could not set TCP_NODELAY");
        }
    });
    let served = axum::serve(listener, router(api))
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await;
    // The server and every handle on the writer are gone now, so the writer drains and stops.
    if let Err(err) = writer.await {
        tracing::error!(error = %err, "audit writer task died");
    }
    served
}
