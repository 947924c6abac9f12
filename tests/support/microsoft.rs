//! `FakeMicrosoft`: an in-process stand-in for the Microsoft identity platform v2.0 (device code
//! flow, token endpoint, refresh grant) and for Graph `GET /v1.0/me`, served by axum on
//! `127.0.0.1:0`. Bodies, headers and token shapes follow `shared/reference/microsoft-identity.md`;
//! behaviour Microsoft leaves unconfirmed is a switch or a scripted [`Reply`]. Tests approve or
//! decline codes, script failures and inspect every request; nothing here leaves the machine.
#![expect(
    dead_code,
    reason = "each test binary uses only part of the scripting API"
)]

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
const EXPIRED_GRAPH_TOKEN: &str = "Access token has expired or is not yet valid.";
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
/// Queues are per endpoint ([`FakeMicrosoft::script_poll`] and friends). On the login endpoints
/// the OAuth error variants render the full section-3 error body at HTTP 400; on Graph only
/// `AccessDenied`, `Expired`, `Error` and the transport-level variants apply.
#[derive(Clone, Debug)]
pub enum Reply {
    /// `authorization_pending` (AADSTS70016).
    Pending,
    /// `slow_down`; counts towards the strict-interval penalty of that device code.
    SlowDown,
    /// `authorization_declined` (AADSTS65004), Microsoft's word for RFC 8628's `access_denied`.
    Declined,
    /// `access_denied` (AADSTS65004) as RFC 8628 spells it; on Graph, 403 `accessDenied`.
    AccessDenied,
    /// Poll: `expired_token` (AADSTS70020). Refresh: `invalid_grant` AADSTS700082 with suberror
    /// `bad_token` (refresh token inactive for 90 days). Graph: 401, token expired.
    Expired,
    /// `bad_verification_code` (AADSTS70018).
    BadVerificationCode,
    /// Any error body. The first code picks the canned description (empty `codes`: no
    /// `AADSTS` prefix and no `error_uri`); on Graph, `error` becomes `error.code` and
    /// `codes`/`suberror` are ignored. `status: 200` gives an error on HTTP 200.
    Error {
        /// HTTP status; checked when queued.
        status: u16,
        /// The OAuth `error` (or Graph `error.code`).
        error: String,
        /// `error_codes`, e.g. `vec![50076, 50079]`.
        codes: Vec<u32>,
        /// `suberror`, e.g. `basic_action`, `bad_token`, `consent_required`.
        suberror: Option<String>,
    },
    /// This status with a small HTML body, as a proxy or load balancer would send (no body for
    /// 1xx, 204 and 304).
    Status(u16),
    /// 429 with a `Retry-After` header and the plain-text body "Too Many Requests".
    TooManyRequests {
        /// Seconds, sent as `Retry-After`.
        retry_after: u64,
    },
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
            && self
                .form
                .get("grant_type")
                .is_some_and(|value| value == grant_type)
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
        let outcome = self
            .lock()
            .settle_user_code(user_code, FlowStatus::Declined);
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
        state
            .requests
            .iter()
            .map(|entry| entry.request.clone())
            .collect()
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
        let requests = state.requests.iter().map(|entry| &entry.request);
        requests.filter(|request| keep(request)).cloned().collect()
    }

    async fn wait_until(&self, matches: impl Fn(&RecordedRequest) -> bool, n: usize) {
        let mut answered = self.inner.answered.subscribe();
        let reached = |_: &usize| {
            let state = self.lock();
            let done = state.requests.iter().filter(|entry| entry.answered);
            done.filter(|entry| matches(&entry.request)).count() >= n
        };
        answered
            .wait_for(reached)
            .await
            .expect("the fake outlives the test that awaits it");
    }

    /// Records a new request; returns its index in `requests`.
    fn remember(&self, request: RecordedRequest) -> usize {
        let mut state = self.lock();
        state.requests.push(LogEntry {
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
            if let Some(entry) = state.requests.get_mut(seq) {
                entry.answered = true;
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
struct Arrival {
    seq: usize,
    request: RecordedRequest,
}

fn router(fake: FakeMicrosoft) -> Router {
    // `any` plus a method check inside, so wrong methods are recorded too.
    Router::new()
        .route(
            "/{tenant}/oauth2/v2.0/devicecode",
            any(device_code_endpoint),
        )
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
    request.extensions_mut().insert(Arrival {
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
    Extension(arrival): Extension<Arrival>,
) -> Response {
    let request = &arrival.request;
    let answer = fake.process(arrival.seq, |state| {
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
    Extension(arrival): Extension<Arrival>,
) -> Response {
    let request = &arrival.request;
    let answer = fake.process(arrival.seq, |state| {
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
    Extension(arrival): Extension<Arrival>,
) -> Response {
    let request = &arrival.request;
    let answer = fake.process(arrival.seq, |state| {
        if request.method != Method::GET.as_str() {
            return Answer::Empty(StatusCode::METHOD_NOT_ALLOWED);
        }
        state.graph_me(request)
    });
    respond(answer, request, Host::Graph).await
}

async fn unknown_path(
    State(fake): State<FakeMicrosoft>,
    Extension(arrival): Extension<Arrival>,
) -> Response {
    let answer = fake.process(arrival.seq, |_| Answer::Empty(StatusCode::NOT_FOUND));
    respond(answer, &arrival.request, Host::Login).await
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
    requests: Vec<LogEntry>,
}

struct LogEntry {
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

impl FakeState {
    fn new() -> Self {
        Self {
            client_id: DEFAULT_CLIENT_ID.to_owned(),
            settings: Settings {
                device_code_lifetime: 900,
                interval: 5,
                access_token_lifetime: 3599,
                strict_interval: false,
                strict_rotation: false,
                unknown_tenants: HashSet::new(),
            },
            flows: HashMap::new(),
            user_codes: HashMap::new(),
            grants: Vec::new(),
            refresh_tokens: HashMap::new(),
            access_tokens: HashMap::new(),
            issued: Issued::default(),
            scripts: Scripts::default(),
            requests: Vec::new(),
        }
    }

    fn settle_user_code(&mut self, user_code: &str, outcome: FlowStatus) -> Result<(), String> {
        let user_code = user_code.trim().to_ascii_uppercase();
        let flow = self
            .user_codes
            .get(&user_code)
            .and_then(|device_code| self.flows.get_mut(device_code));
        let Some(flow) = flow else {
            let issued = &self.issued.user_codes;
            return Err(format!(
                "no device code has user code {user_code:?} (issued: {issued:?})"
            ));
        };
        let previous = match flow.status {
            FlowStatus::Pending => {
                flow.status = outcome;
                return Ok(());
            }
            FlowStatus::Approved(_) => "approved",
            FlowStatus::Declined => "declined",
            FlowStatus::Redeemed => "redeemed",
        };
        Err(format!("user code {user_code} was already {previous}"))
    }

    fn is_known_tenant(&self, tenant: &str) -> bool {
        let tenant = tenant.to_ascii_lowercase();
        if self.settings.unknown_tenants.contains(&tenant) {
            return false;
        }
        matches!(tenant.as_str(), "common" | "organizations" | "consumers")
            || is_guid(&tenant)
            || is_domain(&tenant)
    }

    /// The checks both endpoints make before looking at the grant itself.
    fn check_client(&self, tenant: &str, form: &BTreeMap<String, String>) -> Option<OAuthError> {
        if !self.is_known_tenant(tenant) {
            let text = format!(
                "Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID \
                 and are signing into the correct cloud."
            );
            return Some(OAuthError::new(400, "invalid_tenant", 90002, text));
        }
        let Some(client_id) = form.get("client_id") else {
            return Some(missing_parameter("client_id"));
        };
        if *client_id != self.client_id {
            let text = format!(
                "Application with identifier '{client_id}' was not found in the directory \
                 '{tenant}'. This can happen if the application has not been installed by the \
                 administrator of the tenant or consented to by any user in the tenant. You may \
                 have sent your authentication request to the wrong tenant."
            );
            return Some(OAuthError::new(400, "unauthorized_client", 700016, text));
        }
        // The device flow is a public-client flow; presenting a secret is itself an error.
        if form.contains_key("client_secret") || form.contains_key("client_assertion") {
            return Some(OAuthError::known(401, "invalid_client", 700025));
        }
        None
    }

    fn device_authorization(&mut self, tenant: &str, request: &RecordedRequest) -> Answer {
        if let Some(reply) = self.scripts.device_code.pop_front() {
            return scripted(reply, Endpoint::DeviceCode);
        }
        if let Some(rejection) = self.check_client(tenant, &request.form) {
            return rejection.into();
        }
        let scope = request
            .form
            .get("scope")
            .filter(|scope| !scope.trim().is_empty());
        let Some(scope) = scope else {
            return missing_parameter("scope").into();
        };

        // `mkt` would localise `message`; the fake accepts it and always answers in English.
        let device_code = random_device_code();
        let user_code = self.unique_user_code();
        let lifetime = self.settings.device_code_lifetime;
        let interval = self.settings.interval;
        let flow = DeviceFlow {
            tenant: tenant.to_owned(),
            scopes: Scopes::parse(scope),
            expires_at: request.at + Duration::from_secs(lifetime),
            interval: Duration::from_secs(interval),
            status: FlowStatus::Pending,
            last_poll: None,
            slow_downs: 0,
        };
        self.flows.insert(device_code.clone(), flow);
        self.user_codes
            .insert(user_code.clone(), device_code.clone());
        self.issued.device_codes.push(device_code.clone());
        self.issued.user_codes.push(user_code.clone());

        let message = format!(
            "To sign in, use a web browser to open the page {VERIFICATION_URI} and enter the code \
             {user_code} to authenticate."
        );
        Answer::Ok(json!({
            "user_code": user_code,
            "device_code": device_code,
            "verification_uri": VERIFICATION_URI,
            "expires_in": lifetime,
            "interval": interval,
            "message": message,
        }))
    }

    fn unique_user_code(&self) -> String {
        loop {
            let code = random_user_code();
            if !self.user_codes.contains_key(&code) {
                return code;
            }
        }
    }

    fn poll(&mut self, tenant: &str, request: &RecordedRequest) -> Answer {
        // MSAL sends the code as both `device_code` and `code`; early-2020 servers wanted `code`.
        let form = &request.form;
        let code = form
            .get("device_code")
            .or_else(|| form.get("code"))
            .cloned();
        let too_early = code
            .as_deref()
            .is_some_and(|code| self.note_poll(code, request.at));
        if let Some(reply) = self.scripts.poll.pop_front() {
            return self.scripted_poll(reply, code.as_deref(), request);
        }
        if let Some(rejection) = self.check_client(tenant, form) {
            return rejection.into();
        }
        let Some(code) = code else {
            return missing_parameter("device_code").into();
        };
        let Some(flow) = self.flows.get_mut(&code) else {
            return OAuthError::known(400, "bad_verification_code", 70018).into();
        };

        // Real behaviour on a tenant mismatch is unconfirmed; the reference picks invalid_grant.
        if !flow.tenant.eq_ignore_ascii_case(tenant) {
            return OAuthError::known(400, "invalid_grant", 70000).into();
        }
        // Re-polling a redeemed code is unconfirmed too; AADSTS90120 ("already authorized or
        // declined") is the documented code closest to it.
        if matches!(flow.status, FlowStatus::Redeemed) {
            return OAuthError::known(400, "invalid_grant", 90120).into();
        }
        if request.at >= flow.expires_at {
            return OAuthError::known(400, "expired_token", 70020).into();
        }
        if too_early {
            flow.slow_downs += 1;
            return slow_down().into();
        }
        let user = match &flow.status {
            FlowStatus::Approved(user) => user.clone(),
            FlowStatus::Declined => return declined().into(),
            FlowStatus::Pending | FlowStatus::Redeemed => return pending().into(),
        };

        flow.status = FlowStatus::Redeemed;
        let scopes = flow.scopes.clone();
        Answer::Ok(self.redeem(&user, &scopes, wants_client_info(request)))
    }

    /// Tokens for a device code just approved; a grant and its refresh token exist only when
    /// `offline_access` was requested.
    fn redeem(&mut self, user: &FakeUser, scopes: &Scopes, client_info: bool) -> Value {
        let grant = scopes.offline_access.then(|| {
            self.grants.push(Grant {
                user: user.clone(),
                consented: scopes.clone(),
                revoked: false,
            });
            self.grants.len() - 1
        });
        self.mint(user, scopes, grant, client_info)
    }

    /// Stamps a poll of `device_code`; true if strict-interval mode finds it too early.
    fn note_poll(&mut self, device_code: &str, at: Instant) -> bool {
        let strict = self.settings.strict_interval;
        let Some(flow) = self.flows.get_mut(device_code) else {
            return false;
        };
        // RFC 8628 §3.5: each slow_down adds 5 s to the interval for all later polls.
        let wait = flow.interval + Duration::from_secs(5 * u64::from(flow.slow_downs));
        let too_early = flow
            .last_poll
            .is_some_and(|last| at.saturating_duration_since(last) + EARLY_POLL_TOLERANCE < wait);
        flow.last_poll = Some(at);
        strict && too_early
    }

    fn scripted_poll(
        &mut self,
        reply: Reply,
        code: Option<&str>,
        request: &RecordedRequest,
    ) -> Answer {
        let flow = code.and_then(|code| self.flows.get_mut(code));
        match reply {
            Reply::SlowDown => {
                if let Some(flow) = flow {
                    flow.slow_downs += 1;
                }
                slow_down().into()
            }
            Reply::SuccessWithoutRefreshToken => {
                let (user, scopes) = match flow {
                    Some(flow) => {
                        let user = match &flow.status {
                            FlowStatus::Approved(user) => user.clone(),
                            _ => throwaway_user(),
                        };
                        flow.status = FlowStatus::Redeemed;
                        (user, flow.scopes.clone())
                    }
                    None => (throwaway_user(), Scopes::parse(DEFAULT_SCOPES)),
                };
                Answer::Ok(self.mint(&user, &scopes, None, wants_client_info(request)))
            }
            other => scripted(other, Endpoint::Poll),
        }
    }

    fn refresh(&mut self, tenant: &str, request: &RecordedRequest) -> Answer {
        if let Some(reply) = self.scripts.refresh.pop_front() {
            return self.scripted_refresh(reply, request);
        }
        if let Some(rejection) = self.check_client(tenant, &request.form) {
            return rejection.into();
        }
        let Some(token) = request.form.get("refresh_token") else {
            return missing_parameter("refresh_token").into();
        };
        // A token mangled in transit (say, `+` sent unencoded) lands here as unknown.
        let Some(entry) = self.refresh_tokens.get(token) else {
            return OAuthError::known(400, "invalid_grant", 9002313).into();
        };
        if entry.retired {
            return OAuthError::known(400, "invalid_grant", 70008).into();
        }
        let grant_id = entry.grant;
        let grant = &self.grants[grant_id];
        if grant.revoked {
            return OAuthError::known(400, "invalid_grant", 50173).into();
        }

        // Refresh tokens are bound to user and client, not to resource or tenant: they mint
        // tokens for any consented resource, so only Graph scopes are checked against consent.
        let requested = requested_scopes(request).unwrap_or_else(|| grant.consented.clone());
        if let Some(scope) = requested.unconsented(&grant.consented) {
            return consent_required(&scope, &self.client_id).into();
        }
        let user = grant.user.clone();
        if let Some(entry) = self.refresh_tokens.get_mut(token) {
            entry.retired = self.settings.strict_rotation;
        }
        Answer::Ok(self.mint(
            &user,
            &requested,
            Some(grant_id),
            wants_client_info(request),
        ))
    }

    fn scripted_refresh(&mut self, reply: Reply, request: &RecordedRequest) -> Answer {
        if !matches!(reply, Reply::SuccessWithoutRefreshToken) {
            return scripted(reply, Endpoint::Refresh);
        }
        let grant = request
            .form
            .get("refresh_token")
            .and_then(|token| self.refresh_tokens.get(token))
            .and_then(|entry| self.grants.get(entry.grant));
        let user = grant.map_or_else(throwaway_user, |grant| grant.user.clone());
        let scopes = requested_scopes(request)
            .or_else(|| grant.map(|grant| grant.consented.clone()))
            .unwrap_or_else(|| Scopes::parse(DEFAULT_SCOPES));
        Answer::Ok(self.mint(&user, &scopes, None, wants_client_info(request)))
    }

    fn other_grant(&self, tenant: &str, request: &RecordedRequest, grant: Option<&str>) -> Answer {
        if let Some(rejection) = self.check_client(tenant, &request.form) {
            return rejection.into();
        }
        let Some(grant) = grant else {
            return missing_parameter("grant_type").into();
        };
        let text = format!("The app requested an unsupported grant type '{grant}'.");
        OAuthError::new(400, "unsupported_grant_type", 70003, text).into()
    }

    /// Issues an access token (and a rotated refresh token when `grant` is set) and builds the
    /// section-4 success body.
    fn mint(
        &mut self,
        user: &FakeUser,
        scopes: &Scopes,
        grant: Option<usize>,
        client_info: bool,
    ) -> Value {
        let lifetime = self.settings.access_token_lifetime;
        let access_token = random_access_token();
        let entry = AccessEntry {
            user: user.clone(),
            resource: scopes.resource.clone(),
            scopes: scopes.resource_scopes.clone(),
            expires_at: Instant::now() + Duration::from_secs(lifetime),
        };
        self.access_tokens.insert(access_token.clone(), entry);
        self.issued.access_tokens.push(access_token.clone());

        let mut body = json!({
            "token_type": "Bearer",
            "scope": scopes.response_scope(),
            "expires_in": lifetime,
            "ext_expires_in": lifetime,
            "access_token": access_token,
        });
        if let Some(grant) = grant {
            let refresh_token = random_refresh_token(user.msa);
            let entry = RefreshEntry {
                grant,
                retired: false,
            };
            self.refresh_tokens.insert(refresh_token.clone(), entry);
            self.issued.refresh_tokens.push(refresh_token.clone());
            body["refresh_token"] = json!(refresh_token);
        }
        if scopes.openid {
            body["id_token"] = json!(id_token(user, scopes.profile, &self.client_id));
        }
        if client_info {
            let info = json!({ "uid": user.object_id, "utid": user.tenant_id });
            body["client_info"] = json!(URL_SAFE_NO_PAD.encode(info.to_string()));
        }
        body
    }

    fn graph_me(&mut self, request: &RecordedRequest) -> Answer {
        if let Some(reply) = self.scripts.graph.pop_front() {
            return scripted(reply, Endpoint::Graph);
        }
        let Some(token) = bearer_token(request) else {
            return GraphError::unauthorized("Access token is empty.").into();
        };
        let Some(entry) = self.access_tokens.get(token) else {
            let message = "CompactToken parsing failed with error code: 80049217";
            return GraphError::unauthorized(message).into();
        };
        // The exact wording for a token minted for another resource is unconfirmed.
        if entry.resource != Resource::Graph {
            let message = "Access token validation failure. Invalid audience.";
            return GraphError::unauthorized(message).into();
        }
        if request.at >= entry.expires_at {
            return GraphError::unauthorized(EXPIRED_GRAPH_TOKEN).into();
        }
        if !entry.scopes.iter().any(|scope| reads_own_profile(scope)) {
            let message = "Insufficient privileges to complete the operation.";
            return GraphError::new(403, "Authorization_RequestDenied", message).into();
        }
        Answer::Ok(graph_user(&entry.user))
    }
}

fn wants_client_info(request: &RecordedRequest) -> bool {
    request
        .form
        .get("client_info")
        .is_some_and(|value| value == "1")
}

fn requested_scopes(request: &RecordedRequest) -> Option<Scopes> {
    let scope = request.form.get("scope")?;
    (!scope.trim().is_empty()).then(|| Scopes::parse(scope))
}

fn bearer_token(request: &RecordedRequest) -> Option<&str> {
    let (scheme, token) = request.header("authorization")?.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Delegated scopes that allow `GET /me`.
fn reads_own_profile(scope: &str) -> bool {
    const ALLOWED: [&str; 6] = [
        "User.Read",
        "User.ReadWrite",
        "User.ReadBasic.All",
        "User.Read.All",
        "User.ReadWrite.All",
        "Directory.Read.All",
    ];
    ALLOWED
        .iter()
        .any(|allowed| allowed.eq_ignore_ascii_case(scope))
}

fn throwaway_user() -> FakeUser {
    FakeUser::entra("scripted user")
}

// --- Scopes ---------------------------------------------------------------------------------

/// The resource an access token is minted for.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Resource {
    Graph,
    /// Another API, named by its URI (`https://example.test`, `api://x`).
    Other(String),
}

/// A parsed `scope` parameter: one resource's scopes plus the OpenID Connect ones.
#[derive(Clone, Debug)]
struct Scopes {
    resource: Resource,
    /// Graph scopes in short form (`User.Read`), other resources' scopes as full URIs.
    resource_scopes: Vec<String>,
    openid: bool,
    profile: bool,
    email: bool,
    offline_access: bool,
}

impl Scopes {
    fn parse(raw: &str) -> Self {
        let mut scopes = Self {
            resource: Resource::Graph,
            resource_scopes: Vec::new(),
            openid: false,
            profile: false,
            email: false,
            offline_access: false,
        };
        let mut first_resource = None;
        for scope in raw.split_whitespace() {
            match scope.to_ascii_lowercase().as_str() {
                "openid" => scopes.openid = true,
                "profile" => scopes.profile = true,
                "email" => scopes.email = true,
                "offline_access" => scopes.offline_access = true,
                _ => {
                    let (resource, name) = split_resource(scope);
                    // A token covers one resource: the first named; the rest are dropped.
                    let first = first_resource.get_or_insert_with(|| resource.clone());
                    if *first == resource {
                        scopes.resource_scopes.push(name);
                    }
                }
            }
        }
        scopes.resource = first_resource.unwrap_or(Resource::Graph);
        scopes
    }

    /// The `scope` the server reports: `email` comes along with `openid`, `offline_access` is
    /// not echoed, as in the documented sample "User.Read profile openid email".
    fn response_scope(&self) -> String {
        let mut scope = self.resource_scopes.clone();
        let oidc = [
            (self.profile, "profile"),
            (self.openid, "openid"),
            (self.openid || self.email, "email"),
        ];
        scope.extend(
            oidc.iter()
                .filter(|(on, _)| *on)
                .map(|(_, name)| (*name).to_owned()),
        );
        scope.join(" ")
    }

    /// The first Graph scope in `self` that `consented` does not cover.
    fn unconsented(&self, consented: &Scopes) -> Option<String> {
        if self.resource != Resource::Graph {
            return None;
        }
        let granted: &[String] = match consented.resource {
            Resource::Graph => &consented.resource_scopes,
            Resource::Other(_) => &[],
        };
        let covered = |scope: &String| granted.iter().any(|g| g.eq_ignore_ascii_case(scope));
        self.resource_scopes
            .iter()
            .find(|scope| !covered(scope))
            .cloned()
    }
}

fn split_resource(scope: &str) -> (Resource, String) {
    let graph = scope
        .get(..GRAPH_PREFIX.len())
        .filter(|prefix| prefix.eq_ignore_ascii_case(GRAPH_PREFIX))
        .map(|_| &scope[GRAPH_PREFIX.len()..]);
    if let Some(name) = graph {
        return (Resource::Graph, graph_scope(name));
    }
    let Some(scheme_end) = scope.find("://") else {
        return (Resource::Graph, graph_scope(scope));
    };
    let after_scheme = scheme_end + "://".len();
    let resource = match scope[after_scheme..].rfind('/') {
        Some(slash) => &scope[..after_scheme + slash],
        None => scope,
    };
    (Resource::Other(resource.to_owned()), scope.to_owned())
}

/// `.default` means "what the app registration lists"; for a typical app that is `User.Read`.
fn graph_scope(name: &str) -> String {
    if name.eq_ignore_ascii_case(".default") {
        "User.Read".to_owned()
    } else {
        name.to_owned()
    }
}

// --- Responses ------------------------------------------------------------------------------

/// The outcome of a request, decided under the state lock and rendered after it is released.
enum Answer {
    Ok(Value),
    Login(OAuthError),
    Graph(GraphError),
    Empty(StatusCode),
    Html(u16),
    TooManyRequests(u64),
    Garbage,
    Hang,
}

/// A login-endpoint error, rendered as the section-3 body.
struct OAuthError {
    status: u16,
    error: String,
    codes: Vec<u32>,
    text: String,
    suberror: Option<String>,
}

impl OAuthError {
    fn new(status: u16, error: &str, code: u32, text: impl Into<String>) -> Self {
        Self {
            status,
            error: error.to_owned(),
            codes: vec![code],
            text: text.into(),
            suberror: None,
        }
    }

    /// An error whose description is the canned text for `code`.
    fn known(status: u16, error: &str, code: u32) -> Self {
        Self::new(status, error, code, description_for(code))
    }

    fn with_suberror(mut self, suberror: &str) -> Self {
        self.suberror = Some(suberror.to_owned());
        self
    }

    fn render(&self, request: &RecordedRequest) -> Response {
        let trace_id = random_guid();
        // Microsoft echoes the client's `client-request-id` as the correlation id.
        let correlation_id = request
            .header("client-request-id")
            .map_or_else(random_guid, str::to_owned);
        let timestamp = Utc::now().format("%Y-%m-%d %H:%M:%SZ").to_string();
        let prefix = self.codes.first().map(|code| format!("AADSTS{code}: "));
        let description = format!(
            "{}{}\r\nTrace ID: {trace_id}\r\nCorrelation ID: {correlation_id}\r\n\
             Timestamp: {timestamp}",
            prefix.unwrap_or_default(),
            self.text,
        );
        let mut body = json!({
            "error": self.error,
            "error_description": description,
            "error_codes": self.codes,
            "timestamp": timestamp,
            "trace_id": trace_id,
            "correlation_id": correlation_id,
        });
        if let Some(code) = self.codes.first() {
            body["error_uri"] = json!(format!(
                "https://login.microsoftonline.com/error?code={code}"
            ));
        }
        if let Some(suberror) = &self.suberror {
            body["suberror"] = json!(suberror);
        }
        let headers = login_headers(&trace_id);
        (status(self.status), headers, Body::from(body.to_string())).into_response()
    }
}

/// A Graph error, rendered as `{"error": {"code", "message", "innerError"}}`.
struct GraphError {
    status: u16,
    code: String,
    message: String,
}

impl GraphError {
    fn new(status: u16, code: &str, message: &str) -> Self {
        Self {
            status,
            code: code.to_owned(),
            message: message.to_owned(),
        }
    }

    fn unauthorized(message: &str) -> Self {
        Self::new(401, "InvalidAuthenticationToken", message)
    }

    fn render(&self, request: &RecordedRequest) -> Response {
        let (mut headers, request_id, client_request_id) = graph_headers(request);
        if self.status == 401 {
            let challenge = HeaderValue::from_static(GRAPH_WWW_AUTHENTICATE);
            headers.insert(header::WWW_AUTHENTICATE, challenge);
        }
        let body = json!({
            "error": {
                "code": self.code,
                "message": self.message,
                "innerError": {
                    "date": Utc::now().format("%Y-%m-%dT%H:%M:%S").to_string(),
                    "request-id": request_id,
                    "client-request-id": client_request_id,
                },
            },
        });
        (status(self.status), headers, Body::from(body.to_string())).into_response()
    }
}

impl From<OAuthError> for Answer {
    fn from(error: OAuthError) -> Self {
        Self::Login(error)
    }
}

impl From<GraphError> for Answer {
    fn from(error: GraphError) -> Self {
        Self::Graph(error)
    }
}

/// Which host's conventions a success body gets.
#[derive(Clone, Copy)]
enum Host {
    Login,
    Graph,
}

async fn respond(answer: Answer, request: &RecordedRequest, host: Host) -> Response {
    match answer {
        Answer::Ok(body) => {
            let headers = match host {
                Host::Login => login_headers(&random_guid()),
                Host::Graph => graph_headers(request).0,
            };
            (StatusCode::OK, headers, Body::from(body.to_string())).into_response()
        }
        Answer::Login(error) => error.render(request),
        Answer::Graph(error) => error.render(request),
        Answer::Empty(code) => code.into_response(),
        Answer::Html(code) => html_status(code),
        Answer::TooManyRequests(retry_after) => {
            let headers = [
                (header::CONTENT_TYPE, "text/plain".to_owned()),
                (header::RETRY_AFTER, retry_after.to_string()),
            ];
            (StatusCode::TOO_MANY_REQUESTS, headers, "Too Many Requests").into_response()
        }
        Answer::Garbage => {
            let headers = [(header::CONTENT_TYPE, JSON_UTF8)];
            (StatusCode::OK, headers, GARBAGE_BODY).into_response()
        }
        Answer::Hang => std::future::pending().await,
    }
}

fn html_status(code: u16) -> Response {
    let code = status(code);
    // These statuses must not carry a body.
    if code.is_informational() || code == StatusCode::NO_CONTENT || code == StatusCode::NOT_MODIFIED
    {
        return code.into_response();
    }
    let reason = code.canonical_reason().unwrap_or("Error");
    let number = code.as_u16();
    let body = format!(
        "<!DOCTYPE html><html><head><title>{number} {reason}</title></head>\
         <body><h1>{reason}</h1></body></html>"
    );
    let headers = [(header::CONTENT_TYPE, "text/html; charset=utf-8")];
    (code, headers, body).into_response()
}

fn status(code: u16) -> StatusCode {
    // Scripted statuses are checked when queued, so the fallback is never used.
    StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// Headers of every login-host JSON answer, success or error (reference §1, request encoding).
fn login_headers(request_id: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(JSON_UTF8));
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-store, no-cache"),
    );
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    headers.insert(header::EXPIRES, HeaderValue::from_static("-1"));
    headers.insert(
        HeaderName::from_static("x-ms-request-id"),
        header_value(request_id),
    );
    headers
}

/// Graph's JSON headers; also returns the `request-id` and `client-request-id` used.
fn graph_headers(request: &RecordedRequest) -> (HeaderMap, String, String) {
    let request_id = random_guid();
    let client_request_id = request
        .header("client-request-id")
        .map_or_else(random_guid, str::to_owned);
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(JSON_UTF8));
    headers.insert(
        HeaderName::from_static("request-id"),
        header_value(&request_id),
    );
    let echoed = header_value(&client_request_id);
    headers.insert(HeaderName::from_static("client-request-id"), echoed);
    (headers, request_id, client_request_id)
}

fn header_value(value: &str) -> HeaderValue {
    HeaderValue::from_str(value).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

fn graph_user(user: &FakeUser) -> Value {
    let (given_name, surname) = match user.display_name.split_once(' ') {
        Some((given, rest)) => (given, Some(rest)),
        None => (user.display_name.as_str(), None),
    };
    // Observed MSA shape: no mail, no phones, no language; the UPN is the account's email.
    let mail = (!user.msa).then_some(user.username.as_str());
    let language = (!user.msa).then_some("en-US");
    json!({
        "@odata.context": GRAPH_ME_CONTEXT,
        "businessPhones": [],
        "displayName": user.display_name,
        "givenName": given_name,
        "jobTitle": null,
        "mail": mail,
        "mobilePhone": null,
        "officeLocation": null,
        "preferredLanguage": language,
        "surname": surname,
        "userPrincipalName": user.username,
        "id": user.graph_id(),
    })
}

// --- Canned errors --------------------------------------------------------------------------

fn pending() -> OAuthError {
    OAuthError::known(400, "authorization_pending", 70016)
}

/// Microsoft documents no code for `slow_down`; it reuses the pending code, since the client's
/// action (wait, then poll again) is the same family.
fn slow_down() -> OAuthError {
    let text =
        "OAuth 2.0 device flow error. Polling too frequently; slow down and continue polling.";
    OAuthError::new(400, "slow_down", 70016, text)
}

fn declined() -> OAuthError {
    OAuthError::known(400, "authorization_declined", 65004)
}

fn missing_parameter(name: &str) -> OAuthError {
    let text = format!("The request body must contain the following parameter: '{name}'.");
    OAuthError::new(400, "invalid_request", 900144, text)
}

fn consent_required(scope: &str, client_id: &str) -> OAuthError {
    let text = format!(
        "The user or administrator has not consented to use the application with ID \
         '{client_id}' for scope '{scope}'. Send an interactive authorization request for this \
         user and resource."
    );
    OAuthError::new(400, "invalid_grant", 65001, text).with_suberror("consent_required")
}

/// Canned `error_description` texts (after the `AADSTSnnnnn: ` prefix), used by scripted
/// [`Reply::Error`]s and the fake's own answers.
fn description_for(code: u32) -> &'static str {
    match code {
        70016 => "OAuth 2.0 device flow error. Authorization is pending. Continue polling.",
        70018 => {
            "The provided value for the input parameter 'device_code' is not valid. The code was \
             not recognized."
        }
        70020 => {
            "The provided value for the input parameter 'device_code' is not valid. This device \
             code has expired."
        }
        65004 => "User declined to consent to access the app.",
        90120 => "The device flow request was already authorized or declined.",
        70000 => "The provided value for the input parameter 'device_code' is not valid.",
        9002313 => "Invalid request. Request is malformed or invalid.",
        70008 => "The provided authorization code or refresh token has expired or was revoked.",
        50173 => {
            "The provided grant has expired due to it being revoked, a fresh auth token is \
             needed. The user might have changed or reset their password."
        }
        700082 => {
            "The refresh token has expired due to inactivity. The token was issued on \
             2024-01-01T00:00:00.0000000Z and was inactive for 90.00:00:00."
        }
        50076 => {
            "Due to a configuration change made by your administrator, or because you moved to a \
             new location, you must use multi-factor authentication to access the resource."
        }
        50078 => "Presented multi-factor authentication has expired; sign in again.",
        50079 => "The user is required to register for multi-factor authentication.",
        65001 => {
            "The user or administrator has not consented to use the application. Send an \
             interactive authorization request for this user and resource."
        }
        70043 => {
            "The refresh token has expired or is invalid due to sign-in frequency checks by \
             conditional access."
        }
        50196 => {
            "The server terminated an operation because it encountered a client request loop. \
             Please contact your app vendor."
        }
        700016 => "Application was not found in the directory.",
        7000218 => {
            "The request body must contain the following parameter: 'client_assertion' or \
             'client_secret'."
        }
        700025 => {
            "Client is public so neither 'client_assertion' nor 'client_secret' should be \
             presented."
        }
        90002 => "Tenant not found.",
        900144 => "The request body must contain a required parameter.",
        90033 => "A transient error has occurred. Please try again.",
        _ => "Scripted error from the fake identity platform.",
    }
}

/// Panics at queue time on replies that cannot be rendered for `endpoint`.
fn check_reply(reply: &Reply, endpoint: Endpoint) {
    if let Reply::Error { status, .. } | Reply::Status(status) = reply {
        let valid = StatusCode::from_u16(*status).is_ok();
        assert!(valid, "{reply:?}: {status} is not an HTTP status");
    }
    let meaningless = match endpoint {
        Endpoint::Graph => matches!(
            reply,
            Reply::Pending
                | Reply::SlowDown
                | Reply::Declined
                | Reply::BadVerificationCode
                | Reply::SuccessWithoutRefreshToken
        ),
        Endpoint::DeviceCode => matches!(reply, Reply::SuccessWithoutRefreshToken),
        Endpoint::Poll | Endpoint::Refresh => false,
    };
    assert!(
        !meaningless,
        "{reply:?} means nothing for the {endpoint:?} endpoint; script a Reply::Error instead"
    );
}

/// Renders a scripted reply that needs no state. Poll and refresh handle
/// `SuccessWithoutRefreshToken` themselves, and `check_reply` keeps it off the other queues.
fn scripted(reply: Reply, endpoint: Endpoint) -> Answer {
    let graph = endpoint == Endpoint::Graph;
    match reply {
        Reply::Pending => pending().into(),
        Reply::SlowDown => slow_down().into(),
        Reply::Declined => declined().into(),
        Reply::AccessDenied if graph => {
            let message = "Access denied. Check credentials and try again.";
            GraphError::new(403, "accessDenied", message).into()
        }
        Reply::AccessDenied => OAuthError::known(400, "access_denied", 65004).into(),
        Reply::Expired => match endpoint {
            Endpoint::Graph => GraphError::unauthorized(EXPIRED_GRAPH_TOKEN).into(),
            Endpoint::Refresh => {
                let error = OAuthError::known(400, "invalid_grant", 700082);
                error.with_suberror("bad_token").into()
            }
            Endpoint::Poll | Endpoint::DeviceCode => {
                OAuthError::known(400, "expired_token", 70020).into()
            }
        },
        Reply::BadVerificationCode => OAuthError::known(400, "bad_verification_code", 70018).into(),
        Reply::Error {
            status,
            error,
            codes,
            suberror,
        } => {
            if graph {
                return GraphError::new(status, &error, "Scripted error.").into();
            }
            let text = codes
                .first()
                .map_or("Scripted error.", |code| description_for(*code));
            let mut oauth = OAuthError::new(status, &error, 0, text);
            oauth.codes = codes;
            oauth.suberror = suberror;
            oauth.into()
        }
        Reply::Status(code) => Answer::Html(code),
        Reply::TooManyRequests { retry_after } => Answer::TooManyRequests(retry_after),
        Reply::Garbage => Answer::Garbage,
        Reply::Hang => Answer::Hang,
        Reply::ErrorOn200 => error_on_200(endpoint),
        Reply::SuccessWithoutRefreshToken => {
            unreachable!("SuccessWithoutRefreshToken is handled by the poll and refresh paths")
        }
    }
}

fn error_on_200(endpoint: Endpoint) -> Answer {
    let (error, code) = match endpoint {
        Endpoint::Graph => {
            let message = "Access token validation failure.";
            return GraphError::new(200, "InvalidAuthenticationToken", message).into();
        }
        Endpoint::DeviceCode => ("unauthorized_client", 700016),
        Endpoint::Poll => ("authorization_pending", 70016),
        Endpoint::Refresh => ("invalid_grant", 50173),
    };
    OAuthError::known(200, error, code).into()
}

// --- Tokens and identifiers -----------------------------------------------------------------

fn random_bytes(len: usize) -> Vec<u8> {
    let mut bytes = vec![0; len];
    rand::thread_rng().fill_bytes(&mut bytes);
    bytes
}

fn random_hex(bytes: usize) -> String {
    random_bytes(bytes)
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

fn random_guid() -> String {
    let hex = random_hex(16);
    format!(
        "{}-{}-4{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[13..16],
        &hex[16..20],
        &hex[20..32]
    )
}

fn random_user_code() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut rng = rand::thread_rng();
    (0..9)
        .map(|_| char::from(ALPHABET[rng.gen_range(0..ALPHABET.len())]))
        .collect()
}

fn random_device_code() -> String {
    URL_SAFE_NO_PAD.encode(random_bytes(120))
}

/// Opaque and deliberately not a JWT (no dots), like MSA's `EwA…` tokens, so code that tries to
/// decode access tokens fails here first.
fn random_access_token() -> String {
    format!("EwA{}", STANDARD.encode(random_bytes(600)))
}

/// Real refresh tokens carry `.`, `*`, `!`, `$`, `+` and `/`; the `+` in particular turns into a
/// space unless the client form-encodes the token, and the fake then no longer recognises it.
fn random_refresh_token(msa: bool) -> String {
    let prefix = if msa { "M.C540_BAY.0.U.-" } else { "1.AXEA" };
    let head = STANDARD.encode(random_bytes(192));
    let tail = STANDARD.encode(random_bytes(96));
    format!("{prefix}{head}+{tail}*!$")
}

/// An id_token shaped like the real one but signed with random bytes: public clients that get
/// it straight from the token endpoint need not verify it.
fn id_token(user: &FakeUser, profile: bool, client_id: &str) -> String {
    let now = Utc::now().timestamp();
    let mut claims = json!({
        "aud": client_id,
        "iss": format!("https://login.microsoftonline.com/{}/v2.0", user.tenant_id),
        "iat": now,
        "nbf": now,
        "exp": now + ID_TOKEN_LIFETIME_SECS,
        "sub": pairwise_subject(user, client_id),
        "tid": user.tenant_id,
        "ver": "2.0",
    });
    if profile {
        claims["oid"] = json!(user.object_id);
        claims["preferred_username"] = json!(user.username);
        claims["name"] = json!(user.display_name);
    }
    let header = json!({ "typ": "JWT", "alg": "RS256", "kid": "fake-microsoft-signing-key" });
    format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string()),
        URL_SAFE_NO_PAD.encode(random_bytes(256)),
    )
}

/// `sub` is pairwise: stable for one user and app, different across apps.
fn pairwise_subject(user: &FakeUser, client_id: &str) -> String {
    let digest = Sha256::new()
        .chain_update(client_id)
        .chain_update(&user.tenant_id)
        .chain_update(&user.object_id)
        .finalize();
    URL_SAFE_NO_PAD.encode(digest)
}

fn is_guid(value: &str) -> bool {
    value.len() == 36
        && value.char_indices().all(|(index, c)| match index {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        })
}

fn is_domain(value: &str) -> bool {
    let labels: Vec<&str> = value.split('.').collect();
    labels.len() >= 2
        && labels.iter().all(|label| {
            !label.is_empty() && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

fn login_name(name: &str) -> String {
    name.split_whitespace()
        .map(str::to_ascii_lowercase)
        .collect::<Vec<_>>()
        .join(".")
}

fn display_name(name: &str) -> String {
    let words = name.split_whitespace().map(|word| {
        let mut chars = word.chars();
        chars.next().map_or_else(String::new, |first| {
            first.to_uppercase().chain(chars).collect()
        })
    });
    words.collect::<Vec<_>>().join(" ")
}
