//! `GET /openapi.json`: the OpenAPI 3 description of this API, written by hand in
//! `openapi.json` beside this file and compiled in. A test checks it against [`super::routes`]
//! and [`super::ERROR_CODES`].

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

/// The document.
pub const DOCUMENT: &str = include_str!("openapi.json");

/// `GET /openapi.json`.
pub async fn document() -> Response {
    let mut response = DOCUMENT.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}
