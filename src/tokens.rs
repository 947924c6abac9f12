//! Fresh access tokens: refresh on demand with one refresh in flight per link (concurrent
//! callers share its result), a background worker that refreshes hot links ahead of expiry and
//! keeps idle links alive, and the failure policy of reference §5: permanent failures mark the
//! link `relink_required` and alert the user once; transient ones back off with jitter and
//! alert no one; operator errors are logged once per incident.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use futures::future::{BoxFuture, FutureExt as _, Shared};
use futures::stream::{self, StreamExt as _};
use rand::Rng as _;
use tokio_util::sync::CancellationToken;

use crate::domain::{Account, DiscordUserId, LinkState, Secret};
use crate::microsoft::{MicrosoftClient, MicrosoftError, TokenSet};
use crate::notify::{Alert, Notifier};
use crate::store::links::{self, Link, Refreshed, ScopedToken};
use crate::store::{Store, StoreError};

/// How long before expiry a hot link is refreshed by the background worker.
pub const REFRESH_AHEAD: TimeDelta = TimeDelta::minutes(10);

/// A link used within this window counts as hot and is refreshed ahead of expiry.
pub const HOT_WINDOW: TimeDelta = TimeDelta::hours(24);

/// A link's `last_used_at` is rewritten at most this often.
const USE_RECORD_PERIOD: TimeDelta = TimeDelta::minutes(1);

/// Default for `min_valid`: MSAL treats a token with less than 5 minutes left as expired.
pub const DEFAULT_MIN_VALID: Duration = Duration::from_secs(300);

/// First and longest wait after a transient refresh failure.
const BACKOFF_BASE: TimeDelta = TimeDelta::seconds(30);
const BACKOFF_MAX: TimeDelta = TimeDelta::hours(1);

/// Refreshes run by one worker pass at the same time; Microsoft throttles bursts.
const WORKER_CONCURRENCY: usize = 4;

/// Due links fetched per query.
const WORKER_BATCH: u32 = 500;

/// How often the worker looks for due links when none is known to be due sooner.
const WORKER_TICK: Duration = Duration::from_secs(30);

/// When a newly stored access token should first be refreshed: a little before it expires.
pub fn first_refresh_at(now: DateTime<Utc>, expires_at: DateTime<Utc>) -> DateTime<Utc> {
    (expires_at - REFRESH_AHEAD).max(now)
}

/// The current time; replaceable so tests can run an hour of failures in a moment.
#[derive(Clone)]
pub struct Clock(Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>);

impl Clock {
    /// The system clock.
    pub fn system() -> Self {
        Self(Arc::new(Utc::now))
    }

    /// A clock reading `now`.
    pub fn from_fn(now: impl Fn() -> DateTime<Utc> + Send + Sync + 'static) -> Self {
        Self(Arc::new(now))
    }

    /// The time.
    pub fn now(&self) -> DateTime<Utc> {
        (self.0)()
    }
}

impl fmt::Debug for Clock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Clock")
    }
}

/// An access token ready to hand out.
#[derive(Clone, Debug)]
pub struct FreshToken {
    /// The token.
    pub access_token: Secret,
    /// When it expires.
    pub expires_at: DateTime<Utc>,
    /// Scopes it carries, as Microsoft sent them.
    pub scope: String,
    /// Whose it is.
    pub account: Account,
}

/// Why no token can be handed out.
#[derive(Clone, Debug, thiserror::Error)]
pub enum TokenError {
    /// The user has no link.
    #[error("the user has not linked a Microsoft account")]
    NotLinked,
    /// The link needs a new sign-in.
    #[error("the user must link their Microsoft account again")]
    RelinkRequired,
    /// The user has not consented to the requested scope (or it is malformed).
    #[error("the requested scope was refused ({code})")]
    ScopeRefused {
        /// The error code from Microsoft.
        code: String,
    },
    /// Microsoft is failing (or refusing the app) and no valid token is left.
    #[error("Microsoft is unavailable")]
    ProviderUnavailable {
        /// How long to wait before asking again.
        retry_after: Duration,
    },
    /// The database failed; the cause was logged.
    #[error("internal storage error")]
    Storage,
}

impl From<StoreError> for TokenError {
    fn from(err: StoreError) -> Self {
        tracing::error!(error = %err, source = ?std::error::Error::source(&err), "token store failed");
        Self::Storage
    }
}

/// Counters of refresh outcomes, exported by the API's `/metrics`.
#[derive(Debug, Default)]
pub struct RefreshMetrics {
    /// Refreshes that succeeded.
    pub succeeded: AtomicU64,
    /// Refreshes that failed transiently.
    pub transient: AtomicU64,
    /// Refreshes that failed for good (link marked `relink_required`).
    pub permanent: AtomicU64,
    /// Refreshes refused because of the app's configuration.
    pub operator: AtomicU64,
    /// Users alerted to re-link.
    pub alerts: AtomicU64,
}

impl RefreshMetrics {
    /// `(outcome, count)` pairs.
    pub fn snapshot(&self) -> [(&'static str, u64); 4] {
        [
            ("success", self.succeeded.load(Ordering::Relaxed)),
            ("transient", self.transient.load(Ordering::Relaxed)),
            ("permanent", self.permanent.load(Ordering::Relaxed)),
            ("operator", self.operator.load(Ordering::Relaxed)),
        ]
    }
}

type SharedRefresh = Shared<BoxFuture<'static, Result<FreshToken, TokenError>>>;

/// Key of an in-flight refresh: the user and, for other resources, the scope set.
type FlightKey = (DiscordUserId, Option<String>);

/// Hands out fresh tokens. Cheap to clone.
#[derive(Clone)]
pub struct Tokens {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    microsoft: MicrosoftClient,
    notifier: Arc<dyn Notifier>,
    clock: Clock,
    keepalive: TimeDelta,
    metrics: RefreshMetrics,
    in_flight: Mutex<HashMap<FlightKey, SharedRefresh>>,
    /// Set while the app registration is being refused, so the incident is logged once.
    operator_incident: AtomicBool,
}

impl Tokens {
    /// A token service refreshing idle links every `keepalive`.
    pub fn new(
        store: Store,
        microsoft: MicrosoftClient,
        notifier: Arc<dyn Notifier>,
        clock: Clock,
        keepalive: Duration,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                microsoft,
                notifier,
                clock,
                keepalive: TimeDelta::from_std(keepalive).unwrap_or(TimeDelta::days(7)),
                metrics: RefreshMetrics::default(),
                in_flight: Mutex::new(HashMap::new()),
                operator_incident: AtomicBool::new(false),
            }),
        }
    }

    /// Refresh counters.
    pub fn metrics(&self) -> &RefreshMetrics {
        &self.inner.metrics
    }

    /// An access token for `user` with at least `min_valid` left, refreshed if needed (or
    /// always, with `force`). `scope` asks for a token for another resource, minted from the
    /// same refresh token and cached per scope set.
    ///
    /// # Errors
    /// See [`TokenError`].
    pub async fn fresh_token(
        &self,
        user: DiscordUserId,
        scope: Option<&str>,
        min_valid: Duration,
        force: bool,
    ) -> Result<FreshToken, TokenError> {
        let now = self.inner.clock.now();
        let min_valid = TimeDelta::from_std(min_valid).unwrap_or(TimeDelta::MAX);
        let link = links::find(&self.inner.store, user)
            .await?
            .ok_or(TokenError::NotLinked)?;
        if link.status.state != LinkState::Active {
            return Err(TokenError::RelinkRequired);
        }
        let scope_key = scope
            .map(normalise_scope)
            .filter(|key| !is_link_scope(key, &link.status.scopes));

        let token = match &scope_key {
            None => {
                if !force && link.status.access_expires_at - now >= min_valid {
                    self.token_of(&link)
                } else {
                    self.shared_refresh(user, None, Some(link.status.last_refresh_at))
                        .await?
                }
            }
            Some(key) => {
                let cached = links::find_scoped(&self.inner.store, user, key).await?;
                match cached {
                    Some(cached) if !force && cached.expires_at - now >= min_valid => FreshToken {
                        access_token: cached.access_token,
                        expires_at: cached.expires_at,
                        scope: cached.scope,
                        account: link.status.account.clone(),
                    },
                    cached => {
                        let seen = cached.map(|c| c.expires_at);
                        self.shared_refresh(user, Some(key.clone()), seen).await?
                    }
                }
            }
        };
        self.note_use(&link, now).await;
        Ok(token)
    }

    fn token_of(&self, link: &Link) -> FreshToken {
        FreshToken {
            access_token: link.access_token.clone(),
            expires_at: link.status.access_expires_at,
            scope: link.status.scopes.clone(),
            account: link.status.account.clone(),
        }
    }

    /// Records the use and, for a link on the idle schedule, moves its next refresh ahead of
    /// expiry so later calls rarely wait.
    async fn note_use(&self, link: &Link, now: DateTime<Utc>) {
        let user = link.status.user;
        // Hotness is judged over a day, so a use a minute old is fresh enough; skipping the
        // write keeps busy links' reads free of SQLite's single write lock.
        let recorded = link
            .status
            .last_used_at
            .is_some_and(|used| now - used < USE_RECORD_PERIOD);
        if !recorded {
            if let Err(err) = links::touch(&self.inner.store, user, now).await {
                tracing::warn!(user_id = %user, error = %err, "could not record token use");
            }
        }
        let hot_at = first_refresh_at(now, link.status.access_expires_at);
        if link.status.next_refresh_at > hot_at && link.status.transient_failures == 0 {
            if let Err(err) = links::reschedule(&self.inner.store, user, hot_at).await {
                tracing::warn!(user_id = %user, error = %err, "could not reschedule refresh");
            }
        }
    }

    /// Joins the refresh in flight for this key, or starts one. The refresh runs as its own
    /// task, so a caller that gives up does not cancel it halfway through a rotation.
    async fn shared_refresh(
        &self,
        user: DiscordUserId,
        scope_key: Option<String>,
        seen: Option<DateTime<Utc>>,
    ) -> Result<FreshToken, TokenError> {
        let key = (user, scope_key.clone());
        let shared = {
            let mut in_flight = self
                .inner
                .in_flight
                .lock()
                .expect("in-flight map is never poisoned");
            if let Some(shared) = in_flight.get(&key) {
                shared.clone()
            } else {
                let this = self.clone();
                let task_key = key.clone();
                let task = tokio::spawn(async move {
                    let result = this.refresh_unless_done(user, scope_key, seen).await;
                    this.inner
                        .in_flight
                        .lock()
                        .expect("in-flight map is never poisoned")
                        .remove(&task_key);
                    result
                });
                let shared = async move {
                    task.await.unwrap_or_else(|err| {
                        tracing::error!(error = %err, "refresh task died");
                        Err(TokenError::Storage)
                    })
                }
                .boxed()
                .shared();
                in_flight.insert(key, shared.clone());
                shared
            }
        };
        shared.await
    }

    /// Refreshes, unless another refresh finished since the caller looked (`seen`), in which
    /// case its stored result is handed out.
    async fn refresh_unless_done(
        &self,
        user: DiscordUserId,
        scope_key: Option<String>,
        seen: Option<DateTime<Utc>>,
    ) -> Result<FreshToken, TokenError> {
        let link = links::find(&self.inner.store, user)
            .await?
            .ok_or(TokenError::NotLinked)?;
        if link.status.state != LinkState::Active {
            return Err(TokenError::RelinkRequired);
        }
        let now = self.inner.clock.now();
        match &scope_key {
            None => {
                if seen.is_some_and(|seen| link.status.last_refresh_at > seen)
                    && link.status.access_expires_at > now
                {
                    return Ok(self.token_of(&link));
                }
                self.refresh_link(&link).await
            }
            Some(key) => {
                if let Some(cached) = links::find_scoped(&self.inner.store, user, key).await? {
                    if Some(cached.expires_at) != seen && cached.expires_at > now {
                        return Ok(FreshToken {
                            access_token: cached.access_token,
                            expires_at: cached.expires_at,
                            scope: cached.scope,
                            account: link.status.account.clone(),
                        });
                    }
                }
                self.refresh_scoped(&link, key).await
            }
        }
    }

    /// Refreshes the link's main token and applies the failure policy.
    async fn refresh_link(&self, link: &Link) -> Result<FreshToken, TokenError> {
        let user = link.status.user;
        let result = if link.refresh_token.expose().is_empty() {
            Err(MicrosoftError::RelinkRequired {
                error: "no_refresh_token".into(),
                code: None,
                suberror: None,
            })
        } else {
            self.inner
                .microsoft
                .refresh(&link.refresh_token, &link.status.scopes)
                .await
        };
        let now = self.inner.clock.now();
        match result {
            Ok(tokens) => {
                self.recovered();
                let expires_at = now + tokens.expires_in;
                let refreshed = Refreshed {
                    access_token: tokens.access_token.clone(),
                    access_expires_at: expires_at,
                    refresh_token: tokens.refresh_token,
                    scopes: if tokens.scope.is_empty() {
                        link.status.scopes.clone()
                    } else {
                        tokens.scope.clone()
                    },
                    refreshed_at: now,
                    next_refresh_at: self.next_planned(link, now, expires_at),
                };
                links::save_refresh(&self.inner.store, user, &refreshed).await?;
                self.inner.metrics.succeeded.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(user_id = %user, "token refreshed");
                Ok(FreshToken {
                    access_token: refreshed.access_token,
                    expires_at,
                    scope: refreshed.scopes,
                    account: link.status.account.clone(),
                })
            }
            Err(err) => self.refresh_failed(link, &err, now).await,
        }
    }

    /// Mints a token for another resource; its refresh token rotates the link's.
    async fn refresh_scoped(&self, link: &Link, scope_key: &str) -> Result<FreshToken, TokenError> {
        let user = link.status.user;
        let result = self
            .inner
            .microsoft
            .refresh(&link.refresh_token, scope_key)
            .await;
        let now = self.inner.clock.now();
        let tokens: TokenSet = match result {
            Ok(tokens) => tokens,
            // Consent or scope problems concern this resource only, not the link.
            Err(MicrosoftError::RelinkRequired {
                error,
                code,
                suberror,
            }) if suberror.as_deref() == Some("consent_required") || code == Some(65001) => {
                let err = MicrosoftError::RelinkRequired {
                    error,
                    code,
                    suberror,
                };
                return Err(TokenError::ScopeRefused { code: err.code() });
            }
            Err(err @ MicrosoftError::Operator { .. })
                if err.code().starts_with("invalid_scope") =>
            {
                return Err(TokenError::ScopeRefused { code: err.code() });
            }
            Err(err) => return self.refresh_failed(link, &err, now).await,
        };
        self.recovered();
        let token = ScopedToken {
            access_token: tokens.access_token,
            scope: if tokens.scope.is_empty() {
                scope_key.to_owned()
            } else {
                tokens.scope
            },
            expires_at: now + tokens.expires_in,
        };
        links::save_scoped(
            &self.inner.store,
            user,
            scope_key,
            &token,
            tokens.refresh_token.as_ref(),
        )
        .await?;
        self.inner.metrics.succeeded.fetch_add(1, Ordering::Relaxed);
        Ok(FreshToken {
            access_token: token.access_token,
            expires_at: token.expires_at,
            scope: token.scope,
            account: link.status.account.clone(),
        })
    }

    async fn refresh_failed(
        &self,
        link: &Link,
        err: &MicrosoftError,
        now: DateTime<Utc>,
    ) -> Result<FreshToken, TokenError> {
        let user = link.status.user;
        let code = err.code();
        match err {
            MicrosoftError::RelinkRequired { .. }
            | MicrosoftError::PolicyBlocked
            | MicrosoftError::Declined
            | MicrosoftError::Expired => {
                self.inner.metrics.permanent.fetch_add(1, Ordering::Relaxed);
                tracing::info!(user_id = %user, error = %code, "refresh refused for good; link needs a new sign-in");
                if links::mark_relink_required(&self.inner.store, user, &code, now).await? {
                    let alert = Alert::RelinkRequired {
                        reason: relink_reason(err),
                    };
                    match self.inner.notifier.alert(user, &alert).await {
                        Ok(()) => {
                            self.inner.metrics.alerts.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(notify_err) => {
                            tracing::warn!(user_id = %user, error = %notify_err, "could not alert the user to re-link");
                        }
                    }
                }
                Err(TokenError::RelinkRequired)
            }
            MicrosoftError::Operator { .. } => {
                self.inner.metrics.operator.fetch_add(1, Ordering::Relaxed);
                if !self.inner.operator_incident.swap(true, Ordering::Relaxed) {
                    tracing::error!(error = %code, "Microsoft refuses the app registration; check MICROSOFT_CLIENT_ID, MICROSOFT_TENANT and \"Allow public client flows\"");
                }
                self.back_off(link, &code, None, now).await
            }
            MicrosoftError::Transient { retry_after, .. } => {
                self.inner.metrics.transient.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(user_id = %user, error = %code, "refresh failed; will retry");
                self.back_off(link, &code, *retry_after, now).await
            }
            MicrosoftError::BadVerificationCode | MicrosoftError::Rejected { .. } => {
                self.inner.metrics.transient.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(user_id = %user, error = %code, "unexpected refresh answer; will retry");
                self.back_off(link, &code, None, now).await
            }
        }
    }

    /// Plans the next attempt and serves the current token while it is still valid.
    async fn back_off(
        &self,
        link: &Link,
        code: &str,
        retry_after: Option<Duration>,
        now: DateTime<Utc>,
    ) -> Result<FreshToken, TokenError> {
        let wait = backoff(link.status.transient_failures, retry_after);
        links::record_transient_failure(&self.inner.store, link.status.user, code, now + wait)
            .await?;
        if link.status.access_expires_at > now {
            return Ok(self.token_of(link));
        }
        Err(TokenError::ProviderUnavailable {
            retry_after: retry_after
                .unwrap_or_else(|| wait.to_std().unwrap_or(Duration::from_secs(30))),
        })
    }

    fn recovered(&self) {
        if self.inner.operator_incident.swap(false, Ordering::Relaxed) {
            tracing::info!("Microsoft accepts the app registration again");
        }
    }

    /// When the worker should refresh next: ahead of expiry for hot links, after the
    /// keep-alive period for idle ones, with jitter so links refreshed together drift apart.
    fn next_planned(
        &self,
        link: &Link,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> DateTime<Utc> {
        let hot = link
            .status
            .last_used_at
            .is_some_and(|used| now - used < HOT_WINDOW);
        if hot {
            first_refresh_at(now, expires_at) - jitter(TimeDelta::minutes(2))
        } else {
            now + self.inner.keepalive - jitter(self.inner.keepalive / 10)
        }
    }

    /// One pass of the background worker: refreshes every due link, a few at a time. Returns
    /// how many links were looked at.
    ///
    /// # Errors
    /// Fails when the due links cannot be read.
    pub async fn run_due(&self) -> Result<usize, StoreError> {
        let mut handled = 0;
        loop {
            let now = self.inner.clock.now();
            let due = links::due(&self.inner.store, now, WORKER_BATCH).await?;
            if due.is_empty() {
                return Ok(handled);
            }
            let batch = due.len();
            stream::iter(due)
                .for_each_concurrent(WORKER_CONCURRENCY, |user| async move {
                    self.run_one(user).await
                })
                .await;
            handled += batch;
            if batch < WORKER_BATCH as usize {
                return Ok(handled);
            }
        }
    }

    async fn run_one(&self, user: DiscordUserId) {
        let now = self.inner.clock.now();
        let link = match links::find(&self.inner.store, user).await {
            Ok(Some(link)) if link.status.state == LinkState::Active => link,
            Ok(_) => return,
            Err(err) => {
                tracing::warn!(user_id = %user, error = %err, "could not read a due link");
                return;
            }
        };
        let hot = link
            .status
            .last_used_at
            .is_some_and(|used| now - used < HOT_WINDOW);
        let keepalive_due =
            now - link.status.last_refresh_at >= self.inner.keepalive - self.inner.keepalive / 10;
        let retrying = link.status.transient_failures > 0;
        if !hot && !keepalive_due && !retrying {
            // Idle and recently refreshed: wait for the keep-alive instead of refreshing hourly.
            let at = link.status.last_refresh_at + self.inner.keepalive
                - jitter(self.inner.keepalive / 10);
            if let Err(err) = links::reschedule(&self.inner.store, user, at.max(now)).await {
                tracing::warn!(user_id = %user, error = %err, "could not reschedule refresh");
            }
            return;
        }
        // Errors were handled (and logged) by the failure policy.
        let _ = self
            .shared_refresh(user, None, Some(link.status.last_refresh_at))
            .await;
    }

    /// Runs the background worker until `shutdown` is cancelled.
    pub async fn run_worker(self, shutdown: CancellationToken) {
        loop {
            if let Err(err) = self.run_due().await {
                tracing::error!(error = %err, "background refresh pass failed");
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(WORKER_TICK) => {}
            }
        }
    }
}

/// Exponential backoff from [`BACKOFF_BASE`] to [`BACKOFF_MAX`] with up to 25 % jitter, never
/// shorter than the server's `Retry-After`.
fn backoff(failures: i64, retry_after: Option<Duration>) -> TimeDelta {
    let exponent = u32::try_from(failures.clamp(0, 16)).unwrap_or(16);
    let base = (BACKOFF_BASE * 2_i32.pow(exponent.min(10))).min(BACKOFF_MAX);
    let wait = base + jitter(base / 4);
    let floor = retry_after
        .and_then(|r| TimeDelta::from_std(r).ok())
        .unwrap_or_default();
    wait.max(floor)
}

/// A random span in `[0, max]`.
fn jitter(max: TimeDelta) -> TimeDelta {
    let millis = max.num_milliseconds().max(0);
    if millis == 0 {
        return TimeDelta::zero();
    }
    TimeDelta::milliseconds(rand::thread_rng().gen_range(0..=millis))
}

/// Scope sets compare as sorted, lower-cased, deduplicated words.
fn normalise_scope(scope: &str) -> String {
    let mut words: Vec<String> = scope
        .split_whitespace()
        .map(str::to_ascii_lowercase)
        .collect();
    words.retain(|w| {
        !matches!(
            w.as_str(),
            "offline_access" | "openid" | "profile" | "email"
        )
    });
    words.sort();
    words.dedup();
    words.join(" ")
}

/// Whether a requested scope set is already covered by the link's own token.
fn is_link_scope(key: &str, link_scopes: &str) -> bool {
    if key.is_empty() {
        return true;
    }
    let granted: Vec<String> = link_scopes
        .split_whitespace()
        .map(str::to_ascii_lowercase)
        .collect();
    key.split(' ').all(|want| {
        let short = want
            .strip_prefix("https://graph.microsoft.com/")
            .unwrap_or(want);
        granted.iter().any(|g| g == want || g == short)
    })
}

/// Why a user must sign in again, in plain words.
fn relink_reason(err: &MicrosoftError) -> String {
    let (code, suberror) = match err {
        MicrosoftError::RelinkRequired { code, suberror, .. } => (*code, suberror.as_deref()),
        MicrosoftError::PolicyBlocked => (Some(53003), None),
        _ => (None, None),
    };
    let text = match (code, suberror) {
        (Some(700082), _) => "the saved sign-in was unused for 90 days, so Microsoft expired it",
        (Some(50173 | 70008), _) => {
            "the saved sign-in was revoked or expired (for example after a password change)"
        }
        (Some(50076 | 50078 | 50079), _) | (_, Some("basic_action")) => {
            "your organisation now requires multi-factor authentication for this app"
        }
        (Some(65001), _) | (_, Some("consent_required")) => {
            "the app's permissions were withdrawn or need your consent again"
        }
        (Some(70043), _) | (_, Some("token_expired")) => {
            "your organisation requires you to sign in again from time to time"
        }
        (Some(53003), _) => "your organisation's access policy now blocks this app",
        (Some(50057), _) => "the Microsoft account is disabled",
        _ => "Microsoft no longer accepts the saved sign-in",
    };
    text.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_an_hour_and_respects_retry_after() {
        let first = backoff(0, None);
        assert!(
            first >= BACKOFF_BASE && first <= BACKOFF_BASE + BACKOFF_BASE / 4,
            "{first}"
        );
        let third = backoff(2, None);
        assert!(third >= BACKOFF_BASE * 4, "{third}");
        let late = backoff(40, None);
        assert!(
            late >= BACKOFF_MAX && late <= BACKOFF_MAX + BACKOFF_MAX / 4,
            "{late}"
        );
        assert!(backoff(0, Some(Duration::from_secs(600))) >= TimeDelta::seconds(600));
    }

    #[test]
    fn scope_sets_are_compared_as_sets() {
        assert_eq!(
            normalise_scope("Mail.Read  user.read offline_access"),
            "mail.read user.read"
        );
        assert!(is_link_scope(
            &normalise_scope("User.Read"),
            "User.Read profile openid email"
        ));
        assert!(is_link_scope(
            &normalise_scope("https://graph.microsoft.com/User.Read"),
            "User.Read"
        ));
        assert!(!is_link_scope(
            &normalise_scope("api://other/.default"),
            "User.Read"
        ));
        assert!(is_link_scope(&normalise_scope("openid"), "User.Read"));
    }

    #[test]
    fn relink_reasons_are_plain_words() {
        let err = |code| MicrosoftError::RelinkRequired {
            error: "invalid_grant".into(),
            code: Some(code),
            suberror: None,
        };
        assert!(relink_reason(&err(700082)).contains("90 days"));
        assert!(relink_reason(&err(50173)).contains("revoked"));
        assert!(relink_reason(&err(50076)).contains("multi-factor"));
        assert!(!relink_reason(&err(1)).contains("AADSTS"));
    }

    #[test]
    fn hot_links_refresh_ahead_of_expiry() {
        let now = Utc::now();
        assert_eq!(
            first_refresh_at(now, now + TimeDelta::hours(1)),
            now + TimeDelta::minutes(50)
        );
        assert_eq!(first_refresh_at(now, now + TimeDelta::minutes(5)), now);
    }
}
