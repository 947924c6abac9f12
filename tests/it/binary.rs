//! The `linkbot` binary itself, run as an operator would, against the fakes: link a user from
//! Discord, hand a token to a script, stop on SIGTERM, and never print a secret.

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::Command;
use tokio::sync::Notify;

use crate::support::PATIENCE;
use crate::support::app::environment;
use crate::support::discord::FakeDiscord;
use crate::support::microsoft::{FakeMicrosoft, FakeUser};

const USER: u64 = 412345678901234567;

fn binary(env: &HashMap<String, String>) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_linkbot"));
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    command
}

/// Standard error of a running process, collected line by line.
#[derive(Clone, Default)]
struct Lines {
    text: Arc<Mutex<String>>,
    changed: Arc<Notify>,
}

impl Lines {
    fn text(&self) -> String {
        self.text.lock().expect("lines lock").clone()
    }

    /// Waits for a line containing `needle` and returns it.
    async fn wait_for(&self, needle: &str) -> String {
        let wait = async {
            loop {
                let changed = self.changed.notified();
                if let Some(line) = self.text().lines().find(|l| l.contains(needle)) {
                    return line.to_owned();
                }
                changed.await;
            }
        };
        tokio::time::timeout(PATIENCE, wait)
            .await
            .unwrap_or_else(|_| panic!("no log line with {needle:?}:\n{}", self.text()))
    }
}

#[tokio::test]
async fn the_binary_links_a_user_serves_a_token_and_stops_on_sigterm_without_printing_secrets() {
    let microsoft = FakeMicrosoft::start().await;
    microsoft.set_device_code_timing(60, 1);
    let discord = FakeDiscord::start().await;
    let dir = tempfile::tempdir().unwrap();
    let secret_key = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
    let mut env = environment(&microsoft, &discord, &dir);
    env.insert("LINKBOT_SECRET_KEY".into(), secret_key.clone());
    env.insert("RUST_LOG".into(), "trace".into());

    // An operator makes a key for a script.
    let created = binary(&env)
        .args(["api-key", "create", "nightly-report"])
        .output()
        .await
        .unwrap();
    assert_eq!(
        created.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let api_key = String::from_utf8(created.stdout).unwrap().trim().to_owned();
    assert!(api_key.starts_with("lbk_"));

    // The bot runs.
    let mut bot = binary(&env)
        .arg("run")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = Lines::default();
    let stderr = bot.stderr.take().unwrap();
    let collector = lines.clone();
    let reader = tokio::spawn(async move {
        let mut stderr = BufReader::new(stderr).lines();
        while let Ok(Some(line)) = stderr.next_line().await {
            let mut text = collector.text.lock().expect("lines lock");
            text.push_str(&line);
            text.push('\n');
            drop(text);
            collector.changed.notify_waiters();
        }
    });
    let started = lines.wait_for("linkbot starting").await;
    let api = started
        .split("api=")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    tokio::time::timeout(PATIENCE, discord.wait_ready())
        .await
        .unwrap();

    // A member links their account from Discord.
    discord
        .invoke("link-microsoft", USER, serde_json::json!([]))
        .await;
    let code_dm = tokio::time::timeout(
        PATIENCE,
        discord.wait_for_call(|c| c.method == "POST" && c.path.starts_with("/api/v10/channels/")),
    )
    .await
    .unwrap();
    let user_code = microsoft.issued_user_codes().last().unwrap().clone();
    assert!(
        code_dm.body.to_string().contains(&user_code),
        "the DM shows the code"
    );
    microsoft.approve(&user_code, &FakeUser::entra("ada lovelace"));
    let edited = tokio::time::timeout(
        PATIENCE,
        discord.wait_for_call(|c| c.method == "PATCH" && c.path.starts_with("/api/v10/channels/")),
    )
    .await
    .unwrap();
    assert!(
        edited.body.to_string().contains("Ada Lovelace"),
        "{}",
        edited.body
    );

    // A script asks for the member's token.
    let mut client_env = HashMap::new();
    client_env.insert("LINKBOT_API_URL".to_owned(), format!("http://{api}"));
    client_env.insert("LINKBOT_API_KEY".to_owned(), api_key.clone());
    let token = binary(&client_env)
        .args(["token", &USER.to_string()])
        .output()
        .await
        .unwrap();
    assert_eq!(
        token.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&token.stderr)
    );
    let printed = String::from_utf8(token.stdout).unwrap();
    assert_eq!(
        printed.trim(),
        microsoft.issued_access_tokens().last().unwrap()
    );
    let missing = binary(&client_env)
        .args(["token", "99"])
        .output()
        .await
        .unwrap();
    assert_ne!(missing.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("not_linked"));

    // SIGTERM stops everything cleanly.
    let pid = bot.id().unwrap().to_string();
    let killed = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap();
    assert!(killed.success());
    let status = tokio::time::timeout(PATIENCE, bot.wait())
        .await
        .unwrap()
        .unwrap();
    reader.await.unwrap();
    assert_eq!(status.code(), Some(0), "{}", lines.text());

    let logs = lines.text();
    assert!(logs.contains("linkbot stopped"));
    let mut secrets = microsoft.issued_access_tokens();
    secrets.extend(microsoft.issued_refresh_tokens());
    secrets.extend(microsoft.issued_device_codes());
    secrets.extend(microsoft.issued_user_codes());
    secrets.extend([api_key, secret_key, "fake-bot-token".to_owned()]);
    let interaction_tokens: Vec<String> = discord
        .calls()
        .iter()
        .filter_map(|c| c.path.strip_prefix("/api/v10/webhooks/"))
        .filter_map(|rest| rest.split('/').nth(1).map(str::to_owned))
        .collect();
    assert!(!interaction_tokens.is_empty());
    secrets.extend(interaction_tokens);
    crate::logs::assert_no_secrets(&logs, &secrets);
}
