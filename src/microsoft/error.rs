//! Classification of every answer of the token and device-code endpoints into the outcomes the
//! core acts on. Branches use `error` (and the AADSTS number only where the reference names a
//! specific code); `error_description` is never parsed beyond its leading AADSTS number.

use std::time::Duration;

use serde::Deserialize;

/// A failed call to Microsoft, already sorted by what the caller should do about it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MicrosoftError {
    /// The user declined at the sign-in page (`authorization_declined`, `access_denied`).
    #[error("the user declined the sign-in")]
    Declined,
    /// The device code expired (`expired_token`, `code_expired`).
    #[error("the device code expired")]
    Expired,
    /// Microsoft did not recognise the device code (`bad_verification_code`).
    #[error("the device code was not recognised")]
    BadVerificationCode,
    /// A Conditional Access policy blocked the sign-in (AADSTS53003).
    #[error("the tenant's access policy blocked the sign-in")]
    PolicyBlocked,
    /// The grant is gone for good (revoked, expired, consent or MFA needed): the user must sign
    /// in again.
    #[error("the grant was refused ({error}, AADSTS{code:?}, suberror {suberror:?})")]
    RelinkRequired {
        /// OAuth `error`.
        error: String,
        /// First AADSTS number, if any.
        code: Option<u32>,
        /// `suberror`, if any.
        suberror: Option<String>,
    },
    /// The app registration or configuration is wrong; an operator must act.
    #[error("the app registration was refused ({error}, AADSTS{code:?})")]
    Operator {
        /// OAuth `error`.
        error: String,
        /// First AADSTS number, if any.
        code: Option<u32>,
    },
    /// Another error that ends a device flow (for example `invalid_grant` while polling).
    #[error("the request was refused ({error}, AADSTS{code:?})")]
    Rejected {
        /// OAuth `error`.
        error: String,
        /// First AADSTS number, if any.
        code: Option<u32>,
    },
    /// Worth retrying later: 5xx, 429, timeouts, unreadable bodies, throttling (AADSTS50196).
    #[error("Microsoft is unavailable ({reason})")]
    Transient {
        /// Short, secret-free description (`http_503`, `timeout`, `AADSTS50196`).
        reason: String,
        /// Wait at least this long, from `Retry-After`.
        retry_after: Option<Duration>,
    },
}

impl MicrosoftError {
    /// A short code for logs, the database and metrics (no secrets, no personal data).
    pub fn code(&self) -> String {
        let with_code = |error: &str, code: &Option<u32>| match code {
            Some(code) => format!("{error}:AADSTS{code}"),
            None => error.to_owned(),
        };
        match self {
            Self::Declined => "authorization_declined".into(),
            Self::Expired => "expired_token".into(),
            Self::BadVerificationCode => "bad_verification_code".into(),
            Self::PolicyBlocked => "AADSTS53003".into(),
            Self::RelinkRequired { error, code, .. }
            | Self::Operator { error, code }
            | Self::Rejected { error, code } => with_code(error, code),
            Self::Transient { reason, .. } => reason.clone(),
        }
    }

    /// Whether retrying later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Transient { .. })
    }
}

/// Which request an answer belongs to; the same `error` means different things in each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Grant {
    /// `/devicecode`.
    DeviceAuthorization,
    /// A device-code poll of `/token`.
    DevicePoll,
    /// A refresh-token grant.
    Refresh,
}

/// What an error answer means.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Classified {
    /// `authorization_pending`: poll again after the interval.
    Pending,
    /// `slow_down`: poll again after the interval plus 5 s.
    SlowDown,
    /// Anything else.
    Failed(MicrosoftError),
}

/// The standard error body (reference §3). Unknown fields are ignored.
#[derive(Debug, Deserialize)]
pub(crate) struct ErrorBody {
    pub error: String,
    #[serde(default)]
    pub error_description: Option<String>,
    #[serde(default)]
    pub error_codes: Vec<u32>,
    #[serde(default)]
    pub suberror: Option<String>,
}

impl ErrorBody {
    /// The first AADSTS number, from `error_codes` or else the description's prefix.
    pub fn code(&self) -> Option<u32> {
        self.error_codes.first().copied().or_else(|| {
            let description = self.error_description.as_deref()?;
            let digits: String = description
                .strip_prefix("AADSTS")?
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            digits.parse().ok()
        })
    }

    fn has_code(&self, wanted: u32) -> bool {
        self.error_codes.contains(&wanted) || self.code() == Some(wanted)
    }
}

/// AADSTS numbers the reference lists as retryable.
const TRANSIENT_CODES: &[u32] = &[50196, 50033, 90024, 90033, 90006, 90090, 50087, 90055];

/// Classifies a non-success answer: an HTTP error, or any body holding an `error` key (which
/// counts as an error even on HTTP 200).
pub(crate) fn classify(
    status: u16,
    body: Option<&ErrorBody>,
    retry_after: Option<Duration>,
    grant: Grant,
) -> Classified {
    let transient = |reason: String| {
        Classified::Failed(MicrosoftError::Transient {
            reason,
            retry_after,
        })
    };
    let Some(body) = body else {
        return transient(format!("http_{status}"));
    };
    let code = body.code();
    if status == 429 || status >= 500 {
        return transient(format!("http_{status}"));
    }
    if let Some(code) = TRANSIENT_CODES.iter().find(|c| body.has_code(**c)) {
        return transient(format!("AADSTS{code}"));
    }
    if body.has_code(53003) {
        return Classified::Failed(MicrosoftError::PolicyBlocked);
    }
    let error = body.error.as_str();
    let failed = Classified::Failed;
    match error {
        "authorization_pending" => Classified::Pending,
        "slow_down" => Classified::SlowDown,
        "authorization_declined" | "access_denied" => failed(MicrosoftError::Declined),
        "expired_token" | "code_expired" => failed(MicrosoftError::Expired),
        "bad_verification_code" => failed(MicrosoftError::BadVerificationCode),
        "temporarily_unavailable" | "server_error" => transient(error.to_owned()),
        "invalid_client"
        | "unauthorized_client"
        | "invalid_request"
        | "invalid_scope"
        | "invalid_tenant"
        | "unsupported_grant_type" => failed(MicrosoftError::Operator {
            error: error.to_owned(),
            code,
        }),
        "invalid_grant" | "interaction_required" | "consent_required"
            if grant == Grant::Refresh =>
        {
            failed(MicrosoftError::RelinkRequired {
                error: error.to_owned(),
                code,
                suberror: body.suberror.clone(),
            })
        }
        _ => failed(MicrosoftError::Rejected {
            error: error.to_owned(),
            code,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(error: &str, codes: &[u32]) -> ErrorBody {
        ErrorBody {
            error: error.into(),
            error_description: codes
                .first()
                .map(|c| format!("AADSTS{c}: something.\r\nTrace ID: x")),
            error_codes: codes.to_vec(),
            suberror: None,
        }
    }

    fn poll(error: &str, codes: &[u32]) -> Classified {
        classify(400, Some(&body(error, codes)), None, Grant::DevicePoll)
    }

    fn refresh(error: &str, codes: &[u32]) -> Classified {
        classify(400, Some(&body(error, codes)), None, Grant::Refresh)
    }

    #[test]
    fn polling_answers_are_sorted_as_rfc_8628_says() {
        assert_eq!(poll("authorization_pending", &[70016]), Classified::Pending);
        assert_eq!(poll("slow_down", &[]), Classified::SlowDown);
        assert_eq!(
            poll("authorization_declined", &[]),
            Classified::Failed(MicrosoftError::Declined)
        );
        assert_eq!(
            poll("access_denied", &[]),
            Classified::Failed(MicrosoftError::Declined)
        );
        assert_eq!(
            poll("expired_token", &[70020]),
            Classified::Failed(MicrosoftError::Expired)
        );
        assert_eq!(
            poll("code_expired", &[]),
            Classified::Failed(MicrosoftError::Expired)
        );
        assert_eq!(
            poll("bad_verification_code", &[70018]),
            Classified::Failed(MicrosoftError::BadVerificationCode)
        );
        assert!(matches!(
            poll("invalid_grant", &[90120]),
            Classified::Failed(MicrosoftError::Rejected {
                code: Some(90120),
                ..
            })
        ));
    }

    #[test]
    fn app_registration_problems_are_the_operators() {
        for (error, code) in [
            ("invalid_client", 7000218),
            ("unauthorized_client", 700016),
            ("invalid_request", 900144),
            ("invalid_tenant", 90002),
            ("invalid_scope", 70011),
        ] {
            let outcome = classify(401, Some(&body(error, &[code])), None, Grant::Refresh);
            assert!(
                matches!(outcome, Classified::Failed(MicrosoftError::Operator { .. })),
                "{error}: {outcome:?}"
            );
        }
    }

    #[test]
    fn a_refused_refresh_needs_a_new_sign_in_unless_it_is_throttling() {
        for code in [70008, 700082, 50173, 50076, 65001] {
            assert!(matches!(
                refresh("invalid_grant", &[code]),
                Classified::Failed(MicrosoftError::RelinkRequired { .. })
            ));
        }
        assert!(matches!(
            refresh("interaction_required", &[70043]),
            Classified::Failed(MicrosoftError::RelinkRequired { .. })
        ));
        assert_eq!(
            refresh("invalid_grant", &[50196]),
            Classified::Failed(MicrosoftError::Transient {
                reason: "AADSTS50196".into(),
                retry_after: None
            })
        );
    }

    #[test]
    fn the_aadsts_number_is_read_from_the_description_when_codes_are_missing() {
        let body = ErrorBody {
            error: "invalid_grant".into(),
            error_description: Some("AADSTS50196: The server terminated an operation.".into()),
            error_codes: vec![],
            suberror: None,
        };
        assert!(matches!(
            classify(400, Some(&body), None, Grant::Refresh),
            Classified::Failed(MicrosoftError::Transient { .. })
        ));
    }

    #[test]
    fn server_trouble_is_transient_and_keeps_retry_after() {
        let wait = Some(Duration::from_secs(7));
        assert_eq!(
            classify(429, None, wait, Grant::Refresh),
            Classified::Failed(MicrosoftError::Transient {
                reason: "http_429".into(),
                retry_after: wait
            })
        );
        assert!(matches!(
            classify(
                503,
                Some(&body("temporarily_unavailable", &[])),
                None,
                Grant::DevicePoll
            ),
            Classified::Failed(MicrosoftError::Transient { .. })
        ));
        assert!(matches!(
            classify(200, None, None, Grant::DevicePoll),
            Classified::Failed(MicrosoftError::Transient { .. })
        ));
    }

    #[test]
    fn conditional_access_blocks_are_named() {
        assert_eq!(
            poll("invalid_grant", &[53003]),
            Classified::Failed(MicrosoftError::PolicyBlocked)
        );
    }
}
