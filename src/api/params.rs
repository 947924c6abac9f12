//! Extractors for the path's Discord id and for query strings that answer malformed input with
//! 400 `invalid_request` in the API's JSON shape instead of axum's plain-text rejections.

use axum::extract::{FromRequestParts, Path, Query};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::api::ApiError;
use crate::domain::DiscordUserId;

/// The `{discord_id}` path segment, validated.
#[derive(Clone, Copy, Debug)]
pub struct UserPath(pub DiscordUserId);

impl<S: Send + Sync> FromRequestParts<S> for UserPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(text) = Path::<String>::from_request_parts(parts, state).await?;
        parse_user(&text, "the path").map(Self)
    }
}

/// A query string deserialised into `T`.
#[derive(Clone, Debug)]
pub struct Params<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Params<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let Query(value) = Query::<T>::try_from_uri(&parts.uri)?;
        Ok(Self(value))
    }
}

/// Parses a Discord user id given in `place` (the path, `after`, …).
///
/// # Errors
/// 400 `invalid_request` naming the place.
pub fn parse_user(text: &str, place: &str) -> Result<DiscordUserId, ApiError> {
    DiscordUserId::parse(text).map_err(|_| {
        ApiError::InvalidRequest(format!(
            "{place} must hold a Discord user id: a positive number of at most 19 digits"
        ))
    })
}
