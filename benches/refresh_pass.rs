//! How long one pass of the background refresh worker takes over 100,000 links: with nothing
//! due (the common case, every 30 s), and with 1,000 hot links due, refreshed against the
//! in-process fake Microsoft. Run with `cargo bench --bench refresh_pass`; the numbers are in
//! docs/benchmarks.md.

#[path = "../tests/support/microsoft.rs"]
mod microsoft;

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{TimeDelta, Utc};
use criterion::{Criterion, criterion_group, criterion_main};
use linkbot::domain::{Account, DiscordUserId, Secret};
use linkbot::linking::Linking;
use linkbot::microsoft::{MicrosoftClient, MicrosoftSettings};
use linkbot::notify::{Discard, Notifier};
use linkbot::store::links::{self, NewLink};
use linkbot::store::{Sealer, Store};
use linkbot::tokens::{Clock, Tokens};
use tokio_util::sync::CancellationToken;

use microsoft::{FakeMicrosoft, FakeUser};

const LINKS: u64 = 100_000;
const DUE: i64 = 1_000;

struct Setup {
    store: Store,
    tokens: Tokens,
    _fake: FakeMicrosoft,
    _dir: tempfile::TempDir,
}

/// A database of 100,000 links sharing one refresh token that the fake accepts.
async fn setup() -> Setup {
    let fake = FakeMicrosoft::start().await;
    fake.set_device_code_timing(60, 1);
    let dir = tempfile::tempdir().expect("temporary folder");
    let url = format!("sqlite://{}", dir.path().join("bench.db").display());
    let store = Store::connect(&url, Sealer::new(&[9; 32]))
        .await
        .expect("database opens");
    let settings = MicrosoftSettings {
        authority: fake.base_url().parse().expect("url"),
        tenant: "common".into(),
        client_id: fake.client_id(),
        scopes: ["User.Read", "offline_access", "openid", "profile"]
            .map(str::to_owned)
            .to_vec(),
        graph_base: fake.base_url().parse().expect("url"),
        request_timeout: Duration::from_secs(10),
    };
    let client = MicrosoftClient::new(settings).expect("client");
    let notifier: Arc<dyn Notifier> = Arc::new(Discard);

    // One real device flow yields a refresh token the fake will honour.
    let linking = Linking::new(
        store.clone(),
        client.clone(),
        notifier.clone(),
        CancellationToken::new(),
    );
    let first = DiscordUserId::new(1);
    let code = linking
        .start(first, None)
        .await
        .expect("flow starts")
        .prompt
        .user_code;
    fake.approve(&code, &FakeUser::entra("bench"));
    let refresh_token = loop {
        if let Some(link) = links::find(&store, first).await.expect("read") {
            break link.refresh_token.clone();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    let now = Utc::now();
    let mut tx = store.pool().begin().await.expect("transaction");
    for id in 2..=LINKS {
        let link = NewLink {
            user: DiscordUserId::new(id),
            account: Account {
                tenant_id: "t".into(),
                object_id: format!("o-{id}"),
                username: format!("user{id}@contoso.example"),
                display_name: format!("User {id}"),
            },
            scopes: "User.Read profile openid email".into(),
            access_token: Secret::new(format!("EwAbench{id}")),
            access_expires_at: now + TimeDelta::hours(1),
            refresh_token: refresh_token.clone(),
            linked_at: now,
            next_refresh_at: now + TimeDelta::days(7),
        };
        links::save_new(&mut tx, &store, &link).await.expect("seed");
    }
    tx.commit().await.expect("commit");
    sqlx::query("UPDATE links SET next_refresh_at = ?")
        .bind((now + TimeDelta::days(7)).timestamp_millis())
        .execute(store.pool())
        .await
        .expect("reschedule");

    let tokens = Tokens::new(
        store.clone(),
        client,
        notifier,
        Clock::system(),
        Duration::from_secs(7 * 86_400),
    );
    Setup {
        store,
        tokens,
        _fake: fake,
        _dir: dir,
    }
}

/// Makes the first `DUE` links hot and due now.
async fn make_due(store: &Store) {
    let now = Utc::now().timestamp_millis();
    sqlx::query(
        "UPDATE links SET next_refresh_at = ?, last_used_at = ? WHERE discord_user_id <= ?",
    )
    .bind(now - 1)
    .bind(now)
    .bind(DUE)
    .execute(store.pool())
    .await
    .expect("mark due");
}

fn refresh_pass(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let setup = runtime.block_on(setup());
    let mut group = c.benchmark_group("refresh_pass_100k_links");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(20));

    group.bench_function("nothing_due", |b| {
        b.to_async(&runtime).iter(|| async {
            let handled = setup.tokens.run_due().await.expect("pass");
            assert_eq!(handled, 0);
        });
    });

    group.bench_function("1000_hot_links_due", |b| {
        b.to_async(&runtime).iter_custom(|iters| {
            let setup = &setup;
            async move {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    make_due(&setup.store).await;
                    let started = Instant::now();
                    let handled = setup.tokens.run_due().await.expect("pass");
                    total += started.elapsed();
                    assert_eq!(handled, usize::try_from(DUE).expect("fits"));
                }
                total
            }
        });
    });
    group.finish();
}

criterion_group!(benches, refresh_pass);
criterion_main!(benches);
