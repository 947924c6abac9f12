//! Shared test support: the fakes of Microsoft and Discord, a notifier that records what the
//! core would have said in chat, and helpers that build the core over a fresh database.

pub mod app;
pub mod discord;
pub mod microsoft;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use linkbot::domain::DiscordUserId;
use linkbot::linking::Linking;
use linkbot::microsoft::{MicrosoftClient, MicrosoftSettings};
use linkbot::notify::{
    Alert, CodeMessage, CodePrompt, FlowOutcome, Notifier, NotifyError, ReplyHandle,
};
use linkbot::store::{Sealer, Store};
use linkbot::tokens::{Clock, Tokens};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use self::microsoft::FakeMicrosoft;

/// How long a test waits for something that should happen within seconds.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// Something the core asked the notifier to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Notice {
    /// A code was shown.
    Code {
        user: DiscordUserId,
        prompt: CodePrompt,
    },
    /// The code message was replaced by an outcome.
    Update {
        user: DiscordUserId,
        message: CodeMessage,
        outcome: FlowOutcome,
    },
    /// The user was alerted.
    Alert { user: DiscordUserId, alert: Alert },
}

/// A notifier that records every call and answers with a made-up DM location.
#[derive(Default)]
pub struct RecordingNotifier {
    notices: Mutex<Vec<Notice>>,
    changed: Notify,
}

impl RecordingNotifier {
    /// Everything recorded so far.
    pub fn notices(&self) -> Vec<Notice> {
        self.notices.lock().expect("notices lock").clone()
    }

    /// Waits until a recorded notice matches `pred` and returns it.
    pub async fn wait_for(&self, pred: impl Fn(&Notice) -> bool) -> Notice {
        let wait = async {
            loop {
                let changed = self.changed.notified();
                if let Some(found) = self.notices().into_iter().find(|n| pred(n)) {
                    return found;
                }
                changed.await;
            }
        };
        tokio::time::timeout(PATIENCE, wait)
            .await
            .unwrap_or_else(|_| panic!("no matching notice; got {:?}", self.notices()))
    }

    /// Waits for the outcome of `user`'s flow.
    pub async fn outcome_for(&self, user: DiscordUserId) -> FlowOutcome {
        match self
            .wait_for(|n| matches!(n, Notice::Update { user: u, .. } if *u == user))
            .await
        {
            Notice::Update { outcome, .. } => outcome,
            other => panic!("unexpected notice {other:?}"),
        }
    }

    fn push(&self, notice: Notice) {
        self.notices.lock().expect("notices lock").push(notice);
        self.changed.notify_waiters();
    }
}

#[async_trait]
impl Notifier for RecordingNotifier {
    async fn send_code(
        &self,
        user: DiscordUserId,
        prompt: &CodePrompt,
        _reply: Option<&ReplyHandle>,
    ) -> Result<CodeMessage, NotifyError> {
        self.push(Notice::Code {
            user,
            prompt: prompt.clone(),
        });
        Ok(CodeMessage::Direct {
            channel_id: 500 + user.get(),
            message_id: 9000 + user.get(),
        })
    }

    async fn update_code(
        &self,
        user: DiscordUserId,
        message: &CodeMessage,
        outcome: &FlowOutcome,
    ) -> Result<(), NotifyError> {
        self.push(Notice::Update {
            user,
            message: message.clone(),
            outcome: outcome.clone(),
        });
        Ok(())
    }

    async fn alert(&self, user: DiscordUserId, alert: &Alert) -> Result<(), NotifyError> {
        self.push(Notice::Alert {
            user,
            alert: alert.clone(),
        });
        Ok(())
    }
}

/// The core (store, linking, tokens) over a fresh SQLite file, talking to a fake Microsoft.
pub struct Core {
    pub store: Store,
    pub linking: Linking,
    pub tokens: Tokens,
    pub notifier: Arc<RecordingNotifier>,
    pub shutdown: CancellationToken,
    pub db_path: PathBuf,
    pub key: [u8; 32],
    pub dir: Arc<tempfile::TempDir>,
}

/// Settings pointing the Microsoft client at the fake.
pub fn settings_for(fake: &FakeMicrosoft) -> MicrosoftSettings {
    let base: url::Url = fake.base_url().parse().expect("fake base URL parses");
    MicrosoftSettings {
        authority: base.clone(),
        tenant: "common".to_owned(),
        client_id: fake.client_id(),
        scopes: ["User.Read", "offline_access", "openid", "profile"]
            .map(str::to_owned)
            .to_vec(),
        graph_base: base,
        request_timeout: Duration::from_secs(3),
    }
}

/// A core over a new database in a temporary folder.
pub async fn spawn_core(fake: &FakeMicrosoft) -> Core {
    let dir = Arc::new(tempfile::tempdir().expect("temporary folder"));
    build_core(fake, dir, [42; 32], Clock::system()).await
}

/// A core with a controllable clock for the token service.
pub async fn spawn_core_with_clock(fake: &FakeMicrosoft, clock: Clock) -> Core {
    let dir = Arc::new(tempfile::tempdir().expect("temporary folder"));
    build_core(fake, dir, [42; 32], clock).await
}

/// Stops `core`'s pollers and builds a new core over the same database, as a restart would.
pub async fn restart_core(fake: &FakeMicrosoft, core: Core) -> Core {
    core.shutdown.cancel();
    core.linking.wait_stopped().await;
    core.store.close().await;
    build_core(fake, core.dir, core.key, Clock::system()).await
}

/// Sends logs to the test output when `TEST_LOG` is set (filtered by `RUST_LOG`).
pub fn init_test_logs() {
    if std::env::var_os("TEST_LOG").is_some() {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("debug"));
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
    }
}

async fn build_core(
    fake: &FakeMicrosoft,
    dir: Arc<tempfile::TempDir>,
    key: [u8; 32],
    clock: Clock,
) -> Core {
    init_test_logs();
    let db_path = dir.path().join("linkbot.db");
    let url = format!("sqlite://{}", db_path.display());
    let store = Store::connect(&url, Sealer::new(&key))
        .await
        .expect("database opens");
    let microsoft = MicrosoftClient::new(settings_for(fake)).expect("HTTP client builds");
    let notifier = Arc::new(RecordingNotifier::default());
    let shutdown = CancellationToken::new();
    let linking = Linking::new(
        store.clone(),
        microsoft.clone(),
        notifier.clone(),
        shutdown.clone(),
    );
    let tokens = Tokens::new(
        store.clone(),
        microsoft,
        notifier.clone(),
        clock,
        Duration::from_secs(7 * 86_400),
    );
    Core {
        store,
        linking,
        tokens,
        notifier,
        shutdown,
        db_path,
        key,
        dir,
    }
}

/// Links `user` as `who` through a real device flow against the fake, and returns once the
/// link is stored.
pub async fn link(
    core: &Core,
    fake: &FakeMicrosoft,
    user: DiscordUserId,
    who: &microsoft::FakeUser,
) {
    let before = core
        .notifier
        .notices()
        .iter()
        .filter(|n| matches!(n, Notice::Update { user: u, .. } if *u == user))
        .count();
    let code = core
        .linking
        .start(user, None)
        .await
        .expect("flow starts")
        .prompt
        .user_code;
    fake.approve(&code, who);
    core.notifier
        .wait_for(|_| {
            core.notifier
                .notices()
                .iter()
                .filter(|n| matches!(n, Notice::Update { user: u, outcome: FlowOutcome::Linked { .. }, .. } if *u == user))
                .count()
                > before
        })
        .await;
}
