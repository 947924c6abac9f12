//! Device-code flows (RFC 8628): start one per Discord user, poll no faster than Microsoft
//! allows, and store the link when the user approves. Flows are persisted, so a restart resumes
//! polling. Chat is reached only through [`Notifier`]; nothing here knows about Discord.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;

use crate::domain::{Account, DiscordUserId, Secret};
use crate::microsoft::{self, Identity, MicrosoftClient, MicrosoftError, PollStep, TokenSet};
use crate::notify::{CodeMessage, CodePrompt, FlowOutcome, Notifier, ReplyHandle};
use crate::store::flows::{self, Flow};
use crate::store::links::{self, NewLink};
use crate::store::{Store, StoreError};

/// RFC 8628 §3.5: each `slow_down` adds 5 seconds to the interval, for good.
const SLOW_DOWN_STEP: Duration = Duration::from_secs(5);

/// Longest wait between polls after transient failures.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// A code shown again when it has less than this left would expire in the user's hands.
const MIN_REUSABLE_LIFETIME: chrono::TimeDelta = chrono::TimeDelta::seconds(30);

/// Why a flow could not be started.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// Microsoft refused or could not be reached.
    #[error("could not start the sign-in")]
    Microsoft(#[from] MicrosoftError),
    /// The database failed.
    #[error("could not record the sign-in")]
    Store(#[from] StoreError),
}

/// The result of [`Linking::start`].
#[derive(Clone, Debug)]
pub struct Started {
    /// The code and where to enter it.
    pub prompt: CodePrompt,
    /// Where it was shown.
    pub message: CodeMessage,
    /// An existing, still valid code was shown again instead of starting a new flow.
    pub reused: bool,
}

/// Runs device flows. Cheap to clone.
#[derive(Clone)]
pub struct Linking {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    microsoft: MicrosoftClient,
    notifier: Arc<dyn Notifier>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    /// Serialises `start` per user so two quick commands cannot open two flows.
    // Limitation: entries are never removed; about 100 bytes per user who ever linked; prune
    // entries whose only holder is the map if that ever matters.
    starting: Mutex<HashMap<DiscordUserId, Arc<tokio::sync::Mutex<()>>>>,
}

impl Linking {
    /// A linking service whose poll tasks stop when `shutdown` is cancelled.
    pub fn new(
        store: Store,
        microsoft: MicrosoftClient,
        notifier: Arc<dyn Notifier>,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                microsoft,
                notifier,
                shutdown,
                tasks: TaskTracker::new(),
                starting: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Starts linking `user`, or shows their still-valid code again. `reply` is the command's
    /// private reply, for the notifier's fallback when DMs are closed.
    ///
    /// # Errors
    /// Fails when Microsoft refuses to issue a code or the database fails.
    pub async fn start(
        &self,
        user: DiscordUserId,
        reply: Option<&ReplyHandle>,
    ) -> Result<Started, LinkError> {
        let lock = {
            let mut starting = self
                .inner
                .starting
                .lock()
                .expect("start lock map is never poisoned");
            Arc::clone(starting.entry(user).or_default())
        };
        let _guard = lock.lock().await;
        // Whole milliseconds, as stored, so the poller can recognise its flow by `created_at`.
        let now = crate::store::from_millis(crate::store::to_millis(Utc::now()));

        if let Some(flow) = flows::find(&self.inner.store, user).await? {
            if flow.outcome.is_none() && flow.expires_at - now > MIN_REUSABLE_LIFETIME {
                let prompt = prompt_of(&flow);
                let message = self.show(user, &prompt, reply).await?;
                tracing::debug!(user_id = %user, "device code shown again");
                return Ok(Started {
                    prompt,
                    message,
                    reused: true,
                });
            }
        }

        let relink = links::status(&self.inner.store, user).await?.is_some();
        let authorization = self.inner.microsoft.request_device_code().await?;
        // The interval counts from Microsoft's answer, so the first poll never comes early.
        let answered_at = Utc::now();
        let flow = Flow {
            user,
            device_code: authorization.device_code,
            user_code: authorization.user_code,
            verification_uri: authorization.verification_uri,
            message: authorization.message,
            expires_at: now + authorization.expires_in,
            interval_secs: authorization.interval.as_secs(),
            next_poll_at: answered_at + authorization.interval,
            relink,
            message_ref: CodeMessage::Nowhere,
            outcome: None,
            created_at: now,
        };
        flows::insert(&self.inner.store, &flow).await?;
        tracing::info!(user_id = %user, relink, "device flow started");

        let prompt = prompt_of(&flow);
        let message = self.show(user, &prompt, reply).await?;
        self.spawn_poller(flow);
        Ok(Started {
            prompt,
            message,
            reused: false,
        })
    }

    /// Resumes every stored open flow: unexpired ones are polled again, expired ones are closed
    /// and their message updated. Returns how many were resumed.
    ///
    /// # Errors
    /// Fails when the database cannot be read.
    pub async fn resume(&self) -> Result<usize, StoreError> {
        let mut resumed = 0;
        for flow in flows::open_flows(&self.inner.store).await? {
            if flow.expires_at <= Utc::now() {
                self.finish(&flow, Finish::Outcome(FlowOutcome::Expired))
                    .await;
            } else {
                self.spawn_poller(flow);
                resumed += 1;
            }
        }
        tracing::info!(resumed, "device flows resumed");
        Ok(resumed)
    }

    /// Waits for every poll task to stop, after the shutdown token was cancelled.
    pub async fn wait_stopped(&self) {
        self.inner.tasks.close();
        self.inner.tasks.wait().await;
    }

    async fn show(
        &self,
        user: DiscordUserId,
        prompt: &CodePrompt,
        reply: Option<&ReplyHandle>,
    ) -> Result<CodeMessage, StoreError> {
        let message = match self.inner.notifier.send_code(user, prompt, reply).await {
            Ok(message) => message,
            Err(err) => {
                tracing::warn!(user_id = %user, error = %err, "device code could not be shown");
                CodeMessage::Nowhere
            }
        };
        flows::set_message(&self.inner.store, user, &message).await?;
        Ok(message)
    }

    fn spawn_poller(&self, flow: Flow) {
        let this = self.clone();
        let span = tracing::debug_span!("device_flow", user_id = %flow.user);
        self.inner
            .tasks
            .spawn(async move { this.poll(flow).await }.instrument(span));
    }

    async fn poll(&self, flow: Flow) {
        let mut schedule = Schedule::new(Duration::from_secs(flow.interval_secs));
        let mut next_poll_at = flow.next_poll_at;
        loop {
            if next_poll_at >= flow.expires_at {
                // The next poll would come after the code's end; Microsoft would only answer
                // expired_token (reference §3, "MSAL Python stops when its expires_at passes").
                self.wait_until(flow.expires_at).await;
                if self.inner.shutdown.is_cancelled() {
                    return;
                }
                self.finish(&flow, Finish::Outcome(FlowOutcome::Expired))
                    .await;
                return;
            }
            if !self.wait_until(next_poll_at).await {
                return;
            }
            if !self.is_current(&flow).await {
                tracing::debug!("device flow replaced or removed; poller stops");
                return;
            }

            let step = self
                .inner
                .microsoft
                .poll_device_code(&flow.device_code)
                .await;
            let decision = schedule.after(&step);
            match decision {
                Decision::Wait(delay) => {
                    if let PollStep::SlowDown = step {
                        tracing::warn!(
                            interval_secs = schedule.interval.as_secs(),
                            "microsoft asked to slow down"
                        );
                    } else if let PollStep::Done(Err(err)) = &step {
                        tracing::warn!(error = %err, "device code poll failed; will retry");
                    }
                    next_poll_at = Utc::now() + delay;
                    if let Err(err) = flows::set_next_poll(
                        &self.inner.store,
                        flow.user,
                        next_poll_at,
                        schedule.interval.as_secs(),
                    )
                    .await
                    {
                        tracing::warn!(error = %err, "could not record the next poll time");
                    }
                }
                Decision::Stop => {
                    let finish = match step {
                        PollStep::Done(Ok(tokens)) => Finish::Tokens(tokens),
                        PollStep::Done(Err(err)) => Finish::Outcome(outcome_of(&err)),
                        PollStep::Pending | PollStep::SlowDown => return,
                    };
                    self.finish(&flow, finish).await;
                    return;
                }
            }
        }
    }

    /// Sleeps until `at`; `false` when shutdown came first.
    async fn wait_until(&self, at: DateTime<Utc>) -> bool {
        let delay = (at - Utc::now()).to_std().unwrap_or_default();
        tokio::select! {
            () = self.inner.shutdown.cancelled() => false,
            () = tokio::time::sleep(delay) => true,
        }
    }

    async fn is_current(&self, flow: &Flow) -> bool {
        match flows::find(&self.inner.store, flow.user).await {
            Ok(Some(stored)) => stored.outcome.is_none() && stored.created_at == flow.created_at,
            Ok(None) => false,
            // A passing database hiccup should not end the flow; the poll itself decides.
            Err(err) => {
                tracing::warn!(error = %err, "could not re-read the device flow");
                true
            }
        }
    }

    async fn finish(&self, flow: &Flow, finish: Finish) {
        let user = flow.user;
        // The code may have been shown again since the poller started; edit the latest message.
        let message = match flows::find(&self.inner.store, user).await {
            Ok(Some(stored)) if stored.created_at == flow.created_at => stored.message_ref,
            Ok(_) => return,
            Err(err) => {
                tracing::error!(user_id = %user, error = %err, "could not read the device flow");
                return;
            }
        };
        let outcome = match finish {
            Finish::Tokens(tokens) => match self.complete(flow, tokens).await {
                Ok(Some(account)) => FlowOutcome::Linked {
                    account,
                    relinked: flow.relink,
                },
                Ok(None) => return,
                Err(err) => {
                    tracing::error!(user_id = %user, error = %err, "could not store the link");
                    FlowOutcome::Failed
                }
            },
            Finish::Outcome(outcome) => {
                match self.close(user, outcome_name(&outcome)).await {
                    Ok(true) => {}
                    Ok(false) => return,
                    Err(err) => {
                        tracing::error!(user_id = %user, error = %err, "could not close the device flow")
                    }
                }
                outcome
            }
        };
        tracing::info!(user_id = %user, outcome = outcome_name(&outcome), "device flow ended");
        if let Err(err) = self
            .inner
            .notifier
            .update_code(user, &message, &outcome)
            .await
        {
            tracing::warn!(user_id = %user, error = %err, "could not update the device code message");
        }
    }

    async fn close(&self, user: DiscordUserId, outcome: &str) -> Result<bool, StoreError> {
        let mut conn = self.inner.store.pool().acquire().await?;
        flows::finish(&mut conn, user, outcome).await
    }

    /// Stores the link and closes the flow in one transaction. `None` when the flow was closed
    /// meanwhile (unlinked or replaced), in which case nothing is stored.
    async fn complete(&self, flow: &Flow, tokens: TokenSet) -> Result<Option<Account>, LinkError> {
        let account = self.identify(&tokens).await?;
        let now = Utc::now();
        let access_expires_at = now + tokens.expires_in;
        let link = NewLink {
            user: flow.user,
            account: account.clone(),
            scopes: tokens.scope,
            access_token: tokens.access_token,
            access_expires_at,
            // Limitation: an answer without a refresh token (offline_access refused) still links;
            // the link then needs a new sign-in once its access token expires.
            refresh_token: tokens.refresh_token.unwrap_or_else(|| Secret::new("")),
            linked_at: now,
            next_refresh_at: crate::tokens::first_refresh_at(now, access_expires_at),
        };
        let mut tx = self
            .inner
            .store
            .pool()
            .begin()
            .await
            .map_err(StoreError::from)?;
        if !flows::finish(&mut tx, flow.user, "linked").await? {
            return Ok(None);
        }
        links::save_new(&mut tx, &self.inner.store, &link).await?;
        tx.commit().await.map_err(StoreError::from)?;
        Ok(Some(account))
    }

    /// Who signed in: the id_token's claims, with Graph `/me` filling what is missing.
    async fn identify(&self, tokens: &TokenSet) -> Result<Account, LinkError> {
        let mut identity = tokens
            .id_token
            .as_ref()
            .and_then(microsoft::identity_from_id_token)
            .unwrap_or_default();
        if identity.object_id.is_none()
            || identity.username.is_none()
            || identity.display_name.is_none()
        {
            let graph = self.inner.microsoft.me(&tokens.access_token).await?;
            identity = merge(identity, graph);
        }
        let object_id = identity.object_id.ok_or(MicrosoftError::Rejected {
            error: "no_account_id".into(),
            code: None,
        })?;
        let username = identity.username.unwrap_or_default();
        Ok(Account {
            tenant_id: identity.tenant_id.unwrap_or_default(),
            display_name: identity.display_name.unwrap_or_else(|| username.clone()),
            object_id,
            username,
        })
    }
}

enum Finish {
    Tokens(TokenSet),
    Outcome(FlowOutcome),
}

fn merge(first: Identity, fallback: Identity) -> Identity {
    Identity {
        tenant_id: first.tenant_id.or(fallback.tenant_id),
        object_id: first.object_id.or(fallback.object_id),
        username: first.username.or(fallback.username),
        display_name: first.display_name.or(fallback.display_name),
    }
}

fn prompt_of(flow: &Flow) -> CodePrompt {
    CodePrompt {
        user_code: flow.user_code.clone(),
        verification_uri: flow.verification_uri.clone(),
        expires_at: flow.expires_at,
        message: flow.message.clone(),
        relink: flow.relink,
    }
}

/// What a failed poll means for the user.
fn outcome_of(err: &MicrosoftError) -> FlowOutcome {
    match err {
        MicrosoftError::Declined => FlowOutcome::Declined,
        MicrosoftError::Expired => FlowOutcome::Expired,
        MicrosoftError::PolicyBlocked => FlowOutcome::BlockedByPolicy,
        MicrosoftError::Operator { .. } => FlowOutcome::Misconfigured,
        MicrosoftError::BadVerificationCode
        | MicrosoftError::RelinkRequired { .. }
        | MicrosoftError::Rejected { .. }
        | MicrosoftError::Transient { .. } => FlowOutcome::Failed,
    }
}

fn outcome_name(outcome: &FlowOutcome) -> &'static str {
    match outcome {
        FlowOutcome::Linked { .. } => "linked",
        FlowOutcome::Declined => "declined",
        FlowOutcome::Expired => "expired",
        FlowOutcome::BlockedByPolicy => "blocked",
        FlowOutcome::Misconfigured => "misconfigured",
        FlowOutcome::Failed => "failed",
    }
}

/// The poll timing rules of RFC 8628 §3.5, kept apart from the clock so they are unit-tested.
#[derive(Debug)]
struct Schedule {
    interval: Duration,
    backoff: Duration,
}

#[derive(Debug, PartialEq, Eq)]
enum Decision {
    Wait(Duration),
    Stop,
}

impl Schedule {
    fn new(interval: Duration) -> Self {
        Self {
            interval,
            backoff: interval,
        }
    }

    fn after(&mut self, step: &PollStep) -> Decision {
        match step {
            PollStep::Pending => {
                self.backoff = self.interval;
                Decision::Wait(self.interval)
            }
            PollStep::SlowDown => {
                self.interval += SLOW_DOWN_STEP;
                self.backoff = self.interval;
                Decision::Wait(self.interval)
            }
            // Transient trouble: double the wait up to a cap, never below the interval or the
            // server's Retry-After, and keep going until the code expires.
            PollStep::Done(Err(MicrosoftError::Transient { retry_after, .. })) => {
                self.backoff = (self.backoff * 2).min(MAX_BACKOFF).max(self.interval);
                Decision::Wait(self.backoff.max(retry_after.unwrap_or_default()))
            }
            PollStep::Done(_) => Decision::Stop,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transient(retry_after: Option<u64>) -> PollStep {
        PollStep::Done(Err(MicrosoftError::Transient {
            reason: "http_500".into(),
            retry_after: retry_after.map(Duration::from_secs),
        }))
    }

    #[test]
    fn pending_keeps_the_interval() {
        let mut schedule = Schedule::new(Duration::from_secs(5));
        assert_eq!(
            schedule.after(&PollStep::Pending),
            Decision::Wait(Duration::from_secs(5))
        );
        assert_eq!(
            schedule.after(&PollStep::Pending),
            Decision::Wait(Duration::from_secs(5))
        );
    }

    #[test]
    fn slow_down_adds_five_seconds_to_every_later_poll() {
        let mut schedule = Schedule::new(Duration::from_secs(5));
        assert_eq!(
            schedule.after(&PollStep::SlowDown),
            Decision::Wait(Duration::from_secs(10))
        );
        assert_eq!(
            schedule.after(&PollStep::Pending),
            Decision::Wait(Duration::from_secs(10))
        );
        assert_eq!(
            schedule.after(&PollStep::SlowDown),
            Decision::Wait(Duration::from_secs(15))
        );
        assert_eq!(
            schedule.after(&PollStep::Pending),
            Decision::Wait(Duration::from_secs(15))
        );
    }

    #[test]
    fn transient_failures_back_off_but_honour_retry_after_and_the_interval() {
        let mut schedule = Schedule::new(Duration::from_secs(5));
        assert_eq!(
            schedule.after(&transient(None)),
            Decision::Wait(Duration::from_secs(10))
        );
        assert_eq!(
            schedule.after(&transient(None)),
            Decision::Wait(Duration::from_secs(20))
        );
        assert_eq!(
            schedule.after(&transient(Some(90))),
            Decision::Wait(Duration::from_secs(90))
        );
        for _ in 0..5 {
            schedule.after(&transient(None));
        }
        assert_eq!(
            schedule.after(&transient(None)),
            Decision::Wait(MAX_BACKOFF)
        );
        assert_eq!(
            schedule.after(&PollStep::Pending),
            Decision::Wait(Duration::from_secs(5))
        );
    }

    #[test]
    fn any_other_answer_ends_polling() {
        let mut schedule = Schedule::new(Duration::from_secs(5));
        assert_eq!(
            schedule.after(&PollStep::Done(Err(MicrosoftError::Declined))),
            Decision::Stop
        );
        assert_eq!(
            schedule.after(&PollStep::Done(Err(MicrosoftError::BadVerificationCode))),
            Decision::Stop
        );
    }

    #[test]
    fn every_poll_failure_has_a_user_facing_outcome() {
        assert_eq!(outcome_of(&MicrosoftError::Declined), FlowOutcome::Declined);
        assert_eq!(outcome_of(&MicrosoftError::Expired), FlowOutcome::Expired);
        assert_eq!(
            outcome_of(&MicrosoftError::PolicyBlocked),
            FlowOutcome::BlockedByPolicy
        );
        assert_eq!(
            outcome_of(&MicrosoftError::Operator {
                error: "invalid_client".into(),
                code: Some(7000218)
            }),
            FlowOutcome::Misconfigured
        );
        assert_eq!(
            outcome_of(&MicrosoftError::BadVerificationCode),
            FlowOutcome::Failed
        );
    }
}
