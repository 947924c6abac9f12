//! `FakeMicrosoft`: an in-process stand-in for the Microsoft identity platform v2.0 (device code
//! flow, token endpoint, refresh grant) and for Graph `GET /v1.0/me`, served by axum on
//! `127.0.0.1:0`. Bodies, headers and token shapes follow `shared/reference/microsoft-identity.md`;
//! behaviour Microsoft leaves unconfirmed is a switch or a scripted [`Reply`]. Tests approve or
//! decline codes, script failures and inspect every request; nothing here leaves the machine.
#![expect(dead_code, reason = "each test binary uses only part of the scripting API")]

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use axum::body::{Body, to_bytes};
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::{Extension, Router};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use chrono::Utc;
use rand::{Rng as _, RngCore as _};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Tenant id Microsoft gives every personal (MSA) account.
pub const MSA_TENANT_ID: &str = "9188040d-6c67-4c5b-b112-36a304b66dad";

/// Tenant id of the fictitious work tenant that [`FakeUser::entra`] users belong to.
pub const CONTOSO_TENANT_ID: &str = "5f3c9a7e-2b41-4d8e-9c06-7a1b3e5d2f84";

const DEFAULT_CLIENT_ID: &str = "00000000-0000-0000-0000-00000000c1d0";
const DEVICE_CODE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";
const TOKEN_PATH: &str = "/oauth2/v2.0/token";
const VERIFICATION_URI: &str = "https://microsoft.com/devicelogin";
const GRAPH_PREFIX: &str = "https://graph.microsoft.com/";
const GRAPH_ME_CONTEXT: &str = "https://graph.microsoft.com/v1.0/$metadata#users/$entity";
const GRAPH_WWW_AUTHENTICATE: &str = concat!(
    "Bearer realm=\"\", ",
    "authorization_uri=\"https://login.microsoftonline.com/common/oauth2/authorize\", ",
    "client_id=\"00000003-0000-0000-c000-000000000000\"",
);
const JSON_UTF8: &str = "application/json; charset=utf-8";
const FORM: &str = "application/x-www-form-urlencoded";
/// Scopes assumed when a scripted success has no device code or grant to take them from.
const DEFAULT_SCOPES: &str = "User.Read openid profile offline_access";
/// A truncated token response: valid UTF-8, labelled JSON, but not parseable as JSON.
const GARBAGE_BODY: &str = "{\"token_type\":\"Bearer\",\"scope\":\"User.Read\",\"expires_in\":35";
const MAX_BODY_BYTES: usize = 64 * 1024;
const ID_TOKEN_LIFETIME_SECS: i64 = 3600;
/// Slack for strict-interval mode, so a client pacing polls with a ticker is not punished for
/// a few milliseconds of scheduling jitter.
const EARLY_POLL_TOLERANCE: Duration = Duration::from_millis(20);

/// A scripted handle on the fake identity platform and Graph; clones share one server.
#[derive(Clone)]
pub struct FakeMicrosoft {
    inner: Arc<Inner>,
}

struct Inner {
    addr: SocketAddr,
    state: Mutex<FakeState>,
    /// Bumped after each request's answer is decided, so waiters re-check their condition.
    answered: watch::Sender<usize>,
}

/// A Microsoft account that a test signs in with [`FakeMicrosoft::approve`].
#[derive(Clone, Debug)]
pub struct FakeUser {
    /// `tid`: the tenant GUID ([`MSA_TENANT_ID`] for personal accounts).
    pub tenant_id: String,
    /// `oid`: the immutable object id in that tenant; the bot keys accounts by (`tid`, `oid`).
    pub object_id: String,
    /// `preferred_username` and Graph `userPrincipalName`.
    pub username: String,
    /// `name` and Graph `displayName`.
    pub display_name: String,
    /// Whether this is a personal account, which changes the Graph `/me` shape.
    pub msa: bool,
}

/// One scripted answer that overrides the normal behaviour for the next matching request.
///
/// Queues are per endpoint ([`FakeMicrosoft::script_poll`] and friends). OAuth error variants
/// render the full section-3 error body at HTTP 400; on Graph they render Graph's error shape.
#[derive(Clone, Debug)]
pub enum Reply {
    /// `authorization_pending` (AADSTS70016).
    Pending,
    /// `slow_down`; counts towards the strict-interval penalty of that device code.
    SlowDown,
    /// `authorization_declined` (Microsoft's word for RFC 8628's `access_denied`).
    Declined,
    /// `access_denied` as RFC 8628 spells it; on Graph, 403 `accessDenied`.
    AccessDenied,
    /// Poll: `expired_token` (AADSTS70020). Refresh: `invalid_grant` AADSTS700082 with suberror
    /// `bad_token` (refresh token inactive for 90 days). Graph: 401, token expired.
    Expired,
    /// `bad_verification_code` (AADSTS70018).
    BadVerificationCode,
    /// Any error body. The first code picks the canned description; on Graph, `error` becomes
    /// `error.code` and `codes`/`suberror` are ignored. `status: 200` gives an error on HTTP 200.
    Error {
        status: u16,
        error: String,
        codes: Vec<u32>,
        suberror: Option<String>,
    },
    /// This status with a small HTML body, as a proxy or load balancer would send.
    Status(u16),
    /// 429 with a `Retry-After` header and the plain-text body "Too Many Requests".
    TooManyRequests { retry_after: u64 },
    /// 200 labelled `application/json` whose body is truncated JSON.
    Garbage,
    /// The endpoint's typical error at HTTP 200: devicecode `unauthorized_client`, poll
    /// `authorization_pending`, refresh `invalid_grant` AADSTS50173, Graph
    /// `InvalidAuthenticationToken`.
    ErrorOn200,
    /// Never answer: the request stays open until the client gives up.
    Hang,
    /// A token success without `refresh_token`. A poll redeems the device code for its approved
    /// user (or a throwaway one); a refresh mints for the grant's user. Not valid on devicecode
    /// or Graph.
    SuccessWithoutRefreshToken,
}

/// One request as the fake received it.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    /// When the request reached the fake, before its body was read.
    pub at: Instant,
    /// HTTP method, upper case.
    pub method: String,
    /// Path without the query, e.g. `/common/oauth2/v2.0/token`.
    pub path: String,
    /// Raw query string, if any (e.g. `mkt=de-DE`).
    pub query: Option<String>,
    /// Headers in arrival order, names lower case.
    pub headers: Vec<(String, String)>,
    /// The form body. Empty unless sent as `application/x-www-form-urlencoded`, since that is the
    /// only encoding the real endpoints read.
    pub form: BTreeMap<String, String>,
}

impl RecordedRequest {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    fn is_token_request(&self, grant_type: &str) -> bool {
        self.path.ends_with(TOKEN_PATH)
            && self.form.get("grant_type").is_some_and(|value| value == grant_type)
    }
}

impl FakeUser {
    /// A work account in [`CONTOSO_TENANT_ID`] with a random object id and UPN
    /// `name@contoso.example`.
    pub fn entra(name: &str) -> Self {
        Self {
            tenant_id: CONTOSO_TENANT_ID.to_owned(),
            object_id: random_guid(),
            username: format!("{}@contoso.example", login_name(name)),
            display_name: display_name(name),
            msa: false,
        }
    }

    /// A personal account: tenant [`MSA_TENANT_ID`], an `oid` of the observed
    /// `00000000-0000-0000-xxxx-xxxxxxxxxxxx` form, a 16-hex Graph id and no Graph `mail`.
    pub fn msa(name: &str) -> Self {
        let puid = random_hex(8);
        Self {
            tenant_id: MSA_TENANT_ID.to_owned(),
            object_id: format!("00000000-0000-0000-{}-{}", &puid[..4], &puid[4..]),
            username: format!("{}@outlook.example", login_name(name)),
            display_name: display_name(name),
            msa: true,
        }
    }

    /// The `id` Graph `/me` reports: the object id for work accounts, the last 16 hex digits of
    /// it for personal ones (the real relationship is unconfirmed; the fake keeps them tied).
    pub fn graph_id(&self) -> String {
        if !self.msa {
            return self.object_id.clone();
        }
        let hex: Vec<char> = self.object_id.chars().filter(|c| *c != '-').collect();
        hex[hex.len().saturating_sub(16)..].iter().collect()
    }

    fn same_account(&self, other: &FakeUser) -> bool {
        self.tenant_id == other.tenant_id && self.object_id == other.object_id
    }
}

impl FakeMicrosoft {
    /// Binds `127.0.0.1:0`, then spawns the server, so requests can be sent as soon as this
    /// returns. The expected client id is `00000000-0000-0000-0000-00000000c1d0`.
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("FakeMicrosoft can bind a port on 127.0.0.1");
        let addr = listener
            .local_addr()
            .expect("a bound listener has a local address");
        let fake = Self {
            inner: Arc::new(Inner {
                addr,
                state: Mutex::new(FakeState::new()),
                answered: watch::Sender::new(0),
            }),
        };
        let app = router(fake.clone());
        tokio::spawn(async move {
            axum::serve(listener, app)
                .await
                .expect("FakeMicrosoft server keeps running");
        });
        fake
    }

    /// The client id the fake accepts; any other gets `unauthorized_client` AADSTS700016.
    pub fn client_id(&self) -> String {
        self.lock().client_id.clone()
    }

    /// `http://127.0.0.1:PORT`, usable as both the authority host and the Graph base URL.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.inner.addr)
    }

    /// Sets `expires_in` and `interval` for device codes issued from now on (default 900 / 5).
    pub fn set_device_code_timing(&self, expires_in_secs: u64, interval_secs: u64) {
        let mut state = self.lock();
        state.settings.device_code_lifetime = expires_in_secs;
        state.settings.interval = interval_secs;
    }

    /// Sets `expires_in` of access tokens minted from now on (default 3599).
    pub fn set_access_token_lifetime(&self, secs: u64) {
        self.lock().settings.access_token_lifetime = secs;
    }

    /// When on, a poll arriving sooner than `interval` (plus 5 s per `slow_down` already sent for
    /// that code) after the previous poll of the same code gets `slow_down`. Off by default:
    /// Microsoft has never been observed to send `slow_down`.
    pub fn set_strict_interval(&self, on: bool) {
        self.lock().settings.strict_interval = on;
    }

    /// When on, a refresh token stops working once it has been redeemed (`invalid_grant`
    /// AADSTS70008). Off by default, as Microsoft keeps old refresh tokens valid.
    pub fn set_strict_rotation(&self, on: bool) {
        self.lock().settings.strict_rotation = on;
    }

    /// Makes `tenant` answer `invalid_tenant` AADSTS90002 on both endpoints.
    pub fn set_unknown_tenant(&self, tenant: &str) {
        let tenant = tenant.to_ascii_lowercase();
        self.lock().settings.unknown_tenants.insert(tenant);
    }

    /// Signs `user` in on the device code shown as `user_code`; the next poll succeeds.
    ///
    /// Panics if no such code was issued or it was already approved, declined or redeemed.
    pub fn approve(&self, user_code: &str, user: &FakeUser) {
        let outcome = self
            .lock()
            .settle_user_code(user_code, FlowStatus::Approved(user.clone()));
        if let Err(problem) = outcome {
            panic!("FakeMicrosoft::approve: {problem}");
        }
    }

    /// Declines the device code shown as `user_code`; the next poll gets
    /// `authorization_declined`.
    ///
    /// Panics if no such code was issued or it was already approved, declined or redeemed.
    pub fn decline(&self, user_code: &str) {
        let outcome = self.lock().settle_user_code(user_code, FlowStatus::Declined);
        if let Err(problem) = outcome {
            panic!("FakeMicrosoft::decline: {problem}");
        }
    }

    /// Queues answers for device-code polls, used before the normal state machine.
    pub fn script_poll(&self, replies: impl IntoIterator<Item = Reply>) {
        self.script(Endpoint::Poll, replies);
    }

    /// Queues answers for refresh-grant requests, used before normal refresh handling.
    pub fn script_refresh(&self, replies: impl IntoIterator<Item = Reply>) {
        self.script(Endpoint::Refresh, replies);
    }

    /// Queues answers for `/devicecode` requests.
    ///
    /// Panics on [`Reply::SuccessWithoutRefreshToken`], which means nothing there.
    pub fn script_device_code(&self, replies: impl IntoIterator<Item = Reply>) {
        self.script(Endpoint::DeviceCode, replies);
    }

    /// Queues answers for Graph `/me` requests.
    ///
    /// Panics on the device-flow-only variants (`Pending`, `SlowDown`, `Declined`,
    /// `BadVerificationCode`, `SuccessWithoutRefreshToken`).
    pub fn script_graph(&self, replies: impl IntoIterator<Item = Reply>) {
        self.script(Endpoint::Graph, replies);
    }

    /// Revokes every grant of `user`: their refresh tokens then fail with `invalid_grant`
    /// AADSTS50173. Access tokens already issued keep working until they expire, as without
    /// continuous access evaluation.
    pub fn revoke(&self, user: &FakeUser) {
        let mut state = self.lock();
        for grant in &mut state.grants {
            if grant.user.same_account(user) {
                grant.revoked = true;
            }
        }
    }

    /// Every request received, in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        let state = self.lock();
        state.requests.iter().map(|seen| seen.request.clone()).collect()
    }

    /// Token requests with the device-code grant, in arrival order.
    pub fn polls(&self) -> Vec<RecordedRequest> {
        self.requests_where(|request| request.is_token_request(DEVICE_CODE_GRANT))
    }

    /// Token requests with the refresh-token grant, in arrival order.
    pub fn refreshes(&self) -> Vec<RecordedRequest> {
        self.requests_where(|request| request.is_token_request("refresh_token"))
    }

    /// Every refresh token handed out, in issue order.
    pub fn issued_refresh_tokens(&self) -> Vec<String> {
        self.lock().issued.refresh_tokens.clone()
    }

    /// Every access token handed out, in issue order.
    pub fn issued_access_tokens(&self) -> Vec<String> {
        self.lock().issued.access_tokens.clone()
    }

    /// Every device code handed out, in issue order.
    pub fn issued_device_codes(&self) -> Vec<String> {
        self.lock().issued.device_codes.clone()
    }

    /// Every user code handed out, in issue order, for tests that skip reading the chat message.
    pub fn issued_user_codes(&self) -> Vec<String> {
        self.lock().issued.user_codes.clone()
    }

    /// Resolves once `n` device-code polls have been answered (their outcome decided, so a test
    /// acting next never races the handler). Wrap it in `tokio::time::timeout`.
    pub async fn wait_for_polls(&self, n: usize) {
        self.wait_until(|request| request.is_token_request(DEVICE_CODE_GRANT), n)
            .await;
    }

    /// Resolves once `n` requests whose path ends with `path_suffix` have been answered. Wrap it
    /// in `tokio::time::timeout`.
    pub async fn wait_for_requests(&self, path_suffix: &str, n: usize) {
        self.wait_until(|request| request.path.ends_with(path_suffix), n)
            .await;
    }

    fn lock(&self) -> MutexGuard<'_, FakeState> {
        // A panicking test thread must not turn every later call into a poison error.
        self.inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn script(&self, endpoint: Endpoint, replies: impl IntoIterator<Item = Reply>) {
        let replies: Vec<Reply> = replies.into_iter().collect();
        for reply in &replies {
            check_reply(reply, endpoint);
        }
        let mut state = self.lock();
        let queue = match endpoint {
            Endpoint::DeviceCode => &mut state.scripts.device_code,
            Endpoint::Poll => &mut state.scripts.poll,
            Endpoint::Refresh => &mut state.scripts.refresh,
            Endpoint::Graph => &mut state.scripts.graph,
        };
        queue.extend(replies);
    }

    fn requests_where(&self, keep: impl Fn(&RecordedRequest) -> bool) -> Vec<RecordedRequest> {
        let state = self.lock();
        let requests = state.requests.iter().map(|seen| &seen.request);
        requests.filter(|request| keep(request)).cloned().collect()
    }

    async fn wait_until(&self, matches: impl Fn(&RecordedRequest) -> bool, n: usize) {
        let mut answered = self.inner.answered.subscribe();
        let reached = |_: &usize| {
            let state = self.lock();
            let done = state.requests.iter().filter(|seen| seen.answered);
            done.filter(|seen| matches(&seen.request)).count() >= n
        };
        answered
            .wait_for(reached)
            .await
            .expect("the fake outlives the test that awaits it");
    }

    /// Records a new request; returns its index in `requests`.
    fn remember(&self, request: RecordedRequest) -> usize {
        let mut state = self.lock();
        state.requests.push(SeenEntry {
            request,
            answered: false,
        });
        state.requests.len() - 1
    }

    /// Decides the answer to request `seq` under the lock, then wakes waiters.
    fn process(&self, seq: usize, decide: impl FnOnce(&mut FakeState) -> Answer) -> Answer {
        let answer = {
            let mut state = self.lock();
            let answer = decide(&mut state);
            if let Some(seen) = state.requests.get_mut(seq) {
                seen.answered = true;
            }
            answer
        };
        self.inner.answered.send_modify(|count| *count += 1);
        answer
    }
}

impl fmt::Debug for FakeMicrosoft {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FakeMicrosoft")
            .field("base_url", &self.base_url())
            .finish_non_exhaustive()
    }
}

// --- HTTP surface ---------------------------------------------------------------------------

/// Which endpoint a scripted reply is for; Graph and the login endpoints speak different errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Endpoint {
    DeviceCode,
    Poll,
    Refresh,
    Graph,
}

/// Request-scoped handle the recording middleware hands to the endpoints.
#[derive(Clone)]
struct Seen {
    seq: usize,
    request: RecordedRequest,
}

fn router(fake: FakeMicrosoft) -> Router {
    // `any` plus a method check inside, so wrong methods are recorded too.
    Router::new()
        .route("/{tenant}/oauth2/v2.0/devicecode", any(device_code_endpoint))
        .route("/{tenant}/oauth2/v2.0/token", any(token_endpoint))
        .route("/v1.0/me", any(graph_me_endpoint))
        .fallback(unknown_path)
        .layer(middleware::from_fn_with_state(fake.clone(), record))
        .with_state(fake)
}

async fn record(State(fake): State<FakeMicrosoft>, request: Request, next: Next) -> Response {
    let at = Instant::now();
    let (parts, body) = request.into_parts();
    let Ok(bytes) = to_bytes(body, MAX_BODY_BYTES).await else {
        return StatusCode::PAYLOAD_TOO_LARGE.into_response();
    };
    let headers = parts.headers.iter().map(|(name, value)| {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        (name.as_str().to_owned(), value)
    });
    let recorded = RecordedRequest {
        at,
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().map(str::to_owned),
        headers: headers.collect(),
        form: parse_form(&parts.headers, &bytes),
    };
    let seq = fake.remember(recorded.clone());

    let mut request = Request::from_parts(parts, Body::from(bytes));
    request.extensions_mut().insert(Seen {
        seq,
        request: recorded,
    });
    next.run(request).await
}

fn parse_form(headers: &HeaderMap, body: &[u8]) -> BTreeMap<String, String> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    if !content_type.to_ascii_lowercase().starts_with(FORM) {
        return BTreeMap::new();
    }
    url::form_urlencoded::parse(body).into_owned().collect()
}

async fn device_code_endpoint(
    State(fake): State<FakeMicrosoft>,
    Path(tenant): Path<String>,
    Extension(seen): Extension<Seen>,
) -> Response {
    let request = &seen.request;
    let answer = fake.process(seen.seq, |state| {
        if request.method != Method::POST.as_str() {
            return Answer::Empty(StatusCode::METHOD_NOT_ALLOWED);
        }
        state.device_authorization(&tenant, request)
    });
    respond(answer, request, Host::Login).await
}

async fn token_endpoint(
    State(fake): State<FakeMicrosoft>,
    Path(tenant): Path<String>,
    Extension(seen): Extension<Seen>,
) -> Response {
    let request = &seen.request;
    let answer = fake.process(seen.seq, |state| {
        if request.method != Method::POST.as_str() {
            return Answer::Empty(StatusCode::METHOD_NOT_ALLOWED);
        }
        match request.form.get("grant_type").map(String::as_str) {
            Some(DEVICE_CODE_GRANT) => state.poll(&tenant, request),
            Some("refresh_token") => state.refresh(&tenant, request),
            other => state.other_grant(&tenant, request, other),
        }
    });
    respond(answer, request, Host::Login).await
}

async fn graph_me_endpoint(
    State(fake): State<FakeMicrosoft>,
    Extension(seen): Extension<Seen>,
) -> Response {
    let request = &seen.request;
    let answer = fake.process(seen.seq, |state| {
        if request.method != Method::GET.as_str() {
            return Answer::Empty(StatusCode::METHOD_NOT_ALLOWED);
        }
        state.graph_me(request)
    });
    respond(answer, request, Host::Graph).await
}

async fn unknown_path(State(fake): State<FakeMicrosoft>, Extension(seen): Extension<Seen>) -> Response {
    let answer = fake.process(seen.seq, |_| Answer::Empty(StatusCode::NOT_FOUND));
    respond(answer, &seen.request, Host::Login).await
}

// --- State machine --------------------------------------------------------------------------

struct FakeState {
    client_id: String,
    settings: Settings,
    /// Keyed by device code.
    flows: HashMap<String, DeviceFlow>,
    /// User code → device code.
    user_codes: HashMap<String, String>,
    grants: Vec<Grant>,
    refresh_tokens: HashMap<String, RefreshEntry>,
    access_tokens: HashMap<String, AccessEntry>,
    issued: Issued,
    scripts: Scripts,
    requests: Vec<SeenEntry>,
}

struct SeenEntry {
    request: RecordedRequest,
    /// Set once the answer is decided; waiters only count answered requests.
    answered: bool,
}

struct Settings {
    device_code_lifetime: u64,
    interval: u64,
    access_token_lifetime: u64,
    strict_interval: bool,
    strict_rotation: bool,
    unknown_tenants: HashSet<String>,
}

struct DeviceFlow {
    user_code: String,
    /// The tenant path segment of the devicecode request; polls must use the same one.
    tenant: String,
    scopes: Scopes,
    expires_at: Instant,
    interval: Duration,
    status: FlowStatus,
    last_poll: Option<Instant>,
    slow_downs: u32,
}

enum FlowStatus {
    Pending,
    Approved(FakeUser),
    Declined,
    Redeemed,
}

/// What a user consented to at sign-in; every refresh token from that sign-in maps to it.
struct Grant {
    user: FakeUser,
    consented: Scopes,
    revoked: bool,
}

struct RefreshEntry {
    grant: usize,
    /// Set in strict-rotation mode once the token has been redeemed.
    retired: bool,
}

struct AccessEntry {
    user: FakeUser,
    resource: Resource,
    scopes: Vec<String>,
    expires_at: Instant,
}

#[derive(Default)]
struct Issued {
    device_codes: Vec<String>,
    user_codes: Vec<String>,
    refresh_tokens: Vec<String>,
    access_tokens: Vec<String>,
}

#[derive(Default)]
struct Scripts {
    device_code: VecDeque<Reply>,
    poll: VecDeque<Reply>,
    refresh: VecDeque<Reply>,
    graph: VecDeque<Reply>,
}
