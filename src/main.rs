//! The `linkbot` command: parse the command line, load `.env`, set up logging, and hand over to
//! the library. This is the only place that uses `anyhow`.

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use linkbot::config::{ClientConfig, Config, ConfigError, StoreConfig};
use linkbot::{cli, telemetry};

/// Links Discord users' Microsoft accounts and keeps their tokens fresh for server scripts.
#[derive(Debug, Parser)]
#[command(name = "linkbot", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Migrate the database, then run the bot, the API and the workers until Ctrl-C or SIGTERM.
    Run,
    /// Manage keys of the internal API.
    #[command(subcommand)]
    ApiKey(ApiKeyCommand),
    /// Ask the running API for a fresh token and print only the token.
    Token {
        /// The Discord user id.
        discord_id: String,
        /// Scopes of another resource to mint a token for.
        #[arg(long)]
        scope: Option<String>,
        /// Seconds the token must still be valid for.
        #[arg(long)]
        min_valid: Option<u64>,
    },
    /// Print a new random secret key (base64) for LINKBOT_SECRET_KEY.
    Keygen,
    /// Validate the configuration and the database; report every problem.
    Check,
}

#[derive(Debug, Subcommand)]
enum ApiKeyCommand {
    /// Create a key and print it once on standard output.
    Create {
        /// A unique name for the key (who or what uses it).
        name: String,
        /// What the key may do.
        #[arg(long, value_enum, default_value_t = RoleArg::Reader)]
        role: RoleArg,
    },
    /// List keys (never the keys themselves).
    List,
    /// Revoke a key by name; it stops working at once.
    Revoke {
        /// The key's name.
        name: String,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum RoleArg {
    Reader,
    Admin,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(code) = load_dotenv() {
        return code;
    }
    telemetry::init();

    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(dispatch(cli.command.unwrap_or(Command::Run)))
}

async fn dispatch(command: Command) -> ExitCode {
    match command {
        Command::Keygen => cli::keygen(),
        Command::Check => cli::check().await,
        Command::Token {
            discord_id,
            scope,
            min_valid,
        } => match ClientConfig::from_env() {
            Ok(config) => cli::token(&config, &discord_id, scope.as_deref(), min_valid).await,
            Err(err) => config_failure(&err),
        },
        Command::Run => match Config::from_env() {
            Ok(config) => report(linkbot::run(config).await),
            Err(err) => config_failure(&err),
        },
        Command::ApiKey(command) => match StoreConfig::from_env() {
            Ok(config) => match command {
                ApiKeyCommand::Create { name, role } => {
                    let role = match role {
                        RoleArg::Reader => linkbot::store::api_keys::Role::Reader,
                        RoleArg::Admin => linkbot::store::api_keys::Role::Admin,
                    };
                    cli::api_key_create(&config, &name, role).await
                }
                ApiKeyCommand::List => cli::api_key_list(&config).await,
                ApiKeyCommand::Revoke { name } => cli::api_key_revoke(&config, &name).await,
            },
            Err(err) => config_failure(&err),
        },
    }
}

/// Loads `.env` when present. dotenvy's parse errors quote the offending line, which may hold a
/// secret, so only its line number is reported.
fn load_dotenv() -> Result<(), ExitCode> {
    match dotenvy::dotenv() {
        Ok(_) => Ok(()),
        Err(err) if err.not_found() => Ok(()),
        Err(dotenvy::Error::LineParse(line, _)) => {
            let number = std::fs::read_to_string(".env")
                .ok()
                .and_then(|text| text.lines().position(|l| l == line))
                .map_or_else(|| "?".to_owned(), |n| (n + 1).to_string());
            eprintln!("error: .env line {number} cannot be parsed (expected NAME=value)");
            Err(ExitCode::from(2))
        }
        Err(_) => {
            eprintln!("error: .env cannot be read");
            Err(ExitCode::from(2))
        }
    }
}

fn config_failure(err: &ConfigError) -> ExitCode {
    eprintln!("error: {err}");
    ExitCode::from(2)
}

fn report(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(1)
        }
    }
}
