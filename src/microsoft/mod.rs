//! The Microsoft identity platform (v2.0) and Graph, as linkbot uses them: device
//! authorization, token polling, refresh, and `GET /v1.0/me`. Every answer is classified here
//! (see [`error`]); this module knows nothing about Discord or the database.

pub mod error;

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::header::{HeaderMap, RETRY_AFTER};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use url::Url;

pub use error::MicrosoftError;
use error::{Classified, ErrorBody, Grant, classify};

use crate::config::Config;
use crate::domain::Secret;

/// The device-code grant type (RFC 8628 §3.4).
const DEVICE_CODE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";

/// RFC 8628 §3.2: the interval when the server sends none.
const DEFAULT_INTERVAL_SECS: u64 = 5;

/// Where to reach Microsoft and as which app.
#[derive(Clone, Debug)]
pub struct MicrosoftSettings {
    /// Login host, e.g. `https://login.microsoftonline.com`.
    pub authority: Url,
    /// Tenant path segment.
    pub tenant: String,
    /// Application (client) id.
    pub client_id: String,
    /// Scopes to link with, including `offline_access openid profile`.
    pub scopes: Vec<String>,
    /// Graph host.
    pub graph_base: Url,
    /// Total time allowed for one request.
    pub request_timeout: Duration,
}

impl MicrosoftSettings {
    /// Settings from the validated configuration, with a 15-second request timeout.
    pub fn from_config(config: &Config) -> Self {
        Self {
            authority: config.microsoft_authority.clone(),
            tenant: config.microsoft_tenant.clone(),
            client_id: config.microsoft_client_id.clone(),
            scopes: config.requested_scopes(),
            graph_base: config.graph_api_base.clone(),
            request_timeout: Duration::from_secs(15),
        }
    }
}

/// The answer of `/devicecode` (reference §2).
#[derive(Clone, Debug)]
pub struct DeviceAuthorization {
    /// Secret code to poll with.
    pub device_code: Secret,
    /// Short code for the user.
    pub user_code: String,
    /// Page to open, as sent.
    pub verification_uri: String,
    /// Lifetime of both codes.
    pub expires_in: Duration,
    /// Minimum time between polls.
    pub interval: Duration,
    /// Ready-made instruction.
    pub message: String,
}

/// A successful token answer (reference §4). The access token is opaque and never parsed.
#[derive(Clone, Debug)]
pub struct TokenSet {
    /// The access token.
    pub access_token: Secret,
    /// Its lifetime.
    pub expires_in: Duration,
    /// Granted scopes, as sent.
    pub scope: String,
    /// A rotated refresh token, when sent.
    pub refresh_token: Option<Secret>,
    /// The id_token, when `openid` was requested.
    pub id_token: Option<Secret>,
}

/// One device-code poll's result.
#[derive(Debug)]
pub enum PollStep {
    /// Keep polling after the interval.
    Pending,
    /// Keep polling after the interval plus 5 s, permanently.
    SlowDown,
    /// The flow is over.
    Done(Result<TokenSet, MicrosoftError>),
}

/// Who signed in, from the id_token or Graph.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Identity {
    /// `tid`.
    pub tenant_id: Option<String>,
    /// `oid` (or Graph `id`).
    pub object_id: Option<String>,
    /// `preferred_username` (or Graph `mail` / `userPrincipalName`).
    pub username: Option<String>,
    /// `name` (or Graph `displayName`).
    pub display_name: Option<String>,
}

/// HTTP client for the identity platform and Graph.
#[derive(Clone, Debug)]
pub struct MicrosoftClient {
    http: reqwest::Client,
    settings: MicrosoftSettings,
}

#[derive(Deserialize)]
struct DeviceCodeBody {
    device_code: String,
    user_code: String,
    #[serde(alias = "verification_url")]
    verification_uri: String,
    #[serde(deserialize_with = "number_or_string")]
    expires_in: u64,
    #[serde(default, deserialize_with = "optional_number_or_string")]
    interval: Option<u64>,
    #[serde(default)]
    message: String,
}

#[derive(Deserialize)]
struct TokenBody {
    access_token: String,
    #[serde(default)]
    token_type: String,
    #[serde(deserialize_with = "number_or_string")]
    expires_in: u64,
    #[serde(default)]
    scope: String,
    #[serde(default)]
    refresh_token: Option<String>,
    #[serde(default)]
    id_token: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GraphUser {
    id: Option<String>,
    display_name: Option<String>,
    user_principal_name: Option<String>,
    mail: Option<String>,
}

#[derive(Deserialize)]
struct IdClaims {
    tid: Option<String>,
    oid: Option<String>,
    preferred_username: Option<String>,
    name: Option<String>,
}

impl MicrosoftClient {
    /// Builds the one HTTP client: redirects off (a token endpoint never redirects, and following
    /// one could leak a request elsewhere), connect and total timeouts set.
    ///
    /// # Errors
    /// Fails only if the TLS backend cannot be initialised.
    pub fn new(settings: MicrosoftSettings) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(5).min(settings.request_timeout))
            .timeout(settings.request_timeout)
            .user_agent(concat!("linkbot/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self { http, settings })
    }

    /// The scopes linking asks for, space-separated.
    pub fn link_scopes(&self) -> String {
        self.settings.scopes.join(" ")
    }

    fn endpoint(&self, leaf: &str) -> String {
        let base = self.settings.authority.as_str().trim_end_matches('/');
        format!("{base}/{}/oauth2/v2.0/{leaf}", self.settings.tenant)
    }

    /// Starts a device flow (RFC 8628 §3.1).
    ///
    /// # Errors
    /// Any classified failure; `Transient` for network trouble.
    pub async fn request_device_code(&self) -> Result<DeviceAuthorization, MicrosoftError> {
        let scope = self.link_scopes();
        let form = [
            ("client_id", self.settings.client_id.as_str()),
            ("scope", scope.as_str()),
        ];
        let body: DeviceCodeBody = self
            .post_form(
                &self.endpoint("devicecode"),
                &form,
                Grant::DeviceAuthorization,
            )
            .await
            .map_err(|c| failure(c, "unexpected_pending"))?;
        Ok(DeviceAuthorization {
            device_code: Secret::new(body.device_code),
            user_code: body.user_code,
            verification_uri: body.verification_uri,
            expires_in: Duration::from_secs(body.expires_in),
            interval: Duration::from_secs(
                body.interval
                    .filter(|i| *i > 0)
                    .unwrap_or(DEFAULT_INTERVAL_SECS),
            ),
            message: body.message,
        })
    }

    /// Polls the token endpoint once for a device code (RFC 8628 §3.4).
    pub async fn poll_device_code(&self, device_code: &Secret) -> PollStep {
        let form = [
            ("grant_type", DEVICE_CODE_GRANT),
            ("client_id", self.settings.client_id.as_str()),
            ("device_code", device_code.expose()),
        ];
        match self
            .post_form::<TokenBody>(&self.endpoint("token"), &form, Grant::DevicePoll)
            .await
        {
            Ok(body) => PollStep::Done(token_set(body)),
            Err(Classified::Pending) => PollStep::Pending,
            Err(Classified::SlowDown) => PollStep::SlowDown,
            Err(Classified::Failed(err)) => PollStep::Done(Err(err)),
        }
    }

    /// Redeems a refresh token for `scope` (reference §5). `offline_access` is always added so
    /// a rotated refresh token comes back.
    ///
    /// # Errors
    /// Any classified failure; `RelinkRequired` when the grant is gone for good.
    pub async fn refresh(
        &self,
        refresh_token: &Secret,
        scope: &str,
    ) -> Result<TokenSet, MicrosoftError> {
        let mut scopes: Vec<&str> = scope.split_whitespace().collect();
        if !scopes
            .iter()
            .any(|s| s.eq_ignore_ascii_case("offline_access"))
        {
            scopes.push("offline_access");
        }
        let scope = scopes.join(" ");
        let form = [
            ("grant_type", "refresh_token"),
            ("client_id", self.settings.client_id.as_str()),
            ("refresh_token", refresh_token.expose()),
            ("scope", scope.as_str()),
        ];
        let body = self
            .post_form::<TokenBody>(&self.endpoint("token"), &form, Grant::Refresh)
            .await
            .map_err(|c| failure(c, "unexpected_pending"))?;
        token_set(body)
    }

    /// `GET /v1.0/me` with the access token.
    ///
    /// # Errors
    /// `Rejected` for a refused token, `Transient` for server trouble.
    pub async fn me(&self, access_token: &Secret) -> Result<Identity, MicrosoftError> {
        let url = format!(
            "{}/v1.0/me",
            self.settings.graph_base.as_str().trim_end_matches('/')
        );
        let response = self
            .http
            .get(url)
            .bearer_auth(access_token.expose())
            .send()
            .await
            .map_err(transport_error)?;
        let status = response.status().as_u16();
        let retry_after = retry_after(response.headers());
        let bytes = response.bytes().await.map_err(transport_error)?;
        if status == 429 || status >= 500 {
            return Err(MicrosoftError::Transient {
                reason: format!("graph_http_{status}"),
                retry_after,
            });
        }
        if status != 200 {
            return Err(MicrosoftError::Rejected {
                error: format!("graph_http_{status}"),
                code: None,
            });
        }
        let user: GraphUser =
            serde_json::from_slice(&bytes).map_err(|_| MicrosoftError::Transient {
                reason: "graph_malformed".into(),
                retry_after: None,
            })?;
        Ok(Identity {
            tenant_id: None,
            object_id: user.id,
            username: user.mail.or(user.user_principal_name),
            display_name: user.display_name,
        })
    }

    async fn post_form<T: DeserializeOwned>(
        &self,
        url: &str,
        form: &[(&str, &str)],
        grant: Grant,
    ) -> Result<T, Classified> {
        let response = self
            .http
            .post(url)
            .form(form)
            .send()
            .await
            .map_err(|err| Classified::Failed(transport_error(err)))?;
        let status = response.status().as_u16();
        let retry_after = retry_after(response.headers());
        let bytes = response
            .bytes()
            .await
            .map_err(|err| Classified::Failed(transport_error(err)))?;
        let json: Option<serde_json::Value> = serde_json::from_slice(&bytes).ok();
        // An `error` key makes the answer an error whatever the status (reference §2).
        let error_body = json
            .as_ref()
            .filter(|v| v.get("error").is_some())
            .and_then(|v| ErrorBody::deserialize(v).ok());
        if status != 200 || error_body.is_some() {
            let outcome = classify(status, error_body.as_ref(), retry_after, grant);
            if let Some(body) = &error_body {
                tracing::debug!(status, error = %body.error, aadsts = ?body.code(), "microsoft answered with an error");
            }
            return Err(outcome);
        }
        json.and_then(|v| T::deserialize(v).ok()).ok_or_else(|| {
            Classified::Failed(MicrosoftError::Transient {
                reason: "malformed_body".into(),
                retry_after: None,
            })
        })
    }
}

fn failure(classified: Classified, pending_reason: &str) -> MicrosoftError {
    match classified {
        Classified::Failed(err) => err,
        // Pending and slow_down make no sense outside polling; treat them as a server hiccup.
        Classified::Pending | Classified::SlowDown => MicrosoftError::Transient {
            reason: pending_reason.to_owned(),
            retry_after: None,
        },
    }
}

fn token_set(body: TokenBody) -> Result<TokenSet, MicrosoftError> {
    // `bearer` in lower case was observed (reference §4); anything else is unusable.
    if !body.token_type.is_empty() && !body.token_type.eq_ignore_ascii_case("bearer") {
        return Err(MicrosoftError::Rejected {
            error: "unsupported_token_type".into(),
            code: None,
        });
    }
    Ok(TokenSet {
        access_token: Secret::new(body.access_token),
        expires_in: Duration::from_secs(body.expires_in),
        scope: body.scope,
        refresh_token: body
            .refresh_token
            .filter(|t| !t.is_empty())
            .map(Secret::new),
        id_token: body.id_token.filter(|t| !t.is_empty()).map(Secret::new),
    })
}

fn transport_error(err: reqwest::Error) -> MicrosoftError {
    let reason = if err.is_timeout() {
        "timeout"
    } else if err.is_connect() {
        "connect"
    } else {
        "transport"
    };
    MicrosoftError::Transient {
        reason: reason.into(),
        retry_after: None,
    }
}

fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let text = headers.get(RETRY_AFTER)?.to_str().ok()?;
    text.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// Reads the account claims from an id_token's payload. Public clients receive the id_token
/// straight from the token endpoint over TLS, so the signature need not be checked (reference
/// §4); the access token is never decoded.
pub fn identity_from_id_token(id_token: &Secret) -> Option<Identity> {
    let payload = id_token.expose().split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    let claims: IdClaims = serde_json::from_slice(&bytes).ok()?;
    Some(Identity {
        tenant_id: claims.tid,
        object_id: claims.oid,
        username: claims.preferred_username,
        display_name: claims.name,
    })
}

fn number_or_string<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Number {
        Int(u64),
        Text(String),
    }
    match Number::deserialize(deserializer)? {
        Number::Int(n) => Ok(n),
        Number::Text(text) => text.trim().parse().map_err(serde::de::Error::custom),
    }
}

fn optional_number_or_string<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<u64>, D::Error> {
    number_or_string(deserializer).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(claims: &serde_json::Value) -> Secret {
        let part = |v: &serde_json::Value| URL_SAFE_NO_PAD.encode(v.to_string());
        Secret::new(format!(
            "{}.{}.sig",
            part(&serde_json::json!({"alg": "RS256"})),
            part(claims)
        ))
    }

    #[test]
    fn the_account_is_read_from_the_id_token() {
        let token = jwt(&serde_json::json!({
            "tid": "t-1", "oid": "o-1", "preferred_username": "ada@contoso.example", "name": "Ada"
        }));

        let identity = identity_from_id_token(&token).unwrap();

        assert_eq!(identity.tenant_id.as_deref(), Some("t-1"));
        assert_eq!(identity.object_id.as_deref(), Some("o-1"));
        assert_eq!(identity.username.as_deref(), Some("ada@contoso.example"));
        assert_eq!(identity.display_name.as_deref(), Some("Ada"));
    }

    #[test]
    fn opaque_tokens_yield_no_identity() {
        assert_eq!(identity_from_id_token(&Secret::new("EwAopaque")), None);
        assert_eq!(identity_from_id_token(&Secret::new("a.!!!.c")), None);
    }

    #[test]
    fn numbers_may_arrive_as_strings() {
        let body: DeviceCodeBody = serde_json::from_value(serde_json::json!({
            "device_code": "d", "user_code": "U", "verification_url": "https://x",
            "expires_in": "900", "interval": "5"
        }))
        .unwrap();
        assert_eq!((body.expires_in, body.interval), (900, Some(5)));
    }

    #[test]
    fn a_lower_case_bearer_is_accepted_and_other_types_are_not() {
        let body = |token_type: &str| TokenBody {
            access_token: "a".into(),
            token_type: token_type.into(),
            expires_in: 1,
            scope: String::new(),
            refresh_token: None,
            id_token: None,
        };
        assert!(token_set(body("bearer")).is_ok());
        assert!(token_set(body("pop")).is_err());
    }
}
