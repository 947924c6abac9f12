//! `GET /v1/users/{discord_id}/token`: a fresh access token for a linked user, audited.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use chrono::{SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use crate::api::auth::Caller;
use crate::api::params::{Params, UserPath};
use crate::api::{ApiError, ApiState};
use crate::domain::DiscordUserId;
use crate::store::audit::{self, AuditEvent};
use crate::tokens::{DEFAULT_MIN_VALID, FreshToken, TokenError};

/// Longest `min_valid` accepted. Microsoft's access tokens live 60 to 90 minutes, so a larger
/// value could never be met and would refresh on every call.
pub const MAX_MIN_VALID_SECS: u64 = 3000;

/// Longest `scope` accepted, in bytes.
const MAX_SCOPE_LEN: usize = 1024;

/// The query string of a token request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenQuery {
    /// Space-separated scopes of another resource.
    scope: Option<String>,
    /// Seconds the token must still be valid for.
    min_valid: Option<u64>,
    /// Refresh now even if the stored token is fresh enough.
    force: Option<bool>,
}

/// The token answer.
#[derive(Debug, Serialize)]
struct TokenAnswer<'a> {
    access_token: &'a str,
    token_type: &'static str,
    expires_at: String,
    expires_in: i64,
    scope: &'a str,
    account: AccountAnswer<'a>,
}

/// Whose token it is.
#[derive(Debug, Serialize)]
pub struct AccountAnswer<'a> {
    discord_id: String,
    username: &'a str,
    display_name: &'a str,
    tenant_id: &'a str,
    object_id: &'a str,
}

impl<'a> AccountAnswer<'a> {
    /// The account of `user`'s link.
    pub fn new(user: DiscordUserId, account: &'a crate::domain::Account) -> Self {
        Self {
            discord_id: user.to_string(),
            username: &account.username,
            display_name: &account.display_name,
            tenant_id: &account.tenant_id,
            object_id: &account.object_id,
        }
    }
}

/// `GET /v1/users/{discord_id}/token`.
pub async fn token(
    caller: Caller,
    State(state): State<ApiState>,
    UserPath(user): UserPath,
    Params(query): Params<TokenQuery>,
) -> Result<Response, ApiError> {
    let scope = query.scope.as_deref().map(check_scope).transpose()?;
    let min_valid = check_min_valid(query.min_valid)?;
    let force = query.force.unwrap_or(false);

    let result = state
        .app
        .tokens
        .fresh_token(user, scope, min_valid, force)
        .await;

    // Attempts on a link are audited whatever their outcome; ids nobody linked are not.
    let outcome = match &result {
        Ok(_) => Some(audit::OK),
        Err(TokenError::NotLinked) => None,
        Err(err) => Some(ApiError::from(err.clone()).status_and_code().1),
    };
    if let Some(outcome) = outcome {
        let event = AuditEvent {
            at: Utc::now(),
            actor: caller.actor(),
            action: audit::TOKEN_ISSUE.to_owned(),
            subject: user.to_string(),
            detail: scope.map(str::to_owned),
            outcome: outcome.to_owned(),
        };
        state
            .recorder
            .audit(event)
            .await
            .map_err(|_| ApiError::Internal)?;
    }
    let token = result?;
    tracing::debug!(user_id = %user, api_key = %caller.name, forced = force, "token handed out");
    Ok(answer(user, &token))
}

fn answer(user: DiscordUserId, token: &FreshToken) -> Response {
    let body = TokenAnswer {
        access_token: token.access_token.expose(),
        token_type: "Bearer",
        expires_at: token.expires_at.to_rfc3339_opts(SecondsFormat::Secs, true),
        expires_in: (token.expires_at - Utc::now()).num_seconds().max(0),
        scope: &token.scope,
        account: AccountAnswer::new(user, &token.account),
    };
    let mut response = Json(body).into_response();
    // RFC 6749 §5.1: token answers must not be cached.
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// A scope is visible ASCII words separated by spaces, like `api://reports/.default`.
fn check_scope(scope: &str) -> Result<&str, ApiError> {
    let scope = scope.trim();
    let valid = !scope.is_empty()
        && scope.len() <= MAX_SCOPE_LEN
        && scope.bytes().all(|b| b == b' ' || b.is_ascii_graphic());
    if !valid {
        return Err(ApiError::InvalidRequest(format!(
            "scope must be 1 to {MAX_SCOPE_LEN} characters of space-separated scope names"
        )));
    }
    Ok(scope)
}

fn check_min_valid(secs: Option<u64>) -> Result<Duration, ApiError> {
    match secs {
        None => Ok(DEFAULT_MIN_VALID),
        Some(secs) if secs <= MAX_MIN_VALID_SECS => Ok(Duration::from_secs(secs)),
        Some(_) => Err(ApiError::InvalidRequest(format!(
            "min_valid must be a number of seconds from 0 to {MAX_MIN_VALID_SECS}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_are_trimmed_printable_words() {
        assert_eq!(
            check_scope(" api://reports/.default ").unwrap(),
            "api://reports/.default"
        );
        assert_eq!(
            check_scope("Mail.Read User.Read").unwrap(),
            "Mail.Read User.Read"
        );
        for bad in ["", "   ", "Mail\nRead", "Mail\u{e9}", &"x".repeat(2000)] {
            assert!(check_scope(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn min_valid_defaults_to_five_minutes_and_is_capped() {
        assert_eq!(check_min_valid(None).unwrap(), Duration::from_secs(300));
        assert_eq!(check_min_valid(Some(0)).unwrap(), Duration::ZERO);
        assert!(check_min_valid(Some(MAX_MIN_VALID_SECS + 1)).is_err());
    }
}
