//! Log output: a `tracing` subscriber filtered by `RUST_LOG` (default `info`), written to
//! standard error so standard output stays free for commands that print a key or a token.

use std::io::IsTerminal as _;

use tracing_subscriber::EnvFilter;

/// Dependencies whose verbose logs can carry secrets, held at these levels whatever `RUST_LOG`
/// asks. serenity's `#[instrument]` spans record whole requests (message content, interaction
/// tokens in webhook paths) and the websocket crates trace every frame (the IDENTIFY frame holds
/// the bot token); the HTTP stack's low levels can show headers.
const CAPS: &[(&str, &str)] = &[
    ("serenity", "warn"),
    ("tungstenite", "warn"),
    ("tokio_tungstenite", "warn"),
    ("hyper", "info"),
    ("hyper_util", "info"),
    ("h2", "info"),
    ("reqwest", "info"),
    ("rustls", "info"),
];

/// The filter for `rust_log` (the value of `RUST_LOG`), with [`CAPS`] applied.
pub fn filter(rust_log: Option<&str>) -> EnvFilter {
    let requested = rust_log
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .unwrap_or("info");
    let capped = |directive: &str| {
        let target = directive
            .split(['=', '['])
            .next()
            .unwrap_or_default()
            .trim();
        CAPS.iter().any(|(crate_name, _)| {
            target == *crate_name || target.starts_with(&format!("{crate_name}::"))
        })
    };
    let mut directives: Vec<String> = requested
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty() && !capped(d))
        .map(str::to_owned)
        .collect();
    directives.extend(CAPS.iter().map(|(name, level)| format!("{name}={level}")));
    EnvFilter::try_new(directives.join(",")).unwrap_or_else(|_| {
        let defaults: Vec<String> = std::iter::once("info".to_owned())
            .chain(CAPS.iter().map(|(name, level)| format!("{name}={level}")))
            .collect();
        EnvFilter::new(defaults.join(","))
    })
}

/// Installs the global subscriber. Safe to call once per process.
pub fn init() {
    let rust_log = std::env::var("RUST_LOG").ok();
    tracing_subscriber::fmt()
        .with_env_filter(filter(rust_log.as_deref()))
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, not in files or journald.
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn risky_dependencies_stay_capped_even_when_asked_for_trace() {
        let text = filter(Some("trace,serenity=trace,tungstenite::protocol=trace")).to_string();

        assert!(text.contains("serenity=warn"), "{text}");
        assert!(!text.contains("serenity=trace"), "{text}");
        assert!(!text.contains("tungstenite::protocol=trace"), "{text}");
        assert!(text.contains("trace"), "the rest stays as asked: {text}");
    }

    #[test]
    fn an_unset_or_bad_filter_falls_back_to_info() {
        assert!(filter(None).to_string().contains("info"));
        assert!(filter(Some("=[[[")).to_string().contains("serenity=warn"));
    }
}
