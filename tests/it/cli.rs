//! The `linkbot` binary's own commands.

use std::process::{Command, Output};

fn linkbot(dir: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_linkbot"))
        .args(args)
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().copied())
        .output()
        .expect("linkbot runs")
}

#[test]
fn check_with_an_empty_environment_exits_2_and_names_every_missing_variable() {
    let dir = tempfile::tempdir().unwrap();

    let out = linkbot(dir.path(), &["check"], &[]);

    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("DISCORD_TOKEN"), "{stderr}");
    assert!(stderr.contains("MICROSOFT_CLIENT_ID"), "{stderr}");
    assert!(out.stdout.is_empty());
}

#[test]
fn check_reports_bad_values_by_name_without_echoing_secrets() {
    let dir = tempfile::tempdir().unwrap();

    let out = linkbot(
        dir.path(),
        &["check"],
        &[
            ("DISCORD_TOKEN", "secret-bot-token"),
            ("MICROSOFT_CLIENT_ID", "c"),
            ("LINKBOT_SECRET_KEY", "tooshortsecret"),
            ("API_LISTEN", "nowhere"),
        ],
    );

    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("LINKBOT_SECRET_KEY"), "{stderr}");
    assert!(stderr.contains("API_LISTEN"), "{stderr}");
    assert!(
        !stderr.contains("tooshortsecret") && !stderr.contains("secret-bot-token"),
        "{stderr}"
    );
}

#[test]
fn check_creates_the_database_and_key_file_and_passes() {
    let dir = tempfile::tempdir().unwrap();

    let out = linkbot(
        dir.path(),
        &["check"],
        &[("DISCORD_TOKEN", "t"), ("MICROSOFT_CLIENT_ID", "c")],
    );

    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(dir.path().join("data/linkbot.db").exists());
    let key = dir.path().join("data/linkbot.key");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(
            std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr.matches("created a new secret key file").count(),
        1,
        "{stderr}"
    );
}

#[test]
fn keygen_prints_only_a_32_byte_base64_key() {
    let dir = tempfile::tempdir().unwrap();

    let out = linkbot(dir.path(), &["keygen"], &[]);

    assert_eq!(out.status.code(), Some(0));
    let key = String::from_utf8(out.stdout).unwrap();
    assert_eq!(key.lines().count(), 1);
    assert!(linkbot::config::decode_key(key.trim()).is_ok());
}

#[test]
fn a_malformed_env_file_is_reported_by_line_number_only() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join(".env"),
        "DISCORD_TOKEN=fine\nthis line's hunter2 'secret\n",
    )
    .unwrap();

    let out = linkbot(dir.path(), &["check"], &[]);

    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(".env line"), "{stderr}");
    assert!(!stderr.contains("hunter2"), "{stderr}");
}
