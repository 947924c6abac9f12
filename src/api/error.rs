//! The API's one error type and its JSON shape, `{"error": "<code>", "message": "<sentence>"}`.
//! Every failure a handler or extractor can meet becomes an [`ApiError`] through one `match`
//! per source type, so a new variant upstream forces a decision here.

use std::time::Duration;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::store::StoreError;
use crate::tokens::TokenError;

/// Every `error` code the API can answer with; the OpenAPI document lists the same set.
pub const ERROR_CODES: &[&str] = &[
    "unauthorized",
    "forbidden",
    "invalid_request",
    "not_linked",
    "not_found",
    "method_not_allowed",
    "relink_required",
    "scope_refused",
    "provider_unavailable",
    "internal_error",
];

/// What went wrong with a request, as the caller sees it.
#[derive(Debug)]
pub enum ApiError {
    /// 401 `unauthorized`: no `Authorization: Bearer` header.
    MissingKey,
    /// 401 `unauthorized`: the key is unknown or revoked.
    BadKey,
    /// 403 `forbidden`: the key's role may not do this.
    Forbidden,
    /// 400 `invalid_request`: a malformed id, parameter or query string.
    InvalidRequest(String),
    /// 404 `not_linked`: the user has no link (and no sign-in in progress).
    NotLinked,
    /// 404 `not_found`: no such route.
    NotFound,
    /// 405 `method_not_allowed`: the route exists, the method does not.
    MethodNotAllowed,
    /// 409 `relink_required`: Microsoft refused the saved sign-in for good.
    RelinkRequired,
    /// 403 `scope_refused`: Microsoft refused a token for the requested scope.
    ScopeRefused {
        /// Microsoft's error code (`invalid_grant:AADSTS65001`, …), safe to show.
        code: String,
    },
    /// 503 `provider_unavailable` with `Retry-After`: Microsoft is failing and no valid token
    /// is left.
    ProviderUnavailable {
        /// When to ask again.
        retry_after: Duration,
    },
    /// 500 `internal_error`: a bug or a database failure. The cause was logged where it was
    /// met; the body stays generic.
    Internal,
}

#[derive(Serialize)]
struct Body<'a> {
    error: &'static str,
    message: &'a str,
}

impl ApiError {
    /// The HTTP status and the stable `error` code.
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Self::MissingKey | Self::BadKey => (StatusCode::UNAUTHORIZED, "unauthorized"),
            Self::Forbidden => (StatusCode::FORBIDDEN, "forbidden"),
            Self::InvalidRequest(_) => (StatusCode::BAD_REQUEST, "invalid_request"),
            Self::NotLinked => (StatusCode::NOT_FOUND, "not_linked"),
            Self::NotFound => (StatusCode::NOT_FOUND, "not_found"),
            Self::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            Self::RelinkRequired => (StatusCode::CONFLICT, "relink_required"),
            Self::ScopeRefused { .. } => (StatusCode::FORBIDDEN, "scope_refused"),
            Self::ProviderUnavailable { .. } => {
                (StatusCode::SERVICE_UNAVAILABLE, "provider_unavailable")
            }
            Self::Internal => (StatusCode::INTERNAL_SERVER_ERROR, "internal_error"),
        }
    }

    fn message(&self) -> String {
        match self {
            Self::MissingKey => {
                "send an API key as `Authorization: Bearer <key>` (see `linkbot api-key create`)"
                    .to_owned()
            }
            Self::BadKey => "the API key is unknown or has been revoked".to_owned(),
            Self::Forbidden => "this call needs an admin API key".to_owned(),
            Self::InvalidRequest(message) => message.clone(),
            Self::NotLinked => {
                "this Discord user has not linked a Microsoft account; they can run \
                 /link-microsoft"
                    .to_owned()
            }
            Self::NotFound => "no such route; see /openapi.json".to_owned(),
            Self::MethodNotAllowed => "this route does not accept that method".to_owned(),
            Self::RelinkRequired => {
                "Microsoft no longer accepts this user's sign-in; they must run /link-microsoft \
                 again"
                    .to_owned()
            }
            Self::ScopeRefused { code } => format!(
                "Microsoft refused a token for this scope ({code}); the user or an admin must \
                 consent to it, or the scope is malformed"
            ),
            Self::ProviderUnavailable { retry_after } => format!(
                "Microsoft is unavailable and no valid token is stored; retry in {} seconds",
                retry_after_secs(*retry_after)
            ),
            Self::Internal => "internal error; the cause is in the linkbot log".to_owned(),
        }
    }
}

/// Whole seconds for `Retry-After`, never 0 so a client does not retry in a tight loop.
fn retry_after_secs(wait: Duration) -> u64 {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    secs.max(1)
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, error) = self.status_and_code();
        let message = self.message();
        let mut response = (
            status,
            axum::Json(Body {
                error,
                message: &message,
            }),
        )
            .into_response();
        let headers = response.headers_mut();
        match self {
            Self::MissingKey => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"linkbot\""),
                );
            }
            Self::BadKey => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"linkbot\", error=\"invalid_token\""),
                );
            }
            Self::ProviderUnavailable { retry_after } => {
                headers.insert(
                    header::RETRY_AFTER,
                    HeaderValue::from(retry_after_secs(retry_after)),
                );
            }
            Self::Forbidden
            | Self::InvalidRequest(_)
            | Self::NotLinked
            | Self::NotFound
            | Self::MethodNotAllowed
            | Self::RelinkRequired
            | Self::ScopeRefused { .. }
            | Self::Internal => {}
        }
        response
    }
}

impl From<TokenError> for ApiError {
    fn from(err: TokenError) -> Self {
        match err {
            TokenError::NotLinked => Self::NotLinked,
            TokenError::RelinkRequired => Self::RelinkRequired,
            TokenError::ScopeRefused { code } => Self::ScopeRefused { code },
            TokenError::ProviderUnavailable { retry_after } => {
                Self::ProviderUnavailable { retry_after }
            }
            // The token service logged the cause when it gave up.
            TokenError::Storage => Self::Internal,
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        tracing::error!(error = %error_chain(&err), "API request failed in the store");
        Self::Internal
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        Self::InvalidRequest(rejection.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        Self::InvalidRequest(rejection.body_text())
    }
}

/// `error: cause: cause`, for the one log line of a 5xx.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every_variant() -> Vec<ApiError> {
        vec![
            ApiError::MissingKey,
            ApiError::BadKey,
            ApiError::Forbidden,
            ApiError::InvalidRequest("bad".into()),
            ApiError::NotLinked,
            ApiError::NotFound,
            ApiError::MethodNotAllowed,
            ApiError::RelinkRequired,
            ApiError::ScopeRefused {
                code: "invalid_grant:AADSTS65001".into(),
            },
            ApiError::ProviderUnavailable {
                retry_after: Duration::from_millis(1500),
            },
            ApiError::Internal,
        ]
    }

    #[test]
    fn every_error_code_is_listed_and_every_listed_code_is_used() {
        let used: Vec<_> = every_variant()
            .iter()
            .map(|e| e.status_and_code().1)
            .collect();

        for code in &used {
            assert!(ERROR_CODES.contains(code), "{code} is not in ERROR_CODES");
        }
        for code in ERROR_CODES {
            assert!(used.contains(code), "{code} is listed but never answered");
        }
    }

    #[test]
    fn token_errors_map_to_the_documented_statuses() {
        let cases = [
            (TokenError::NotLinked, 404),
            (TokenError::RelinkRequired, 409),
            (TokenError::ScopeRefused { code: "x".into() }, 403),
            (
                TokenError::ProviderUnavailable {
                    retry_after: Duration::from_secs(30),
                },
                503,
            ),
            (TokenError::Storage, 500),
        ];

        for (err, status) in cases {
            assert_eq!(ApiError::from(err).status_and_code().0.as_u16(), status);
        }
    }

    #[test]
    fn retry_after_is_whole_seconds_rounded_up_and_never_zero() {
        assert_eq!(retry_after_secs(Duration::from_millis(1500)), 2);
        assert_eq!(retry_after_secs(Duration::from_secs(30)), 30);
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
    }

    #[test]
    fn server_errors_have_a_generic_body() {
        let response = ApiError::Internal.into_response();

        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(ApiError::Internal.message().contains("internal error"));
    }
}
