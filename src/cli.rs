//! The one-shot commands of `linkbot`: `keygen`, `check`, `api-key …` and `token`. Each returns
//! the process exit code: 0 success, 1 runtime failure, 2 bad usage or configuration.

use std::io::Write as _;
use std::process::ExitCode;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use chrono::Utc;
use rand::RngCore as _;

use crate::config::{ClientConfig, Config, StoreConfig};
use crate::domain::{DiscordUserId, Secret};
use crate::store::api_keys::{self, CreateKeyError, Role};
use crate::store::{self, Sealer, Store, StoreError};

const USAGE: u8 = 2;
const RUNTIME: u8 = 1;

/// Writes one line to standard output, the channel reserved for keys and tokens.
fn emit(line: &str) -> ExitCode {
    let mut stdout = std::io::stdout().lock();
    match writeln!(stdout, "{line}").and_then(|()| stdout.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(_) => ExitCode::from(RUNTIME),
    }
}

/// `linkbot keygen`: a new random 32-byte key, base64.
pub fn keygen() -> ExitCode {
    emit(&STANDARD.encode(store::seal::generate_key()))
}

/// `linkbot check`: reports every configuration and database problem.
pub async fn check() -> ExitCode {
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(err) => {
            for problem in &err.problems {
                eprintln!("problem: {problem}");
            }
            eprintln!("{} configuration problem(s) found", err.problems.len());
            return ExitCode::from(USAGE);
        }
    };
    match open_store(&config).await {
        Ok(store) => match store::verify_key(&store).await {
            Ok(()) => {
                eprintln!("configuration and database are fine");
                ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("problem: DATABASE_URL: {err}");
                ExitCode::from(RUNTIME)
            }
        },
        Err(err) => {
            eprintln!("problem: DATABASE_URL: {err}");
            ExitCode::from(RUNTIME)
        }
    }
}

/// Opens the configured database with the configured key.
///
/// # Errors
/// Fails when the key or the database cannot be opened.
pub async fn open_store(config: &Config) -> Result<Store, StoreError> {
    open_database(&config.store_config()).await
}

/// Opens the database of `config` with its key.
///
/// # Errors
/// Fails when the key or the database cannot be opened.
pub async fn open_database(config: &StoreConfig) -> Result<Store, StoreError> {
    let (key, origin) = store::load_key(&config.secret_key)?;
    if origin == store::KeyOrigin::FileCreated {
        tracing::info!(path = ?config.secret_key, "created a new secret key file; back it up with the database");
    }
    Store::connect(&config.database_url, Sealer::new(&key)).await
}

/// A new API key: a prefix that makes leaked keys easy to grep for, then 32 random bytes.
pub fn generate_api_key() -> Secret {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    Secret::new(format!("lbk_{}", URL_SAFE_NO_PAD.encode(bytes)))
}

fn valid_key_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// `linkbot api-key create NAME`: prints the key once, and nothing else on standard output.
pub async fn api_key_create(config: &StoreConfig, name: &str, role: Role) -> ExitCode {
    if !valid_key_name(name) {
        eprintln!("error: NAME must be 1-64 letters, digits, '-', '_' or '.'");
        return ExitCode::from(USAGE);
    }
    let store = match open_database(config).await {
        Ok(store) => store,
        Err(err) => return runtime_failure(&err),
    };
    let key = generate_api_key();
    match api_keys::create(&store, name, role, &key, Utc::now()).await {
        Ok(()) => {
            store.close().await;
            eprintln!(
                "created {} key {name:?}; it is shown only now",
                role.as_str()
            );
            emit(key.expose())
        }
        Err(CreateKeyError::NameTaken(_)) => {
            eprintln!("error: an API key named {name:?} already exists; pick another name");
            ExitCode::from(USAGE)
        }
        Err(CreateKeyError::Store(err)) => runtime_failure(&err),
    }
}

/// `linkbot api-key list`.
pub async fn api_key_list(config: &StoreConfig) -> ExitCode {
    let store = match open_database(config).await {
        Ok(store) => store,
        Err(err) => return runtime_failure(&err),
    };
    let keys = match api_keys::list(&store).await {
        Ok(keys) => keys,
        Err(err) => return runtime_failure(&err),
    };
    let mut lines = vec![format!(
        "{:<24} {:<7} {:<20} {:<20} {}",
        "NAME", "ROLE", "CREATED", "LAST USED", "STATUS"
    )];
    let time = |t: Option<chrono::DateTime<Utc>>| {
        t.map_or_else(
            || "-".to_owned(),
            |t| t.format("%Y-%m-%d %H:%M").to_string(),
        )
    };
    for key in keys {
        let status = if key.revoked_at.is_some() {
            "revoked"
        } else {
            "active"
        };
        lines.push(format!(
            "{:<24} {:<7} {:<20} {:<20} {status}",
            key.name,
            key.role.as_str(),
            time(Some(key.created_at)),
            time(key.last_used_at),
        ));
    }
    emit(&lines.join("\n"))
}

/// `linkbot api-key revoke NAME`.
pub async fn api_key_revoke(config: &StoreConfig, name: &str) -> ExitCode {
    let store = match open_database(config).await {
        Ok(store) => store,
        Err(err) => return runtime_failure(&err),
    };
    match api_keys::revoke(&store, name, Utc::now()).await {
        Ok(true) => {
            eprintln!("revoked API key {name:?}");
            ExitCode::SUCCESS
        }
        Ok(false) => {
            eprintln!("error: no active API key named {name:?}");
            ExitCode::from(USAGE)
        }
        Err(err) => runtime_failure(&err),
    }
}

/// `linkbot token DISCORD_ID`: asks the running API and prints only the access token.
pub async fn token(
    config: &ClientConfig,
    discord_id: &str,
    scope: Option<&str>,
    min_valid: Option<u64>,
) -> ExitCode {
    if DiscordUserId::parse(discord_id).is_err() {
        eprintln!("error: DISCORD_ID must be a numeric Discord user id");
        return ExitCode::from(USAGE);
    }
    let mut url = config.api_url.clone();
    url.set_path(&format!(
        "{}/v1/users/{discord_id}/token",
        url.path().trim_end_matches('/')
    ));
    {
        let mut query = url.query_pairs_mut();
        if let Some(scope) = scope {
            query.append_pair("scope", scope);
        }
        if let Some(min_valid) = min_valid {
            query.append_pair("min_valid", &min_valid.to_string());
        }
    }
    if url.query() == Some("") {
        url.set_query(None);
    }
    let client = match reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(std::time::Duration::from_secs(60))
        .build()
    {
        Ok(client) => client,
        Err(_) => {
            eprintln!("error: cannot build an HTTP client");
            return ExitCode::from(RUNTIME);
        }
    };
    let response = match client
        .get(url)
        .bearer_auth(config.api_key.expose())
        .send()
        .await
    {
        Ok(response) => response,
        Err(err) => {
            let what = if err.is_timeout() {
                "timed out"
            } else {
                "is unreachable"
            };
            eprintln!(
                "error: the linkbot API at {} {what}; is `linkbot run` up? (LINKBOT_API_URL)",
                config.api_url
            );
            return ExitCode::from(RUNTIME);
        }
    };
    let status = response.status();
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    let body: serde_json::Value = response.json().await.unwrap_or_default();
    if status.is_success() {
        return match body.get("access_token").and_then(|t| t.as_str()) {
            Some(token) => emit(token),
            None => {
                eprintln!("error: the API answered without a token; is LINKBOT_API_URL a linkbot?");
                ExitCode::from(RUNTIME)
            }
        };
    }
    let code = body
        .get("error")
        .and_then(|v| v.as_str())
        .unwrap_or("unknown");
    let message = body
        .get("message")
        .and_then(|v| v.as_str())
        .unwrap_or("no details");
    eprintln!("error: {code} (HTTP {}): {message}", status.as_u16());
    match code {
        "unauthorized" | "forbidden" => {
            eprintln!("hint: check LINKBOT_API_KEY (make one with `linkbot api-key create`)");
            ExitCode::from(USAGE)
        }
        "invalid_request" => ExitCode::from(USAGE),
        "not_found" => {
            eprintln!("hint: check LINKBOT_API_URL; it should be the API's base URL");
            ExitCode::from(USAGE)
        }
        "provider_unavailable" => {
            if let Some(secs) = retry_after {
                eprintln!("hint: try again in {secs} seconds");
            }
            ExitCode::from(RUNTIME)
        }
        _ => ExitCode::from(RUNTIME),
    }
}

fn runtime_failure(err: &dyn std::error::Error) -> ExitCode {
    let mut message = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    eprintln!("error: {message}");
    ExitCode::from(RUNTIME)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_keys_are_long_random_and_prefixed() {
        let (a, b) = (generate_api_key(), generate_api_key());
        assert!(a.expose().starts_with("lbk_"));
        assert!(a.expose().len() > 40);
        assert_ne!(a, b);
    }

    #[test]
    fn key_names_are_plain_words() {
        assert!(valid_key_name("backup-cron_1.0"));
        for bad in ["", "has space", "x/y", &"a".repeat(65)] {
            assert!(!valid_key_name(bad), "{bad:?}");
        }
    }
}
