//! Nothing secret reaches the logs, even at `trace`.

use std::io::Write;
use std::sync::{Arc, Mutex};

use linkbot::domain::DiscordUserId;
use tracing_subscriber::fmt::MakeWriter;

use crate::support::microsoft::{FakeMicrosoft, FakeUser};
use crate::support::spawn_core;

/// Collects everything written by the subscriber.
#[derive(Clone, Default)]
pub struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("capture lock")).into_owned()
    }
}

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("capture lock").extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Captured {
    type Writer = Captured;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// Captures this thread's logs at `level` and above until the guard drops.
pub fn capture(level: tracing::Level) -> (Captured, tracing::subscriber::DefaultGuard) {
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(captured.clone())
        .finish();
    (
        captured.clone(),
        tracing::subscriber::set_default(subscriber),
    )
}

/// Asserts that none of `secrets` occurs in `logs`.
pub fn assert_no_secrets(logs: &str, secrets: &[String]) {
    for secret in secrets.iter().filter(|s| !s.is_empty()) {
        assert!(!logs.contains(secret.as_str()), "a secret was logged");
    }
}

// A current-thread runtime keeps every task of this test on the thread whose default
// subscriber captures the logs.
#[tokio::test(flavor = "current_thread")]
async fn a_full_link_logs_no_token_device_code_or_user_code_at_trace() {
    let (captured, _guard) = capture(tracing::Level::TRACE);
    let fake = FakeMicrosoft::start().await;
    fake.set_device_code_timing(60, 1);
    let core = spawn_core(&fake).await;
    let user = DiscordUserId::new(1234567890);

    let code = core
        .linking
        .start(user, None)
        .await
        .unwrap()
        .prompt
        .user_code;
    fake.approve(&code, &FakeUser::entra("ada"));
    core.notifier.outcome_for(user).await;
    core.tokens
        .fresh_token(user, None, std::time::Duration::from_secs(300), true)
        .await
        .unwrap();

    let logs = captured.text();
    assert!(logs.contains("device flow started"), "the capture works");
    assert!(
        logs.contains("TRACE") || logs.contains("DEBUG"),
        "low levels were captured"
    );
    let mut secrets = fake.issued_access_tokens();
    secrets.extend(fake.issued_refresh_tokens());
    secrets.extend(fake.issued_device_codes());
    secrets.push(code);
    assert_no_secrets(&logs, &secrets);
}

#[tokio::test(flavor = "current_thread")]
async fn a_refused_app_registration_is_logged_once_per_incident_not_per_link() {
    let (captured, _guard) = capture(tracing::Level::INFO);
    let fake = FakeMicrosoft::start().await;
    fake.set_device_code_timing(60, 1);
    let core = spawn_core(&fake).await;
    let users = [
        DiscordUserId::new(11),
        DiscordUserId::new(12),
        DiscordUserId::new(13),
    ];
    for user in users {
        crate::support::link(&core, &fake, user, &FakeUser::entra("ada")).await;
    }
    let refused = crate::support::microsoft::Reply::Error {
        status: 401,
        error: "invalid_client".into(),
        codes: vec![7000218],
        suberror: None,
    };
    fake.script_refresh([refused.clone(), refused.clone(), refused]);

    for user in users {
        let served = core
            .tokens
            .fresh_token(user, None, std::time::Duration::from_secs(300), true)
            .await;
        assert!(
            served.is_ok(),
            "the still-valid token is served: {served:?}"
        );
    }
    let first_incident = captured
        .text()
        .matches("refuses the app registration")
        .count();
    core.tokens
        .fresh_token(users[0], None, std::time::Duration::from_secs(300), true)
        .await
        .unwrap();
    fake.script_refresh([crate::support::microsoft::Reply::Error {
        status: 401,
        error: "invalid_client".into(),
        codes: vec![7000218],
        suberror: None,
    }]);
    let _ = core
        .tokens
        .fresh_token(users[1], None, std::time::Duration::from_secs(300), true)
        .await;

    assert_eq!(first_incident, 1);
    assert_eq!(
        captured
            .text()
            .matches("refuses the app registration")
            .count(),
        2,
        "a new incident after recovery"
    );
    let alerts = core
        .notifier
        .notices()
        .iter()
        .filter(|n| matches!(n, crate::support::Notice::Alert { .. }))
        .count();
    assert_eq!(alerts, 0, "operator problems are not the users'");
}
