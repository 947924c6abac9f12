//! `/v1/users`: link status without secrets, the paged list of links, and unlinking (admin).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse as _, Response};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use crate::api::auth::{Admin, Caller};
use crate::api::params::{Params, UserPath, parse_user};
use crate::api::tokens::AccountAnswer;
use crate::api::{ApiError, ApiState};
use crate::domain::{DiscordUserId, LinkState};
use crate::store::audit::AuditEvent;
use crate::store::links::{self, LinkStatus};
use crate::store::{Store, flows};

/// Page size when `limit` is not given.
pub const DEFAULT_LIMIT: u32 = 100;

/// Largest page.
pub const MAX_LIMIT: u32 = 1000;

/// A user's link, or sign-in in progress, without secrets.
#[derive(Debug, Serialize)]
pub struct UserAnswer<'a> {
    discord_id: String,
    state: LinkState,
    account: Option<AccountAnswer<'a>>,
    scopes: Vec<&'a str>,
    linked_at: Option<String>,
    last_refresh_at: Option<String>,
    last_used_at: Option<String>,
    access_token_expires_at: Option<String>,
    last_error: Option<&'a str>,
}

impl<'a> UserAnswer<'a> {
    fn linked(status: &'a LinkStatus) -> Self {
        Self {
            discord_id: status.user.to_string(),
            state: status.state,
            account: Some(AccountAnswer::new(status.user, &status.account)),
            scopes: status.scopes.split_whitespace().collect(),
            linked_at: Some(rfc3339(status.linked_at)),
            last_refresh_at: Some(rfc3339(status.last_refresh_at)),
            last_used_at: status.last_used_at.map(rfc3339),
            access_token_expires_at: Some(rfc3339(status.access_expires_at)),
            last_error: status.last_error.as_deref(),
        }
    }

    fn pending(user: DiscordUserId) -> Self {
        Self {
            discord_id: user.to_string(),
            state: LinkState::Pending,
            account: None,
            scopes: Vec::new(),
            linked_at: None,
            last_refresh_at: None,
            last_used_at: None,
            access_token_expires_at: None,
            last_error: None,
        }
    }
}

/// One page of links.
#[derive(Debug, Serialize)]
pub struct UserPage<'a> {
    users: Vec<UserAnswer<'a>>,
    /// Pass as `after` for the next page; `null` on the last one.
    next: Option<String>,
}

/// The query string of the list.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    limit: Option<u32>,
    after: Option<String>,
    state: Option<String>,
}

fn rfc3339(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// `GET /v1/users/{discord_id}`.
pub async fn status(
    _caller: Caller,
    State(state): State<ApiState>,
    UserPath(user): UserPath,
) -> Result<Response, ApiError> {
    if let Some(status) = links::status(&state.app.store, user).await? {
        return Ok(Json(UserAnswer::linked(&status)).into_response());
    }
    if is_signing_in(&state.app.store, user).await? {
        return Ok(Json(UserAnswer::pending(user)).into_response());
    }
    Err(ApiError::NotLinked)
}

/// Whether `user` has a device code that is still waiting to be used.
async fn is_signing_in(store: &Store, user: DiscordUserId) -> Result<bool, ApiError> {
    let flow = flows::find(store, user).await?;
    Ok(flow.is_some_and(|flow| flow.outcome.is_none() && flow.expires_at > Utc::now()))
}

/// `GET /v1/users`.
pub async fn list(
    _caller: Caller,
    State(state): State<ApiState>,
    Params(query): Params<ListQuery>,
) -> Result<Response, ApiError> {
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::InvalidRequest(format!(
            "limit must be a number from 1 to {MAX_LIMIT}"
        )));
    }
    let after = query
        .after
        .as_deref()
        .map(|text| parse_user(text, "after"))
        .transpose()?;
    let filter = query.state.as_deref().map(parse_state).transpose()?;

    // One row more than asked tells whether another page exists.
    let mut links = links::list(&state.app.store, filter, after, limit + 1).await?;
    let more = links.len() > limit as usize;
    links.truncate(limit as usize);
    let next = more
        .then(|| links.last().map(|link| link.user.to_string()))
        .flatten();
    let page = UserPage {
        users: links.iter().map(UserAnswer::linked).collect(),
        next,
    };
    Ok(Json(page).into_response())
}

fn parse_state(text: &str) -> Result<LinkState, ApiError> {
    match LinkState::parse(text) {
        Some(state @ (LinkState::Active | LinkState::RelinkRequired)) => Ok(state),
        Some(LinkState::Pending) | None => Err(ApiError::InvalidRequest(
            "state must be active or relink_required".to_owned(),
        )),
    }
}

/// `DELETE /v1/users/{discord_id}`: erases the link and its tokens.
pub async fn delete(
    Admin(caller): Admin,
    State(state): State<ApiState>,
    UserPath(user): UserPath,
) -> Result<StatusCode, ApiError> {
    if !links::delete(&state.app.store, user).await? {
        return Err(ApiError::NotLinked);
    }
    tracing::info!(user_id = %user, api_key = %caller.name, "account unlinked through the API");
    let event = AuditEvent {
        at: Utc::now(),
        actor: caller.actor(),
        action: "link.delete".to_owned(),
        subject: user.to_string(),
        detail: None,
        outcome: "ok".to_owned(),
    };
    state
        .recorder
        .audit(event)
        .await
        .map_err(|_| ApiError::Internal)?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_link_states_can_be_listed() {
        assert_eq!(parse_state("active").unwrap(), LinkState::Active);
        assert_eq!(
            parse_state("relink_required").unwrap(),
            LinkState::RelinkRequired
        );
        assert!(parse_state("pending").is_err());
        assert!(parse_state("ACTIVE").is_err());
    }
}
