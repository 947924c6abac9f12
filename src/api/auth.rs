//! API keys on requests: the [`Caller`] extractor checks `Authorization: Bearer <key>` by its
//! SHA-256 against the stored hashes; [`Admin`] also demands the admin role. Keys found valid
//! are remembered with the store's revocation stamp, which every revocation changes (also
//! one made by `linkbot api-key revoke` in another process), so a revoked key stops working
//! at once while a valid one costs no query.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use chrono::Utc;
use subtle::ConstantTimeEq as _;

use crate::api::{ApiError, ApiState};
use crate::domain::Secret;
use crate::store::api_keys::{self, RevocationStamp, Role};

/// Longer `Authorization` values are rejected without hashing; real keys are about 47 bytes.
const MAX_KEY_LEN: usize = 256;

/// A remembered key is read again after this long even if no revocation was signalled, which
/// bounds the effect of a change made behind linkbot's back (by hand in SQL).
const RECHECK_AFTER: Duration = Duration::from_secs(5);

/// Keys recently found valid, by the hex SHA-256 of the key.
#[derive(Default)]
pub struct KeyCache {
    checked: Mutex<HashMap<String, (Caller, RevocationStamp, Instant)>>,
}

impl KeyCache {
    fn get(&self, key_hash: &str, stamp: &RevocationStamp) -> Option<Caller> {
        let checked = self.checked.lock().expect("key cache is never poisoned");
        checked
            .get(key_hash)
            .filter(|(_, seen, at)| seen == stamp && at.elapsed() < RECHECK_AFTER)
            .map(|(caller, _, _)| caller.clone())
    }

    fn put(&self, key_hash: String, caller: Caller, stamp: RevocationStamp) {
        let mut checked = self.checked.lock().expect("key cache is never poisoned");
        // Only valid keys are kept, so the map stays as small as the key table, but drop
        // entries of earlier stamps so revoked keys do not linger.
        checked.retain(|_, (_, seen, _)| *seen == stamp);
        checked.insert(key_hash, (caller, stamp, Instant::now()));
    }
}

/// The key a request was made with.
#[derive(Clone, Debug)]
pub struct Caller {
    /// The key's name, used as the audit actor `key:NAME`.
    pub name: String,
    /// What the key may do.
    pub role: Role,
}

impl Caller {
    /// The audit actor for this key.
    pub fn actor(&self) -> String {
        format!("key:{}", self.name)
    }
}

/// A caller holding an admin key.
#[derive(Clone, Debug)]
pub struct Admin(pub Caller);

impl FromRequestParts<ApiState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, ApiError> {
        let key = bearer_key(parts)?;
        let presented = api_keys::hash_key(&key);
        // Taken before the lookup, so a revocation racing it changes the stamp we store.
        let stamp = api_keys::revocation_stamp(&state.app.store);
        let caller = match state.keys.get(&presented, &stamp) {
            Some(caller) => caller,
            None => {
                let (found, stored) = api_keys::find_by_hash(&state.app.store, &presented)
                    .await?
                    .ok_or(ApiError::BadKey)?;
                // Matching on the hash leaks timing about a hash only, never the key; the
                // constant-time comparison keeps even that independent of the database.
                if !bool::from(stored.as_bytes().ct_eq(presented.as_bytes())) {
                    return Err(ApiError::BadKey);
                }
                let caller = Self {
                    name: found.name,
                    role: found.role,
                };
                state.keys.put(presented, caller.clone(), stamp);
                caller
            }
        };
        state
            .key_use
            .note(&state.recorder, &caller.name, Utc::now());
        Ok(caller)
    }
}

impl FromRequestParts<ApiState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, ApiError> {
        let caller = Caller::from_request_parts(parts, state).await?;
        match caller.role {
            Role::Admin => Ok(Self(caller)),
            Role::Reader => Err(ApiError::Forbidden),
        }
    }
}

/// The key from `Authorization: Bearer <key>` (scheme case-insensitive, RFC 7235 §2.1).
fn bearer_key(parts: &Parts) -> Result<Secret, ApiError> {
    let header = parts
        .headers
        .get(AUTHORIZATION)
        .ok_or(ApiError::MissingKey)?;
    let text = header.to_str().map_err(|_| ApiError::BadKey)?;
    let (scheme, key) = text.split_once(' ').ok_or(ApiError::MissingKey)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(ApiError::MissingKey);
    }
    let key = key.trim();
    if key.is_empty() {
        return Err(ApiError::MissingKey);
    }
    if key.len() > MAX_KEY_LEN {
        return Err(ApiError::BadKey);
    }
    Ok(Secret::new(key))
}

#[cfg(test)]
mod tests {
    use axum::http::Request;

    use super::*;

    fn parts(authorization: Option<&str>) -> Parts {
        let mut request = Request::builder().uri("/v1/users");
        if let Some(value) = authorization {
            request = request.header(AUTHORIZATION, value);
        }
        request.body(()).unwrap().into_parts().0
    }

    #[test]
    fn bearer_keys_are_read_with_any_scheme_case() {
        for header in ["Bearer lbk_abc", "bearer lbk_abc", "BEARER  lbk_abc "] {
            assert_eq!(
                bearer_key(&parts(Some(header))).unwrap().expose(),
                "lbk_abc"
            );
        }
    }

    #[test]
    fn missing_or_foreign_credentials_are_missing_keys() {
        for header in [
            None,
            Some("Basic dXNlcjpwYXNz"),
            Some("Bearer "),
            Some("lbk_abc"),
        ] {
            assert!(
                matches!(bearer_key(&parts(header)), Err(ApiError::MissingKey)),
                "{header:?}"
            );
        }
    }

    #[test]
    fn oversized_keys_are_refused_without_hashing() {
        let header = format!("Bearer {}", "x".repeat(MAX_KEY_LEN + 1));

        assert!(matches!(
            bearer_key(&parts(Some(&header))),
            Err(ApiError::BadKey)
        ));
    }
}
