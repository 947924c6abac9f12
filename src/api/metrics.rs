//! `GET /metrics` in the Prometheus text format (version 0.0.4): refresh outcomes, links by
//! state and API requests by route template and status. It needs no key, like `/healthz`:
//! it holds counts only, no ids, names or secrets.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::api::{ApiError, ApiState};
use crate::domain::LinkState;
use crate::store::links;

/// The `route` label of requests that matched no route, so stray paths cannot grow the set
/// of series.
const UNMATCHED: &str = "unmatched";

/// Request counts by route template and status.
#[derive(Debug, Default)]
pub struct HttpCounters {
    counts: RwLock<HashMap<String, HashMap<u16, AtomicU64>>>,
}

impl HttpCounters {
    fn add(&self, route: &str, status: u16) {
        {
            let counts = self.counts.read().expect("counter map is never poisoned");
            if let Some(counter) = counts
                .get(route)
                .and_then(|by_status| by_status.get(&status))
            {
                counter.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
        let mut counts = self.counts.write().expect("counter map is never poisoned");
        counts
            .entry(route.to_owned())
            .or_default()
            .entry(status)
            .or_default()
            .fetch_add(1, Ordering::Relaxed);
    }

    /// `(route, status, count)`, sorted, for a stable exposition.
    fn snapshot(&self) -> Vec<(String, u16, u64)> {
        let counts = self.counts.read().expect("counter map is never poisoned");
        let mut rows: Vec<_> = counts
            .iter()
            .flat_map(|(route, by_status)| {
                by_status
                    .iter()
                    .map(|(status, n)| (route.clone(), *status, n.load(Ordering::Relaxed)))
            })
            .collect();
        rows.sort();
        rows
    }
}

/// Middleware counting every answered request under its route template.
pub async fn count(State(state): State<ApiState>, request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().cloned();
    let response = next.run(request).await;
    state.http.add(
        route.as_ref().map_or(UNMATCHED, MatchedPath::as_str),
        response.status().as_u16(),
    );
    response
}

/// `GET /metrics`.
pub async fn metrics(State(state): State<ApiState>) -> Result<Response, ApiError> {
    let by_state = links::count_by_state(&state.app.store).await?;
    let refresh = state.app.tokens.metrics();
    let mut text = String::with_capacity(2048);

    header_lines(
        &mut text,
        "linkbot_refreshes_total",
        "counter",
        "Token refreshes by outcome since start.",
    );
    for (outcome, n) in refresh.snapshot() {
        let _ = writeln!(text, "linkbot_refreshes_total{{outcome=\"{outcome}\"}} {n}");
    }
    header_lines(
        &mut text,
        "linkbot_relink_alerts_total",
        "counter",
        "Users told to link their Microsoft account again since start.",
    );
    let alerts = refresh.alerts.load(Ordering::Relaxed);
    let _ = writeln!(text, "linkbot_relink_alerts_total {alerts}");

    header_lines(
        &mut text,
        "linkbot_links",
        "gauge",
        "Linked accounts by state.",
    );
    for link_state in [LinkState::Active, LinkState::RelinkRequired] {
        let name = link_state.as_str();
        let n = by_state
            .iter()
            .find(|(stored, _)| stored == name)
            .map_or(0, |(_, n)| *n);
        let _ = writeln!(text, "linkbot_links{{state=\"{name}\"}} {n}");
    }

    header_lines(
        &mut text,
        "linkbot_http_requests_total",
        "counter",
        "API requests by route template and HTTP status since start.",
    );
    for (route, status, n) in state.http.snapshot() {
        let route = escape_label(&route);
        let _ = writeln!(
            text,
            "linkbot_http_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
        );
    }

    let mut response = text.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    Ok(response)
}

fn header_lines(text: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(text, "# HELP {name} {help}");
    let _ = writeln!(text, "# TYPE {name} {kind}");
}

/// Label values escape `\`, `"` and newlines.
fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_add_up_per_route_and_status() {
        let counters = HttpCounters::default();

        counters.add("/healthz", 200);
        counters.add("/healthz", 200);
        counters.add("/v1/users", 401);

        assert_eq!(
            counters.snapshot(),
            vec![
                ("/healthz".to_owned(), 200, 2),
                ("/v1/users".to_owned(), 401, 1)
            ]
        );
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
