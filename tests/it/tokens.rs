//! The token service against the fake Microsoft: single-flight refresh, rotation, the failure
//! policy and the background worker.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use linkbot::domain::{DiscordUserId, LinkState};
use linkbot::notify::FlowOutcome;
use linkbot::store::links;
use linkbot::tokens::{Clock, DEFAULT_MIN_VALID, TokenError};

use crate::support::microsoft::{FakeMicrosoft, FakeUser, Reply};
use crate::support::{Core, Notice, link, spawn_core, spawn_core_with_clock};

const USER: DiscordUserId = DiscordUserId::new(222333444555666777);

async fn fake() -> FakeMicrosoft {
    let fake = FakeMicrosoft::start().await;
    fake.set_device_code_timing(60, 1);
    fake
}

/// A clock the test moves by hand.
#[derive(Clone)]
struct ManualClock(Arc<Mutex<DateTime<Utc>>>);

impl ManualClock {
    fn new() -> Self {
        Self(Arc::new(Mutex::new(Utc::now())))
    }

    fn clock(&self) -> Clock {
        let time = self.0.clone();
        Clock::from_fn(move || *time.lock().expect("clock lock"))
    }

    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().expect("clock lock")
    }

    fn set(&self, at: DateTime<Utc>) {
        *self.0.lock().expect("clock lock") = at;
    }

    fn advance(&self, by: TimeDelta) {
        *self.0.lock().expect("clock lock") += by;
    }
}

fn alerts(core: &Core) -> usize {
    core.notifier
        .notices()
        .iter()
        .filter(|n| matches!(n, Notice::Alert { .. }))
        .count()
}

async fn state(core: &Core) -> LinkState {
    links::status(&core.store, USER)
        .await
        .expect("status reads")
        .expect("link exists")
        .state
}

#[tokio::test]
async fn a_thousand_concurrent_callers_share_one_refresh() {
    let fake = fake().await;
    // Linked with a token that has less than min_valid left, so every caller needs a refresh.
    fake.set_access_token_lifetime(60);
    let core = spawn_core(&fake).await;
    link(&core, &fake, USER, &FakeUser::entra("ada")).await;
    fake.set_access_token_lifetime(3599);

    let calls = (0..1000).map(|_| {
        let tokens = core.tokens.clone();
        tokio::spawn(async move {
            tokens
                .fresh_token(USER, None, DEFAULT_MIN_VALID, false)
                .await
        })
    });
    let results = futures::future::join_all(calls).await;

    assert_eq!(fake.refreshes().len(), 1);
    let newest = fake.issued_access_tokens().last().unwrap().clone();
    for result in results {
        let token = result.unwrap().unwrap();
        assert_eq!(token.access_token.expose(), newest);
    }
}

#[tokio::test]
async fn a_rotated_refresh_token_is_stored_and_presented_next_time() {
    let fake = fake().await;
    fake.set_strict_rotation(true);
    let core = spawn_core(&fake).await;
    link(&core, &fake, USER, &FakeUser::entra("ada")).await;

    core.tokens
        .fresh_token(USER, None, DEFAULT_MIN_VALID, true)
        .await
        .unwrap();
    core.tokens
        .fresh_token(USER, None, DEFAULT_MIN_VALID, true)
        .await
        .unwrap();

    let issued = fake.issued_refresh_tokens();
    let refreshes = fake.refreshes();
    assert_eq!(refreshes.len(), 2);
    assert_eq!(refreshes[0].form.get("refresh_token"), Some(&issued[0]));
    assert_eq!(
        refreshes[1].form.get("refresh_token"),
        Some(&issued[1]),
        "the rotated token is used"
    );
    let stored = links::find(&core.store, USER).await.unwrap().unwrap();
    assert_eq!(stored.refresh_token.expose(), issued[2]);
    assert_eq!(state(&core).await, LinkState::Active);
}

#[tokio::test]
async fn an_answer_without_a_refresh_token_keeps_the_old_one() {
    let fake = fake().await;
    let core = spawn_core(&fake).await;
    link(&core, &fake, USER, &FakeUser::entra("ada")).await;
    let original = fake.issued_refresh_tokens()[0].clone();
    fake.script_refresh([Reply::SuccessWithoutRefreshToken]);

    let first = core
        .tokens
        .fresh_token(USER, None, DEFAULT_MIN_VALID, true)
        .await
        .unwrap();
    core.tokens
        .fresh_token(USER, None, DEFAULT_MIN_VALID, true)
        .await
        .unwrap();

    assert_eq!(first.access_token.expose(), fake.issued_access_tokens()[1]);
    let refreshes = fake.refreshes();
    assert_eq!(refreshes[1].form.get("refresh_token"), Some(&original));
}

#[tokio::test]
async fn a_still_valid_token_is_served_while_microsoft_fails_transiently() {
    let fake = fake().await;
    let core = spawn_core(&fake).await;
    link(&core, &fake, USER, &FakeUser::entra("ada")).await;
    let current = fake.issued_access_tokens()[0].clone();
    fake.script_refresh([
        Reply::Status(503),
        Reply::TooManyRequests { retry_after: 30 },
    ]);

    let during_503 = core
        .tokens
        .fresh_token(USER, None, DEFAULT_MIN_VALID, true)
        .await
        .unwrap();
    let during_429 = core
        .tokens
        .fresh_token(USER, None, DEFAULT_MIN_VALID, true)
        .await
        .unwrap();

    assert_eq!(during_503.access_token.expose(), current);
    assert_eq!(during_429.access_token.expose(), current);
    let status = links::status(&core.store, USER).await.unwrap().unwrap();
    assert_eq!(status.state, LinkState::Active);
    assert_eq!(status.transient_failures, 2);
    assert_eq!(alerts(&core), 0);
}

#[tokio::test]
async fn an_expired_token_and_a_failing_microsoft_mean_provider_unavailable() {
    let fake = fake().await;
    let clock = ManualClock::new();
    let core = spawn_core_with_clock(&fake, clock.clock()).await;
    link(&core, &fake, USER, &FakeUser::entra("ada")).await;
    clock.advance(TimeDelta::hours(2));
    fake.script_refresh([Reply::TooManyRequests { retry_after: 42 }]);

    let err = core
        .tokens
        .fresh_token(USER, None, DEFAULT_MIN_VALID, false)
        .await
        .unwrap_err();

    assert!(
        matches!(err, TokenError::ProviderUnavailable { retry_after } if retry_after == Duration::from_secs(42)),
        "{err:?}"
    );
    assert_eq!(state(&core).await, LinkState::Active);
}

#[tokio::test]
async fn an_hour_of_transient_failures_alerts_no_one_and_keeps_the_link_active() {
    let fake = fake().await;
    let clock = ManualClock::new();
    let core = spawn_core_with_clock(&fake, clock.clock()).await;
    link(&core, &fake, USER, &FakeUser::entra("ada")).await;
    // A script used in the last day is hot: the worker refreshes it ahead of expiry.
    core.tokens
        .fresh_token(USER, None, DEFAULT_MIN_VALID, false)
        .await
        .unwrap();
    let throttled = Reply::Error {
        status: 400,
        error: "invalid_grant".into(),
        codes: vec![50196],
        suberror: None,
    };
    let failures = [
        Reply::Status(500),
        Reply::TooManyRequests { retry_after: 60 },
        throttled,
        Reply::Garbage,
    ];
    fake.script_refresh(failures.iter().cycle().take(200).cloned());

    let first_due = links::status(&core.store, USER)
        .await
        .unwrap()
        .unwrap()
        .next_refresh_at;
    let end = first_due + TimeDelta::hours(1);
    clock.set(first_due);
    while clock.now() < end {
        core.tokens.run_due().await.unwrap();
        let next = links::status(&core.store, USER)
            .await
            .unwrap()
            .unwrap()
            .next_refresh_at;
        clock.set(next.max(clock.now() + TimeDelta::seconds(1)));
    }

    let attempts = fake.refreshes().len();
    assert!(
        (4..=20).contains(&attempts),
        "backed off, yet kept trying: {attempts} attempts"
    );
    assert_eq!(alerts(&core), 0);
    let status = links::status(&core.store, USER).await.unwrap().unwrap();
    assert_eq!(status.state, LinkState::Active);
    assert_eq!(status.transient_failures, i64::try_from(attempts).unwrap());
    let err = core
        .tokens
        .fresh_token(USER, None, DEFAULT_MIN_VALID, false)
        .await
        .unwrap_err();
    assert!(
        matches!(err, TokenError::ProviderUnavailable { .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_refused_grant_alerts_the_user_exactly_once_and_needs_a_relink() {
    for code in [70008, 700082, 50173] {
        let fake = fake().await;
        let core = spawn_core(&fake).await;
        link(&core, &fake, USER, &FakeUser::entra("ada")).await;
        let suberror = (code == 700082).then(|| "bad_token".to_owned());
        fake.script_refresh([Reply::Error {
            status: 400,
            error: "invalid_grant".into(),
            codes: vec![code],
            suberror,
        }]);

        let first = core
            .tokens
            .fresh_token(USER, None, DEFAULT_MIN_VALID, true)
            .await;
        let second = core
            .tokens
            .fresh_token(USER, None, DEFAULT_MIN_VALID, true)
            .await;
        core.tokens.run_due().await.unwrap();

        assert!(
            matches!(first, Err(TokenError::RelinkRequired)),
            "{code}: {first:?}"
        );
        assert!(
            matches!(second, Err(TokenError::RelinkRequired)),
            "{code}: {second:?}"
        );
        assert_eq!(
            fake.refreshes().len(),
            1,
            "{code}: a dead grant is not retried"
        );
        assert_eq!(alerts(&core), 1, "{code}");
        assert_eq!(state(&core).await, LinkState::RelinkRequired);
        let status = links::status(&core.store, USER).await.unwrap().unwrap();
        assert!(status.last_error.unwrap().contains(&code.to_string()));
    }
}

#[tokio::test]
async fn a_revoked_grant_found_by_the_worker_alerts_once() {
    let fake = fake().await;
    let clock = ManualClock::new();
    let core = spawn_core_with_clock(&fake, clock.clock()).await;
    let ada = FakeUser::entra("ada");
    link(&core, &fake, USER, &ada).await;
    fake.revoke(&ada);

    clock.advance(TimeDelta::days(8));
    core.tokens.run_due().await.unwrap();
    clock.advance(TimeDelta::days(8));
    core.tokens.run_due().await.unwrap();

    assert_eq!(alerts(&core), 1);
    let alert = core
        .notifier
        .notices()
        .into_iter()
        .find(|n| matches!(n, Notice::Alert { .. }))
        .unwrap();
    let Notice::Alert {
        alert: linkbot::notify::Alert::RelinkRequired { reason },
        ..
    } = alert
    else {
        unreachable!()
    };
    assert!(reason.contains("revoked"), "{reason}");
    assert_eq!(state(&core).await, LinkState::RelinkRequired);
}

#[tokio::test]
async fn linking_again_clears_relink_required() {
    let fake = fake().await;
    let core = spawn_core(&fake).await;
    let ada = FakeUser::entra("ada");
    link(&core, &fake, USER, &ada).await;
    fake.revoke(&ada);
    let _ = core
        .tokens
        .fresh_token(USER, None, DEFAULT_MIN_VALID, true)
        .await;
    assert_eq!(state(&core).await, LinkState::RelinkRequired);

    link(&core, &fake, USER, &ada).await;

    let last = core
        .notifier
        .notices()
        .into_iter()
        .rev()
        .find(|n| matches!(n, Notice::Update { .. }))
        .unwrap();
    assert!(
        matches!(
            last,
            Notice::Update {
                outcome: FlowOutcome::Linked { relinked: true, .. },
                ..
            }
        ),
        "{last:?}"
    );
    let status = links::status(&core.store, USER).await.unwrap().unwrap();
    assert_eq!(status.state, LinkState::Active);
    assert_eq!(status.alerted_at, None);
    assert!(
        core.tokens
            .fresh_token(USER, None, DEFAULT_MIN_VALID, true)
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn an_idle_link_is_refreshed_by_the_keep_alive_rule_and_not_hourly() {
    let fake = fake().await;
    let clock = ManualClock::new();
    let core = spawn_core_with_clock(&fake, clock.clock()).await;
    link(&core, &fake, USER, &FakeUser::entra("ada")).await;

    // The access token expires after an hour, but nobody uses the link: no refresh.
    clock.advance(TimeDelta::hours(2));
    core.tokens.run_due().await.unwrap();
    let after_two_hours = fake.refreshes().len();
    // A week later the refresh token is exercised so it never lapses.
    clock.advance(TimeDelta::days(7));
    core.tokens.run_due().await.unwrap();

    assert_eq!(after_two_hours, 0);
    assert_eq!(fake.refreshes().len(), 1);
    let status = links::status(&core.store, USER).await.unwrap().unwrap();
    let next_in = status.next_refresh_at - clock.now();
    assert!(
        next_in > TimeDelta::days(6) && next_in <= TimeDelta::days(7),
        "{next_in}"
    );
}

#[tokio::test]
async fn a_token_for_another_resource_is_minted_and_cached_without_touching_the_main_token() {
    let fake = fake().await;
    let core = spawn_core(&fake).await;
    link(&core, &fake, USER, &FakeUser::entra("ada")).await;
    let main = links::find(&core.store, USER)
        .await
        .unwrap()
        .unwrap()
        .access_token
        .clone();
    let scope = "api://reports.example/.default";

    let other = core
        .tokens
        .fresh_token(USER, Some(scope), DEFAULT_MIN_VALID, false)
        .await
        .unwrap();
    let again = core
        .tokens
        .fresh_token(USER, Some(scope), DEFAULT_MIN_VALID, false)
        .await
        .unwrap();

    assert_ne!(other.access_token, main);
    assert_eq!(
        other.access_token, again.access_token,
        "cached per scope set"
    );
    assert_eq!(fake.refreshes().len(), 1);
    assert!(
        fake.refreshes()[0]
            .form
            .get("scope")
            .unwrap()
            .contains(scope)
    );
    assert!(other.scope.contains("reports.example"), "{}", other.scope);
    let unchanged = links::find(&core.store, USER).await.unwrap().unwrap();
    assert_eq!(unchanged.access_token, main);
    assert_eq!(
        unchanged.refresh_token.expose(),
        fake.issued_refresh_tokens().last().unwrap()
    );
}

#[tokio::test]
async fn unknown_users_are_not_linked() {
    let fake = fake().await;
    let core = spawn_core(&fake).await;

    let err = core
        .tokens
        .fresh_token(USER, None, DEFAULT_MIN_VALID, false)
        .await
        .unwrap_err();

    assert!(matches!(err, TokenError::NotLinked));
}
