//! The device-code flow end to end against the fake Microsoft: from `start` to a sealed link.

use std::time::Duration;

use linkbot::domain::{DiscordUserId, LinkState};
use linkbot::notify::{CodeMessage, FlowOutcome};
use linkbot::store::{flows, links};

use crate::support::microsoft::{FakeMicrosoft, FakeUser, Reply};
use crate::support::{Core, Notice, restart_core, spawn_core};

const USER: DiscordUserId = DiscordUserId::new(80351110224678912);

async fn fast_fake(expires_in: u64, interval: u64) -> FakeMicrosoft {
    let fake = FakeMicrosoft::start().await;
    fake.set_device_code_timing(expires_in, interval);
    fake
}

/// Seconds between consecutive device-code polls, as the fake saw them arrive.
fn poll_gaps(fake: &FakeMicrosoft) -> Vec<f64> {
    let polls = fake.polls();
    polls
        .windows(2)
        .map(|w| (w[1].at - w[0].at).as_secs_f64())
        .collect()
}

async fn start(core: &Core) -> String {
    let started = core.linking.start(USER, None).await.expect("flow starts");
    started.prompt.user_code
}

#[tokio::test]
async fn an_approved_sign_in_becomes_an_active_link_with_the_right_account() {
    let fake = fast_fake(60, 1).await;
    let core = spawn_core(&fake).await;
    let ada = FakeUser::entra("ada");

    let user_code = start(&core).await;
    fake.approve(&user_code, &ada);
    let outcome = core.notifier.outcome_for(USER).await;

    let FlowOutcome::Linked { account, relinked } = outcome else {
        panic!("{outcome:?}")
    };
    assert!(!relinked);
    assert_eq!(account.tenant_id, ada.tenant_id);
    assert_eq!(account.object_id, ada.object_id);
    assert_eq!(account.username, ada.username);
    assert_eq!(account.display_name, ada.display_name);
    let status = links::status(&core.store, USER)
        .await
        .unwrap()
        .expect("link stored");
    assert_eq!(status.state, LinkState::Active);
    assert_eq!(status.account, account);
    let stored = links::find(&core.store, USER).await.unwrap().unwrap();
    assert_eq!(
        stored.access_token.expose(),
        fake.issued_access_tokens().last().unwrap()
    );
    assert_eq!(
        stored.refresh_token.expose(),
        fake.issued_refresh_tokens().last().unwrap()
    );

    // What we sent: the device-code grant, our client id, no secret, and no scope on polls.
    let devicecode = &fake.requests()[0];
    assert!(devicecode.path.ends_with("/common/oauth2/v2.0/devicecode"));
    let scope = devicecode.form.get("scope").unwrap();
    for wanted in ["User.Read", "offline_access", "openid", "profile"] {
        assert!(
            scope.split(' ').any(|s| s == wanted),
            "{wanted} missing from {scope}"
        );
    }
    for poll in fake.polls() {
        assert_eq!(
            poll.form.get("grant_type").unwrap(),
            "urn:ietf:params:oauth:grant-type:device_code"
        );
        assert_eq!(poll.form.get("client_id").unwrap(), &fake.client_id());
        assert!(!poll.form.contains_key("client_secret"));
        assert!(!poll.form.contains_key("scope"));
        assert!(poll.query.as_deref().unwrap_or("").is_empty());
    }
}

#[tokio::test]
async fn the_graph_profile_fills_in_when_the_id_token_lacks_the_account() {
    let fake = fast_fake(60, 1).await;
    let core = spawn_core(&fake).await;
    let msa = FakeUser::msa("grace");
    // Linking without `profile` yields an id_token with no oid, name or username.
    let mut settings = crate::support::settings_for(&fake);
    settings.scopes.retain(|s| s != "profile");
    let microsoft = linkbot::microsoft::MicrosoftClient::new(settings).unwrap();
    let linking = linkbot::linking::Linking::new(
        core.store.clone(),
        microsoft,
        core.notifier.clone(),
        core.shutdown.clone(),
    );

    let code = linking.start(USER, None).await.unwrap().prompt.user_code;
    fake.approve(&code, &msa);
    let outcome = core.notifier.outcome_for(USER).await;

    let FlowOutcome::Linked { account, .. } = outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(account.display_name, msa.display_name);
    assert_eq!(account.username, msa.username);
    assert!(fake.requests().iter().any(|r| r.path == "/v1.0/me"));
}

#[tokio::test]
async fn a_declined_sign_in_ends_the_flow_without_a_link() {
    let fake = fast_fake(60, 1).await;
    let core = spawn_core(&fake).await;

    let user_code = start(&core).await;
    fake.decline(&user_code);

    assert_eq!(core.notifier.outcome_for(USER).await, FlowOutcome::Declined);
    assert!(links::status(&core.store, USER).await.unwrap().is_none());
    let flow = flows::find(&core.store, USER).await.unwrap().unwrap();
    assert_eq!(flow.outcome.as_deref(), Some("declined"));
}

#[tokio::test]
async fn an_unanswered_code_expires_and_polling_stops() {
    let fake = fast_fake(3, 1).await;
    let core = spawn_core(&fake).await;

    start(&core).await;

    assert_eq!(core.notifier.outcome_for(USER).await, FlowOutcome::Expired);
    let polls = fake.polls().len();
    assert!(
        (1..=3).contains(&polls),
        "{polls} polls in a 3 s lifetime at a 1 s interval"
    );
    let first = &fake.requests()[0];
    for poll in fake.polls() {
        assert!(
            poll.at.duration_since(first.at) <= Duration::from_secs(3),
            "polled after expiry"
        );
    }
}

#[tokio::test]
async fn slow_down_adds_five_seconds_to_every_later_poll() {
    let fake = fast_fake(60, 1).await;
    let core = spawn_core(&fake).await;
    fake.script_poll([Reply::SlowDown, Reply::Pending]);

    let user_code = start(&core).await;
    fake.approve(&user_code, &FakeUser::entra("ada"));
    let outcome = core.notifier.outcome_for(USER).await;

    assert!(matches!(outcome, FlowOutcome::Linked { .. }), "{outcome:?}");
    let gaps = poll_gaps(&fake);
    assert_eq!(gaps.len(), 2, "slow_down, pending, then success: {gaps:?}");
    assert!(
        gaps.iter().all(|g| *g >= 6.0),
        "interval 1 s + 5 s after slow_down: {gaps:?}"
    );
}

#[tokio::test]
async fn no_poll_arrives_earlier_than_the_interval() {
    let fake = fast_fake(60, 2).await;
    let core = spawn_core(&fake).await;
    fake.script_poll([Reply::Pending, Reply::Pending, Reply::Pending]);

    let user_code = start(&core).await;
    fake.approve(&user_code, &FakeUser::entra("ada"));
    core.notifier.outcome_for(USER).await;

    let requests = fake.requests();
    let polls = fake.polls();
    assert_eq!(polls.len(), 4);
    assert!(polls[0].at.duration_since(requests[0].at) >= Duration::from_secs(2));
    let gaps = poll_gaps(&fake);
    assert!(gaps.iter().all(|g| *g >= 2.0), "{gaps:?}");
}

#[tokio::test]
async fn transient_failures_while_polling_do_not_end_the_flow() {
    let fake = fast_fake(120, 1).await;
    let core = spawn_core(&fake).await;
    fake.script_poll([
        Reply::Status(500),
        Reply::TooManyRequests { retry_after: 3 },
        Reply::Garbage,
    ]);

    let user_code = start(&core).await;
    fake.approve(&user_code, &FakeUser::entra("ada"));
    let outcome = core.notifier.outcome_for(USER).await;

    assert!(matches!(outcome, FlowOutcome::Linked { .. }), "{outcome:?}");
    let gaps = poll_gaps(&fake);
    assert_eq!(gaps.len(), 3);
    assert!(gaps[1] >= 3.0, "Retry-After honoured: {gaps:?}");
}

#[tokio::test]
async fn starting_again_while_a_code_is_valid_shows_the_same_code() {
    let fake = fast_fake(600, 5).await;
    let core = spawn_core(&fake).await;

    let first = core.linking.start(USER, None).await.unwrap();
    let second = core.linking.start(USER, None).await.unwrap();

    assert_eq!(first.prompt.user_code, second.prompt.user_code);
    assert!(!first.reused);
    assert!(second.reused);
    let devicecode_calls = fake
        .requests()
        .iter()
        .filter(|r| r.path.ends_with("/devicecode"))
        .count();
    assert_eq!(devicecode_calls, 1);
    let shown = core
        .notifier
        .notices()
        .iter()
        .filter(|n| matches!(n, Notice::Code { .. }))
        .count();
    assert_eq!(shown, 2);
}

#[tokio::test]
async fn a_restart_in_the_middle_of_a_flow_resumes_polling_and_finishes_the_link() {
    let fake = fast_fake(120, 1).await;
    let core = spawn_core(&fake).await;
    let user_code = start(&core).await;
    tokio::time::timeout(crate::support::PATIENCE, fake.wait_for_polls(1))
        .await
        .unwrap();
    let shown_at = flows::find(&core.store, USER)
        .await
        .unwrap()
        .unwrap()
        .message_ref;

    let core = restart_core(&fake, core).await;
    let resumed = core.linking.resume().await.unwrap();
    fake.approve(&user_code, &FakeUser::entra("ada"));
    let update = core
        .notifier
        .wait_for(|n| matches!(n, Notice::Update { .. }))
        .await;

    assert_eq!(resumed, 1);
    let Notice::Update {
        message, outcome, ..
    } = update
    else {
        unreachable!()
    };
    assert!(matches!(outcome, FlowOutcome::Linked { .. }), "{outcome:?}");
    assert_eq!(message, shown_at, "the original code message is edited");
    assert!(matches!(message, CodeMessage::Direct { .. }));
    assert_eq!(
        links::status(&core.store, USER)
            .await
            .unwrap()
            .unwrap()
            .state,
        LinkState::Active
    );
}

#[tokio::test]
async fn a_flow_that_expired_while_stopped_is_closed_on_resume() {
    let fake = fast_fake(2, 1).await;
    let core = spawn_core(&fake).await;
    start(&core).await;
    core.shutdown.cancel();
    core.linking.wait_stopped().await;
    let expires_at = flows::find(&core.store, USER)
        .await
        .unwrap()
        .unwrap()
        .expires_at;
    let wait = (expires_at - chrono::Utc::now())
        .to_std()
        .unwrap_or_default();
    tokio::time::sleep(wait + Duration::from_millis(50)).await; // let the code's lifetime pass

    let core = restart_core(&fake, core).await;
    let resumed = core.linking.resume().await.unwrap();

    assert_eq!(resumed, 0);
    assert_eq!(core.notifier.outcome_for(USER).await, FlowOutcome::Expired);
    assert_eq!(
        flows::find(&core.store, USER)
            .await
            .unwrap()
            .unwrap()
            .outcome
            .as_deref(),
        Some("expired")
    );
}

#[tokio::test]
async fn an_unrecognised_device_code_ends_the_flow_clearly() {
    let fake = fast_fake(60, 1).await;
    let core = spawn_core(&fake).await;
    fake.script_poll([Reply::BadVerificationCode]);

    start(&core).await;

    assert_eq!(core.notifier.outcome_for(USER).await, FlowOutcome::Failed);
    assert_eq!(
        flows::find(&core.store, USER)
            .await
            .unwrap()
            .unwrap()
            .outcome
            .as_deref(),
        Some("failed")
    );
}

#[tokio::test]
async fn a_misconfigured_app_ends_the_flow_as_the_operators_problem() {
    let fake = fast_fake(60, 1).await;
    let core = spawn_core(&fake).await;
    fake.script_poll([Reply::Error {
        status: 401,
        error: "invalid_client".into(),
        codes: vec![7000218],
        suberror: None,
    }]);

    start(&core).await;

    assert_eq!(
        core.notifier.outcome_for(USER).await,
        FlowOutcome::Misconfigured
    );
}

#[tokio::test]
async fn a_conditional_access_block_is_reported_as_such() {
    let fake = fast_fake(60, 1).await;
    let core = spawn_core(&fake).await;
    fake.script_poll([Reply::Error {
        status: 400,
        error: "invalid_grant".into(),
        codes: vec![53003],
        suberror: None,
    }]);

    start(&core).await;

    assert_eq!(
        core.notifier.outcome_for(USER).await,
        FlowOutcome::BlockedByPolicy
    );
}

#[tokio::test]
async fn an_error_body_on_http_200_is_not_taken_for_tokens() {
    let fake = fast_fake(60, 1).await;
    let core = spawn_core(&fake).await;
    fake.script_device_code([Reply::ErrorOn200]);

    let result = core.linking.start(USER, None).await;

    assert!(result.is_err(), "{result:?}");
    assert!(flows::find(&core.store, USER).await.unwrap().is_none());
}

#[tokio::test]
async fn the_database_files_hold_no_token_or_device_code_in_the_clear() {
    let fake = fast_fake(60, 1).await;
    let core = spawn_core(&fake).await;
    let user_code = start(&core).await;
    fake.approve(&user_code, &FakeUser::entra("ada"));
    core.notifier.outcome_for(USER).await;

    let mut bytes = std::fs::read(&core.db_path).unwrap();
    let wal = core.db_path.with_extension("db-wal");
    bytes.extend(std::fs::read(&wal).unwrap_or_default());

    let secrets: Vec<String> = fake
        .issued_access_tokens()
        .into_iter()
        .chain(fake.issued_refresh_tokens())
        .chain(fake.issued_device_codes())
        .collect();
    assert!(secrets.len() >= 3);
    for secret in secrets {
        assert!(
            !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "a secret is stored in the clear"
        );
    }
    assert!(
        std::fs::metadata(&wal).is_ok(),
        "the -wal file was checked too"
    );
}

#[tokio::test]
async fn a_wrong_key_is_reported_instead_of_garbage() {
    let fake = fast_fake(60, 1).await;
    let core = spawn_core(&fake).await;
    let user_code = start(&core).await;
    fake.approve(&user_code, &FakeUser::entra("ada"));
    core.notifier.outcome_for(USER).await;
    let url = format!("sqlite://{}", core.db_path.display());

    let other = linkbot::store::Store::connect(&url, linkbot::store::Sealer::new(&[1; 32]))
        .await
        .unwrap();
    let err = links::find(&other, USER).await.unwrap_err();

    assert!(err.to_string().contains("LINKBOT_SECRET_KEY"), "{err}");
    assert!(linkbot::store::verify_key(&other).await.is_err());
}
