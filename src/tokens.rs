//! Fresh access tokens: refresh on demand with one refresh in flight per link, a background
//! worker that refreshes ahead of expiry and keeps idle links alive, and the failure policy.

use chrono::{DateTime, TimeDelta, Utc};

/// How long before expiry a hot link is refreshed by the background worker.
pub const REFRESH_AHEAD: TimeDelta = TimeDelta::minutes(10);

/// When a newly stored access token should first be refreshed: a little before it expires.
pub fn first_refresh_at(now: DateTime<Utc>, expires_at: DateTime<Utc>) -> DateTime<Utc> {
    (expires_at - REFRESH_AHEAD).max(now)
}
