//! Configuration: every environment variable linkbot reads, with its default and validation.
//! This is the only module that looks at the environment; everything else receives a
//! [`Config`] (or, for `linkbot token`, a [`ClientConfig`]).

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use url::Url;

use crate::domain::Secret;

/// Everything the running bot needs, validated.
#[derive(Clone, Debug)]
pub struct Config {
    /// Bot token (`DISCORD_TOKEN`).
    pub discord_token: Secret,
    /// Guild for instant command registration (`DISCORD_GUILD_ID`); global when unset.
    pub discord_guild_id: Option<u64>,
    /// Base URL of Discord's API (`DISCORD_API_BASE`), for a proxy or a fake.
    pub discord_api_base: Url,
    /// Application (client) id of the Microsoft app registration (`MICROSOFT_CLIENT_ID`).
    pub microsoft_client_id: String,
    /// Tenant path segment (`MICROSOFT_TENANT`).
    pub microsoft_tenant: String,
    /// Login host (`MICROSOFT_AUTHORITY`).
    pub microsoft_authority: Url,
    /// Delegated scopes to link with (`MICROSOFT_SCOPES`), without `offline_access`.
    pub microsoft_scopes: Vec<String>,
    /// Microsoft Graph host (`GRAPH_API_BASE`).
    pub graph_api_base: Url,
    /// Database location (`DATABASE_URL`).
    pub database_url: String,
    /// Where the sealing key comes from (`LINKBOT_SECRET_KEY`, or a key file).
    pub secret_key: KeySource,
    /// Address of the internal API (`API_LISTEN`).
    pub api_listen: SocketAddr,
    /// How often an idle link is refreshed so its refresh token never lapses
    /// (`LINKBOT_KEEPALIVE_DAYS`).
    pub keepalive: Duration,
    /// How long audit events are kept (`LINKBOT_AUDIT_RETENTION_DAYS`).
    pub audit_retention: Duration,
}

/// Where the 32-byte sealing key comes from.
#[derive(Clone, PartialEq, Eq)]
pub enum KeySource {
    /// Given in `LINKBOT_SECRET_KEY`.
    Given([u8; 32]),
    /// Read from (or created at) this file, beside the database.
    File(PathBuf),
}

impl fmt::Debug for KeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Given(_) => f.write_str("Given([redacted])"),
            Self::File(path) => f.debug_tuple("File").field(path).finish(),
        }
    }
}

/// One thing wrong with one variable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// The variable's name.
    pub variable: &'static str,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.variable, self.message)
    }
}

/// Every problem found in the configuration, reported together.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// At least one problem.
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid configuration ({} problem", self.problems.len())?;
        if self.problems.len() != 1 {
            f.write_str("s")?;
        }
        f.write_str(")")?;
        for problem in &self.problems {
            write!(f, "\n  {problem}")?;
        }
        Ok(())
    }
}

/// Names of every variable, for `linkbot check` and the docs test.
pub const VARIABLES: &[&str] = &[
    "DISCORD_TOKEN",
    "DISCORD_GUILD_ID",
    "DISCORD_API_BASE",
    "MICROSOFT_CLIENT_ID",
    "MICROSOFT_TENANT",
    "MICROSOFT_AUTHORITY",
    "MICROSOFT_SCOPES",
    "GRAPH_API_BASE",
    "DATABASE_URL",
    "LINKBOT_SECRET_KEY",
    "API_LISTEN",
    "RUST_LOG",
    "LINKBOT_KEEPALIVE_DAYS",
    "LINKBOT_AUDIT_RETENTION_DAYS",
    "LINKBOT_API_URL",
    "LINKBOT_API_KEY",
];

/// Scopes every link asks for on top of `MICROSOFT_SCOPES`: a refresh token and an id_token
/// with the account's identity.
pub const BASE_SCOPES: &[&str] = &["offline_access", "openid", "profile"];

impl Config {
    /// Reads the process environment.
    ///
    /// # Errors
    /// Returns every problem found, each naming its variable.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads variables through `lookup`, so tests need not touch the process environment.
    ///
    /// # Errors
    /// Returns every problem found, each naming its variable.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let mut reader = Reader {
            lookup: &lookup,
            problems: Vec::new(),
        };

        let discord_token = reader.required_secret(
            "DISCORD_TOKEN",
            "the bot token from the Discord developer portal",
        );
        let discord_guild_id = reader
            .optional("DISCORD_GUILD_ID")
            .and_then(|text| reader.snowflake("DISCORD_GUILD_ID", &text));
        let discord_api_base = reader.url("DISCORD_API_BASE", "https://discord.com");
        let microsoft_client_id = reader.required(
            "MICROSOFT_CLIENT_ID",
            "the Application (client) ID of the app registration",
        );
        let microsoft_tenant = reader.tenant();
        let microsoft_authority =
            reader.url("MICROSOFT_AUTHORITY", "https://login.microsoftonline.com");
        let microsoft_scopes = reader.scopes();
        let graph_api_base = reader.url("GRAPH_API_BASE", "https://graph.microsoft.com");
        let database_url = reader.database_url();
        let secret_key = reader.secret_key(&database_url);
        let api_listen = reader.socket_addr("API_LISTEN", "127.0.0.1:8787");
        let keepalive = reader.days("LINKBOT_KEEPALIVE_DAYS", 7, 80);
        let audit_retention = reader.days("LINKBOT_AUDIT_RETENTION_DAYS", 90, 3650);

        if !reader.problems.is_empty() {
            return Err(ConfigError {
                problems: reader.problems,
            });
        }
        // Every branch that leaves a value unset pushed a problem, so this pattern matches.
        let (
            Some(discord_token),
            Some(microsoft_client_id),
            Some(discord_api_base),
            Some(microsoft_authority),
            Some(graph_api_base),
            Some(secret_key),
            Some(api_listen),
            Some(keepalive),
            Some(audit_retention),
        ) = (
            discord_token,
            microsoft_client_id,
            discord_api_base,
            microsoft_authority,
            graph_api_base,
            secret_key,
            api_listen,
            keepalive,
            audit_retention,
        )
        else {
            return Err(ConfigError {
                problems: reader.problems,
            });
        };
        Ok(Self {
            discord_token,
            discord_guild_id,
            discord_api_base,
            microsoft_client_id,
            microsoft_tenant,
            microsoft_authority,
            microsoft_scopes,
            graph_api_base,
            database_url,
            secret_key,
            api_listen,
            keepalive,
            audit_retention,
        })
    }

    /// All scopes requested at linking: `MICROSOFT_SCOPES` plus [`BASE_SCOPES`].
    pub fn requested_scopes(&self) -> Vec<String> {
        let mut scopes = self.microsoft_scopes.clone();
        for base in BASE_SCOPES {
            if !scopes.iter().any(|s| s.eq_ignore_ascii_case(base)) {
                scopes.push((*base).to_owned());
            }
        }
        scopes
    }
}

/// Settings of the commands that only open the database (`linkbot api-key …`), so they run
/// without the bot's credentials.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// Database location (`DATABASE_URL`).
    pub database_url: String,
    /// Where the sealing key comes from (`LINKBOT_SECRET_KEY`, or a key file).
    pub secret_key: KeySource,
}

impl StoreConfig {
    /// Reads `DATABASE_URL` and `LINKBOT_SECRET_KEY`.
    ///
    /// # Errors
    /// Returns every problem found, each naming its variable.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// As [`StoreConfig::from_env`], through `lookup`.
    ///
    /// # Errors
    /// Returns every problem found, each naming its variable.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let mut reader = Reader {
            lookup: &lookup,
            problems: Vec::new(),
        };
        let database_url = reader.database_url();
        match reader.secret_key(&database_url) {
            Some(secret_key) if reader.problems.is_empty() => Ok(Self {
                database_url,
                secret_key,
            }),
            _ => Err(ConfigError {
                problems: reader.problems,
            }),
        }
    }
}

impl Config {
    /// The database part of the configuration.
    pub fn store_config(&self) -> StoreConfig {
        StoreConfig {
            database_url: self.database_url.clone(),
            secret_key: self.secret_key.clone(),
        }
    }
}

/// Settings of `linkbot token`, which talks to a running instance over HTTP.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Base URL of the internal API (`LINKBOT_API_URL`).
    pub api_url: Url,
    /// API key (`LINKBOT_API_KEY`).
    pub api_key: Secret,
}

impl ClientConfig {
    /// Reads `LINKBOT_API_URL` (default `http://127.0.0.1:8787`) and `LINKBOT_API_KEY`.
    ///
    /// # Errors
    /// Returns every problem found, each naming its variable.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// As [`ClientConfig::from_env`], through `lookup`.
    ///
    /// # Errors
    /// Returns every problem found, each naming its variable.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let mut reader = Reader {
            lookup: &lookup,
            problems: Vec::new(),
        };
        let api_url = reader.url("LINKBOT_API_URL", "http://127.0.0.1:8787");
        let api_key =
            reader.required_secret("LINKBOT_API_KEY", "a key made by `linkbot api-key create`");
        match (api_url, api_key) {
            (Some(api_url), Some(api_key)) if reader.problems.is_empty() => {
                Ok(Self { api_url, api_key })
            }
            _ => Err(ConfigError {
                problems: reader.problems,
            }),
        }
    }
}

/// Decodes a base64 secret key of exactly 32 bytes.
///
/// # Errors
/// Says what is wrong with the text, never echoing it.
pub fn decode_key(text: &str) -> Result<[u8; 32], String> {
    let bytes = BASE64
        .decode(text.trim())
        .map_err(|_| "is not valid base64; make one with `linkbot keygen`".to_owned())?;
    <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| {
        format!(
            "decodes to {} bytes, but a key is 32 bytes; make one with `linkbot keygen`",
            bytes.len()
        )
    })
}

/// The file path of a SQLite `DATABASE_URL`, or `None` for in-memory and other databases.
pub fn sqlite_path(database_url: &str) -> Option<PathBuf> {
    let rest = database_url
        .strip_prefix("sqlite://")
        .or_else(|| database_url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or_default();
    if path.is_empty() || path == ":memory:" || rest.contains("mode=memory") {
        return None;
    }
    Some(PathBuf::from(path))
}

struct Reader<'a> {
    lookup: &'a dyn Fn(&str) -> Option<String>,
    problems: Vec<Problem>,
}

impl Reader<'_> {
    fn problem(&mut self, variable: &'static str, message: impl Into<String>) {
        self.problems.push(Problem {
            variable,
            message: message.into(),
        });
    }

    /// A set, non-blank value; blank counts as unset so `.env.example` placeholders left
    /// empty read as missing.
    fn optional(&self, name: &str) -> Option<String> {
        (self.lookup)(name)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    }

    fn required(&mut self, name: &'static str, what: &str) -> Option<String> {
        let value = self.optional(name);
        if value.is_none() {
            self.problem(name, format!("is required: set it to {what}"));
        }
        value
    }

    fn required_secret(&mut self, name: &'static str, what: &str) -> Option<Secret> {
        self.required(name, what).map(Secret::new)
    }

    fn snowflake(&mut self, name: &'static str, text: &str) -> Option<u64> {
        match text.parse::<u64>() {
            Ok(id) if id > 0 => Some(id),
            _ => {
                self.problem(
                    name,
                    "must be a numeric Discord id (enable developer mode, right-click, Copy ID)",
                );
                None
            }
        }
    }

    fn url(&mut self, name: &'static str, default: &str) -> Option<Url> {
        let text = self.optional(name).unwrap_or_else(|| default.to_owned());
        match Url::parse(&text) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {
                Some(url)
            }
            _ => {
                self.problem(name, "must be an http:// or https:// URL with a host");
                None
            }
        }
    }

    fn tenant(&mut self) -> String {
        let tenant = self
            .optional("MICROSOFT_TENANT")
            .unwrap_or_else(|| "common".to_owned());
        let valid = tenant
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
        if !valid {
            self.problem(
                "MICROSOFT_TENANT",
                "must be common, organizations, consumers, a tenant id or a domain",
            );
        }
        tenant
    }

    fn scopes(&mut self) -> Vec<String> {
        let text = self
            .optional("MICROSOFT_SCOPES")
            .unwrap_or_else(|| "User.Read".to_owned());
        text.split([' ', ','])
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    }

    fn database_url(&mut self) -> String {
        let url = self
            .optional("DATABASE_URL")
            .unwrap_or_else(|| "sqlite://data/linkbot.db".to_owned());
        if !url.starts_with("sqlite:") {
            self.problem(
                "DATABASE_URL",
                "must be a SQLite URL such as sqlite://data/linkbot.db (this version stores links in SQLite only)",
            );
        }
        url
    }

    fn secret_key(&mut self, database_url: &str) -> Option<KeySource> {
        if let Some(text) = self.optional("LINKBOT_SECRET_KEY") {
            return match decode_key(&text) {
                Ok(key) => Some(KeySource::Given(key)),
                Err(message) => {
                    self.problem("LINKBOT_SECRET_KEY", message);
                    None
                }
            };
        }
        match sqlite_path(database_url) {
            Some(db) => Some(KeySource::File(key_file_beside(&db))),
            None => {
                self.problem(
                    "LINKBOT_SECRET_KEY",
                    "is required when DATABASE_URL is not a SQLite file; make one with `linkbot keygen`",
                );
                None
            }
        }
    }

    fn socket_addr(&mut self, name: &'static str, default: &str) -> Option<SocketAddr> {
        let text = self.optional(name).unwrap_or_else(|| default.to_owned());
        match text.parse() {
            Ok(addr) => Some(addr),
            Err(_) => {
                self.problem(name, "must be an IP address and port, like 127.0.0.1:8787");
                None
            }
        }
    }

    fn days(&mut self, name: &'static str, default: u64, max: u64) -> Option<Duration> {
        let Some(text) = self.optional(name) else {
            return Some(Duration::from_secs(default * 86_400));
        };
        match text.parse::<u64>() {
            Ok(days) if (1..=max).contains(&days) => Some(Duration::from_secs(days * 86_400)),
            _ => {
                self.problem(
                    name,
                    format!("must be a whole number of days from 1 to {max}"),
                );
                None
            }
        }
    }
}

/// `data/linkbot.db` keeps its key in `data/linkbot.key`.
fn key_file_beside(database: &Path) -> PathBuf {
    database.with_extension("key")
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |name| map.get(name).cloned()
    }

    const MINIMAL: &[(&str, &str)] = &[
        ("DISCORD_TOKEN", "bot-token"),
        ("MICROSOFT_CLIENT_ID", "client"),
    ];

    #[test]
    fn defaults_follow_the_design() {
        let config = Config::from_lookup(lookup(MINIMAL)).unwrap();

        assert_eq!(config.microsoft_tenant, "common");
        assert_eq!(
            config.microsoft_authority.as_str(),
            "https://login.microsoftonline.com/"
        );
        assert_eq!(
            config.graph_api_base.as_str(),
            "https://graph.microsoft.com/"
        );
        assert_eq!(config.discord_api_base.as_str(), "https://discord.com/");
        assert_eq!(config.microsoft_scopes, vec!["User.Read"]);
        assert_eq!(config.database_url, "sqlite://data/linkbot.db");
        assert_eq!(
            config.secret_key,
            KeySource::File(PathBuf::from("data/linkbot.key"))
        );
        assert_eq!(config.api_listen.to_string(), "127.0.0.1:8787");
        assert_eq!(config.discord_guild_id, None);
        assert_eq!(config.keepalive, Duration::from_secs(7 * 86_400));
    }

    #[test]
    fn an_empty_environment_names_every_required_variable() {
        let err = Config::from_lookup(lookup(&[])).unwrap_err();

        let names: Vec<_> = err.problems.iter().map(|p| p.variable).collect();
        assert_eq!(names, vec!["DISCORD_TOKEN", "MICROSOFT_CLIENT_ID"]);
    }

    #[test]
    fn every_bad_value_is_reported_at_once() {
        let mut pairs = MINIMAL.to_vec();
        pairs.extend([
            ("DISCORD_GUILD_ID", "my-guild"),
            ("MICROSOFT_AUTHORITY", "login.example"),
            ("GRAPH_API_BASE", "ftp://graph.example"),
            ("LINKBOT_SECRET_KEY", "c2hvcnQ="),
            ("API_LISTEN", "localhost"),
            ("MICROSOFT_TENANT", "a/b"),
            ("LINKBOT_KEEPALIVE_DAYS", "0"),
        ]);

        let err = Config::from_lookup(lookup(&pairs)).unwrap_err();

        let names: Vec<_> = err.problems.iter().map(|p| p.variable).collect();
        assert_eq!(
            names,
            vec![
                "DISCORD_GUILD_ID",
                "MICROSOFT_TENANT",
                "MICROSOFT_AUTHORITY",
                "GRAPH_API_BASE",
                "LINKBOT_SECRET_KEY",
                "API_LISTEN",
                "LINKBOT_KEEPALIVE_DAYS",
            ]
        );
        assert!(err.to_string().contains("decodes to 5 bytes"));
    }

    #[test]
    fn a_bad_key_is_described_without_echoing_it() {
        let err = decode_key("not base64 at all!").unwrap_err();
        assert!(!err.contains("not base64 at all"));
    }

    #[test]
    fn linking_always_asks_for_a_refresh_token_and_identity() {
        let mut pairs = MINIMAL.to_vec();
        pairs.push(("MICROSOFT_SCOPES", "User.Read Mail.Read offline_access"));
        let config = Config::from_lookup(lookup(&pairs)).unwrap();

        assert_eq!(
            config.requested_scopes(),
            vec![
                "User.Read",
                "Mail.Read",
                "offline_access",
                "openid",
                "profile"
            ]
        );
    }

    #[test]
    fn sqlite_paths_are_found_only_for_files() {
        assert_eq!(
            sqlite_path("sqlite://data/x.db"),
            Some(PathBuf::from("data/x.db"))
        );
        assert_eq!(
            sqlite_path("sqlite:///var/lib/x.db?mode=rwc"),
            Some(PathBuf::from("/var/lib/x.db"))
        );
        assert_eq!(sqlite_path("sqlite::memory:"), None);
        assert_eq!(sqlite_path("postgres://db/x"), None);
    }

    #[test]
    fn database_commands_need_neither_discord_nor_microsoft_settings() {
        let config =
            StoreConfig::from_lookup(lookup(&[("DATABASE_URL", "sqlite://x/y.db")])).unwrap();

        assert_eq!(config.database_url, "sqlite://x/y.db");
        assert_eq!(config.secret_key, KeySource::File(PathBuf::from("x/y.key")));
        let err =
            StoreConfig::from_lookup(lookup(&[("LINKBOT_SECRET_KEY", "c2hvcnQ=")])).unwrap_err();
        assert_eq!(err.problems[0].variable, "LINKBOT_SECRET_KEY");
    }

    #[test]
    fn only_sqlite_databases_are_accepted() {
        let mut pairs = MINIMAL.to_vec();
        pairs.extend([
            ("DATABASE_URL", "postgres://db/linkbot"),
            (
                "LINKBOT_SECRET_KEY",
                "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
            ),
        ]);

        let err = Config::from_lookup(lookup(&pairs)).unwrap_err();

        assert_eq!(err.problems.len(), 1);
        assert_eq!(err.problems[0].variable, "DATABASE_URL");
    }

    #[test]
    fn debug_output_hides_secrets() {
        let mut pairs = MINIMAL.to_vec();
        pairs.push((
            "LINKBOT_SECRET_KEY",
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        ));
        let config = Config::from_lookup(lookup(&pairs)).unwrap();

        let debug = format!("{config:?}");
        assert!(!debug.contains("bot-token"));
        assert!(!debug.contains("AAAAAAAA"));
    }
}
