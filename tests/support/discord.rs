//! `FakeDiscord`: an in-process stand-in for Discord's REST API and gateway.
//!
//! One axum server on `127.0.0.1:0` answers the REST routes the bot uses (under `/api/v10`) and
//! speaks the gateway protocol on `/gateway`, so an unmodified serenity client runs against it.
//! Tests inject slash commands, script failures (closed DMs, 5xx, 429) and read back what the bot
//! sent. Only what the bot touches is modelled: any other route is recorded and answers 404.

#![allow(dead_code, reason = "each test uses a different part of the fake")]

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::http::{HeaderMap, HeaderName, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::{DateTime, SecondsFormat, Utc};
use rand::Rng;
use rand::distributions::Alphanumeric;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};

/// Milliseconds from the Unix epoch to Discord's (2015-01-01), the zero of every snowflake.
const DISCORD_EPOCH_MS: u64 = 1_420_070_400_000;

/// What HELLO asks for: Discord's usual value. serenity first heartbeats one interval after
/// HELLO, so short tests see none.
const HEARTBEAT_INTERVAL_MS: u64 = 41_250;

/// Close code for `disconnect()`: 4000 ("unknown error") tells the client it may resume.
const CLOSE_RECONNECT: u16 = 4000;

/// Message flags the fake interprets; see Discord's message flags table.
const SUPPRESS_EMBEDS: u64 = 1 << 2;
const LOADING: u64 = 1 << 7;

/// Permissions sent for the invoking member and the app: `@everyone`'s usual default set.
const PERMISSIONS: &str = "1071698660929";

/// Message `type` values used in replies: a plain message, and an interaction response.
const DEFAULT_MESSAGE: u64 = 0;
const CHAT_INPUT_COMMAND_MESSAGE: u64 = 20;

/// A fake Discord: REST routes and a gateway on one loopback port. Clones share one state.
#[derive(Clone)]
pub struct FakeDiscord {
    shared: Arc<Shared>,
}

/// The interaction `invoke` sent, as the bot sees it.
#[derive(Clone, Debug)]
pub struct InvokedInteraction {
    /// The interaction's snowflake, the `{id}` of its callback route.
    pub id: u64,
    /// The interaction token, the key for `interaction_response`, `original_response` and
    /// `followups`.
    pub token: String,
}

/// One REST request as the fake received it.
#[derive(Clone, Debug)]
pub struct RecordedCall {
    /// HTTP method in upper case (`"POST"`).
    pub method: String,
    /// The request path as sent, `/api/v10` prefix included and query string left out.
    pub path: String,
    /// The JSON body; `Null` when empty, a JSON string when the body is not JSON.
    pub body: Value,
    /// The `Authorization` header, e.g. `"Bot <token>"`.
    pub authorization: Option<String>,
    /// When the fake received it.
    pub at: Instant,
}

/// A message the bot created, in its current state.
#[derive(Clone, Debug)]
pub struct StoredMessage {
    /// The snowflake returned to the bot.
    pub id: u64,
    /// The channel it lives in (a DM, or the interaction's channel).
    pub channel_id: u64,
    /// The text content; empty for a deferred response not yet edited.
    pub content: String,
    /// The `embeds` array as the bot last sent it.
    pub embeds: Value,
    /// The `components` array (action rows) as the bot last sent it.
    pub components: Value,
    /// Message flags: 64 ephemeral, 128 loading (a deferred response not yet edited).
    pub flags: u64,
    /// How many edits were applied.
    pub edits: usize,
}

impl FakeDiscord {
    /// The application id READY announces; commands and interaction webhooks live under it.
    pub const APPLICATION_ID: u64 = 1_100_000_000_000_000_001;
    /// The bot user's id, the author of every message it sends.
    pub const BOT_USER_ID: u64 = 1_100_000_000_000_000_002;
    /// The guild in which `invoke` runs commands.
    pub const GUILD_ID: u64 = 1_100_000_000_000_000_003;
    /// The guild text channel in which `invoke` runs commands.
    pub const CHANNEL_ID: u64 = 1_100_000_000_000_000_004;

    /// Binds a loopback port, then serves REST and gateway from a spawned task.
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port is free for the fake Discord");
        let port = listener
            .local_addr()
            .expect("a bound listener has an address")
            .port();
        let (changes, _) = watch::channel(0);
        let shared = Arc::new(Shared {
            port,
            model: Mutex::new(Model::default()),
            changes,
        });
        let app = Router::new()
            .route("/gateway", get(open_gateway))
            .fallback(answer_rest)
            .with_state(Arc::clone(&shared));
        tokio::spawn(async move {
            axum::serve(listener, app)
                .await
                .expect("the fake Discord serves until the test ends");
        });
        Self { shared }
    }

    /// The base URL to give serenity's `HttpBuilder::proxy` (`DISCORD_API_BASE`).
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.shared.port)
    }

    /// Resolves once the current gateway connection is usable: the client identified and got
    /// READY, or resumed and got RESUMED. Wrap it in `tokio::time::timeout`.
    pub async fn wait_ready(&self) {
        self.shared
            .wait_until(|model| model.ready_connection().map(|_| ()))
            .await;
    }

    /// Resolves once at least `n` commands are registered, global and guild together, and
    /// returns them (global first) as Discord would.
    pub async fn wait_commands(&self, n: usize) -> Vec<Value> {
        self.shared
            .wait_until(|model| {
                let commands = model.all_commands();
                (commands.len() >= n).then_some(commands)
            })
            .await
    }

    /// The `d` of every IDENTIFY received, in order (token, intents, shard, properties…).
    pub fn identify_payloads(&self) -> Vec<Value> {
        self.shared.model().identifies.clone()
    }

    /// Sends an INTERACTION_CREATE for a slash command over the current gateway connection.
    ///
    /// `options` is the `data.options` array (`Null` means none). The command runs in
    /// `GUILD_ID`/`CHANNEL_ID`, invoked by a member whose user is `user_id`; `data.id` is the
    /// registered command's id when one has that name. Waits for a ready connection first.
    pub async fn invoke(&self, command: &str, user_id: u64, options: Value) -> InvokedInteraction {
        let (invoked, payload) = {
            let mut model = self.shared.model();
            let id = model.next_id();
            let command_id = model.command_id(command);
            let token = random_string(70);
            model.interactions.push(InteractionRecord {
                id,
                token: token.clone(),
                callback: None,
                original: None,
                followups: Vec::new(),
            });
            let payload = interaction_json(id, &token, command_id, command, user_id, options);
            (InvokedInteraction { id, token }, payload)
        };

        loop {
            let (connection_id, outbound) = self
                .shared
                .wait_until(|model| model.ready_connection())
                .await;
            let dispatch = Outbound::Dispatch {
                event: "INTERACTION_CREATE",
                data: payload.clone(),
            };
            if outbound.send(dispatch).is_ok() {
                return invoked;
            }
            // The connection ended after it was looked up; wait for the client's next one.
            self.shared.forget_connection(connection_id);
        }
    }

    /// Makes message sends to `user_id`'s DM channel fail as when the user has DMs closed:
    /// HTTP 403 with Discord code 50007.
    pub fn close_dms(&self, user_id: u64) {
        self.shared.model().closed_dms.insert(user_id);
    }

    /// Makes the next `count` `POST /channels/{id}/messages` answer `status` instead, whatever
    /// the channel. A 429 carries Discord's rate-limit body and a `Retry-After` header.
    pub fn fail_next_messages(&self, status: u16, count: usize) {
        let status = StatusCode::from_u16(status).expect("fail_next_messages takes an HTTP status");
        let mut model = self.shared.model();
        model.failures.extend(std::iter::repeat_n(status, count));
    }

    /// Makes the next `count` gateway lookups (`GET /gateway` and `/gateway/bot`) answer
    /// `status` instead of the gateway address, as when Discord or a proxy is failing.
    pub fn fail_next_gateway_lookups(&self, status: u16, count: usize) {
        let status = StatusCode::from_u16(status).expect("a gateway failure is an HTTP status");
        let mut model = self.shared.model();
        model
            .gateway_failures
            .extend(std::iter::repeat_n(status, count));
    }

    /// Every REST call received so far, in order.
    pub fn calls(&self) -> Vec<RecordedCall> {
        self.shared.model().calls.clone()
    }

    /// The first call matching `pred`, already received or still to come. The fake's state
    /// already reflects the call when this resolves. Wrap it in `tokio::time::timeout`.
    pub async fn wait_for_call(&self, pred: impl Fn(&RecordedCall) -> bool) -> RecordedCall {
        self.shared
            .wait_until(|model| model.calls.iter().find(|call| pred(call)).cloned())
            .await
    }

    /// The DM channel the bot opened with `user_id`, if it did.
    pub fn dm_channel_of(&self, user_id: u64) -> Option<u64> {
        self.shared.model().dm_channels.get(&user_id).copied()
    }

    /// Messages the bot posted to `channel_id` through `/channels/{id}/messages`, oldest
    /// first, edits applied, deleted ones gone. Interaction responses are not included.
    pub fn messages_in(&self, channel_id: u64) -> Vec<StoredMessage> {
        let model = self.shared.model();
        let in_channel = model.messages.iter().filter(|m| m.channel_id == channel_id);
        in_channel.cloned().collect()
    }

    /// The body of the interaction's callback (`{"type": 5, "data": {…}}`), if it was answered.
    pub fn interaction_response(&self, interaction_token: &str) -> Option<Value> {
        let model = self.shared.model();
        model.interaction(interaction_token)?.callback.clone()
    }

    /// The interaction's original response (`@original`) with edits applied, if there is one.
    pub fn original_response(&self, interaction_token: &str) -> Option<StoredMessage> {
        let model = self.shared.model();
        model.interaction(interaction_token)?.original.clone()
    }

    /// The interaction's follow-up messages, oldest first, edits applied.
    pub fn followups(&self, interaction_token: &str) -> Vec<StoredMessage> {
        let model = self.shared.model();
        let record = model.interaction(interaction_token);
        record.map(|r| r.followups.clone()).unwrap_or_default()
    }

    /// Closes the current gateway connection with code 4000, which serenity answers by
    /// reconnecting and resuming. Until a new connection is ready, `wait_ready` waits and
    /// `invoke` holds its event.
    pub async fn disconnect(&self) {
        let connection = self.shared.model().connection.take();
        self.shared.changed();
        let Some(connection) = connection else {
            return;
        };
        let (done, closed) = oneshot::channel();
        if connection.outbound.send(Outbound::Close(done)).is_ok() {
            // An error only means the connection ended on its own meanwhile.
            closed.await.ok();
        }
    }
}

/// State shared by the handle, the REST handler and the gateway connections.
struct Shared {
    port: u16,
    model: Mutex<Model>,
    /// Bumped after every change to `model`; waiters re-check their condition on each bump.
    changes: watch::Sender<u64>,
}

impl Shared {
    fn model(&self) -> MutexGuard<'_, Model> {
        self.model
            .lock()
            .expect("no panic while the fake Discord's state is locked")
    }

    fn changed(&self) {
        self.changes
            .send_modify(|version| *version = version.wrapping_add(1));
    }

    /// Resolves with the first `Some` that `check` returns, re-checking after each change.
    async fn wait_until<T>(&self, mut check: impl FnMut(&mut Model) -> Option<T>) -> T {
        // Subscribing before the check means a change made in between still wakes us.
        let mut changes = self.changes.subscribe();
        loop {
            let found = check(&mut self.model());
            if let Some(found) = found {
                return found;
            }
            changes
                .changed()
                .await
                .expect("the sender lives in Shared, which the waiter holds");
        }
    }

    fn forget_connection(&self, connection_id: u64) {
        {
            let mut model = self.model();
            if model
                .connection
                .as_ref()
                .is_some_and(|c| c.id == connection_id)
            {
                model.connection = None;
            }
        }
        self.changed();
    }
}

/// Everything the fake knows: what Discord would store, plus what tests scripted.
#[derive(Default)]
struct Model {
    last_id: u64,
    calls: Vec<RecordedCall>,
    identifies: Vec<Value>,
    sessions: HashSet<String>,
    /// The newest gateway connection; injected events go to it.
    connection: Option<Connection>,
    global_commands: Vec<Value>,
    guild_commands: BTreeMap<u64, Vec<Value>>,
    /// user id → DM channel id.
    dm_channels: HashMap<u64, u64>,
    closed_dms: HashSet<u64>,
    failures: VecDeque<StatusCode>,
    gateway_failures: VecDeque<StatusCode>,
    /// Channel messages in creation order.
    messages: Vec<StoredMessage>,
    interactions: Vec<InteractionRecord>,
}

/// The current gateway connection, as seen from outside its task.
struct Connection {
    id: u64,
    outbound: mpsc::UnboundedSender<Outbound>,
    is_ready: bool,
}

enum Outbound {
    Dispatch { event: &'static str, data: Value },
    Close(oneshot::Sender<()>),
}

struct InteractionRecord {
    id: u64,
    token: String,
    callback: Option<Value>,
    original: Option<StoredMessage>,
    followups: Vec<StoredMessage>,
}

impl Model {
    /// A fresh snowflake: current time in its top bits, strictly increasing.
    fn next_id(&mut self) -> u64 {
        let now_ms = u64::try_from(Utc::now().timestamp_millis()).expect("the clock is past 1970");
        let from_clock = (now_ms - DISCORD_EPOCH_MS) << 22;
        self.last_id = from_clock.max(self.last_id + 1);
        self.last_id
    }

    fn ready_connection(&self) -> Option<(u64, mpsc::UnboundedSender<Outbound>)> {
        let connection = self.connection.as_ref().filter(|c| c.is_ready)?;
        Some((connection.id, connection.outbound.clone()))
    }

    fn all_commands(&self) -> Vec<Value> {
        let guild = self.guild_commands.values().flatten();
        self.global_commands.iter().chain(guild).cloned().collect()
    }

    fn command_id(&mut self, name: &str) -> u64 {
        let registered = self.all_commands().into_iter().find(|c| c["name"] == name);
        let id = registered.and_then(|c| c["id"].as_str().and_then(|id| id.parse().ok()));
        id.unwrap_or_else(|| self.next_id())
    }

    fn interaction(&self, token: &str) -> Option<&InteractionRecord> {
        self.interactions.iter().find(|r| r.token == token)
    }

    fn commands(&mut self, method: &str, guild_id: Option<u64>, body: &Value) -> Response {
        match method {
            "GET" => Json(self.command_list(guild_id).clone()).into_response(),
            "PUT" => {
                let Some(entries) = body.as_array() else {
                    return invalid_form_body();
                };
                let mut commands = Vec::new();
                for entry in entries {
                    let Some(command) = self.build_command(guild_id, entry) else {
                        return invalid_form_body();
                    };
                    commands.push(command);
                }
                self.command_list(guild_id).clone_from(&commands);
                Json(commands).into_response()
            }
            "POST" => {
                let Some(command) = self.build_command(guild_id, body) else {
                    return invalid_form_body();
                };
                let list = self.command_list(guild_id);
                let status = match list.iter_mut().find(|c| c["id"] == command["id"]) {
                    Some(existing) => {
                        existing.clone_from(&command);
                        StatusCode::OK
                    }
                    None => {
                        list.push(command.clone());
                        StatusCode::CREATED
                    }
                };
                (status, Json(command)).into_response()
            }
            _ => not_found(),
        }
    }

    fn command_list(&mut self, guild_id: Option<u64>) -> &mut Vec<Value> {
        match guild_id {
            Some(guild_id) => self.guild_commands.entry(guild_id).or_default(),
            None => &mut self.global_commands,
        }
    }

    /// The stored form of a registered command. Like Discord, re-registering a name (and
    /// type) keeps its id. `None` when the body has no name.
    fn build_command(&mut self, guild_id: Option<u64>, body: &Value) -> Option<Value> {
        let fields = body.as_object()?;
        let name = fields.get("name")?.as_str()?;
        let kind = fields.get("type").and_then(Value::as_u64).unwrap_or(1);
        let existing = self
            .command_list(guild_id)
            .iter()
            .find(|c| c["name"] == name && c["type"] == kind)
            .map(|c| c["id"].clone());
        let id = existing.unwrap_or_else(|| json!(self.next_id().to_string()));

        let mut command = json!({
            "description": "",
            "options": [],
            "default_member_permissions": null,
            "dm_permission": true,
            "nsfw": false,
        });
        for (key, value) in fields {
            command[key] = value.clone();
        }
        command["id"] = id;
        command["type"] = json!(kind);
        command["application_id"] = json!(FakeDiscord::APPLICATION_ID.to_string());
        command["version"] = json!(self.next_id().to_string());
        if let Some(guild_id) = guild_id {
            command["guild_id"] = json!(guild_id.to_string());
        }
        Some(command)
    }

    fn answer_interaction(&mut self, id: &str, token: &str, body: &Value) -> Response {
        let found = self
            .interactions
            .iter()
            .position(|r| r.id.to_string() == id && r.token == token);
        let Some(index) = found else {
            return discord_error(StatusCode::NOT_FOUND, 10062, "Unknown interaction");
        };
        if self.interactions[index].callback.is_some() {
            let message = "Interaction has already been acknowledged.";
            return discord_error(StatusCode::BAD_REQUEST, 40060, message);
        }

        let message_id = self.next_id();
        let data = &body["data"];
        let original = match body["type"].as_u64() {
            Some(4) => Some(StoredMessage::from_body(
                message_id,
                FakeDiscord::CHANNEL_ID,
                data,
            )),
            Some(5) => {
                // A deferred response shows as an empty "thinking" message until edited.
                let empty = json!({ "flags": data["flags"].as_u64().unwrap_or(0) | LOADING });
                Some(StoredMessage::from_body(
                    message_id,
                    FakeDiscord::CHANNEL_ID,
                    &empty,
                ))
            }
            _ => None,
        };
        let record = &mut self.interactions[index];
        record.callback = Some(body.clone());
        record.original = original;
        StatusCode::NO_CONTENT.into_response()
    }

    fn create_followup(&mut self, token: &str, body: &Value) -> Response {
        let message_id = self.next_id();
        let record = self.interactions.iter_mut().find(|r| r.token == token);
        // The interaction's webhook exists only once the interaction has been answered.
        let Some(record) = record.filter(|r| r.callback.is_some()) else {
            return discord_error(StatusCode::NOT_FOUND, 10015, "Unknown Webhook");
        };
        if is_empty_message(body) {
            return empty_message();
        }
        let message = StoredMessage::from_body(message_id, FakeDiscord::CHANNEL_ID, body);
        let reply = message.to_json(CHAT_INPUT_COMMAND_MESSAGE);
        record.followups.push(message);
        Json(reply).into_response()
    }

    /// `GET`, `PATCH` or `DELETE` on `@original` or on a follow-up, by message id.
    fn webhook_message(
        &mut self,
        method: &str,
        token: &str,
        message: &str,
        body: &Value,
    ) -> Response {
        let Some(record) = self.interactions.iter_mut().find(|r| r.token == token) else {
            return discord_error(StatusCode::NOT_FOUND, 10015, "Unknown Webhook");
        };
        let wanted = match message {
            "@original" => record.original.as_ref().map(|m| m.id),
            id => id.parse::<u64>().ok(),
        };
        let target = record
            .original
            .iter_mut()
            .chain(record.followups.iter_mut())
            .find(|m| Some(m.id) == wanted);
        let Some(target) = target else {
            return unknown_message();
        };

        match method {
            "GET" => Json(target.to_json(CHAT_INPUT_COMMAND_MESSAGE)).into_response(),
            "PATCH" => {
                target.apply_edit(body);
                Json(target.to_json(CHAT_INPUT_COMMAND_MESSAGE)).into_response()
            }
            "DELETE" => {
                let id = target.id;
                if record.original.as_ref().is_some_and(|m| m.id == id) {
                    record.original = None;
                }
                record.followups.retain(|m| m.id != id);
                StatusCode::NO_CONTENT.into_response()
            }
            _ => not_found(),
        }
    }

    fn open_dm(&mut self, body: &Value) -> Response {
        let recipient = &body["recipient_id"];
        let user_id = recipient
            .as_u64()
            .or_else(|| recipient.as_str()?.parse().ok());
        let Some(user_id) = user_id else {
            return invalid_form_body();
        };
        let channel_id = match self.dm_channels.get(&user_id) {
            Some(&channel_id) => channel_id,
            None => {
                let channel_id = self.next_id();
                self.dm_channels.insert(user_id, channel_id);
                channel_id
            }
        };
        let last_message = self
            .messages
            .iter()
            .rev()
            .find(|m| m.channel_id == channel_id);
        Json(json!({
            "id": channel_id.to_string(),
            "type": 1,
            "last_message_id": last_message.map(|m| m.id.to_string()),
            "flags": 0,
            "recipients": [user_json(user_id)],
        }))
        .into_response()
    }

    fn create_message(&mut self, channel_id: u64, body: &Value) -> Response {
        if let Some(status) = self.failures.pop_front() {
            return scripted_failure(status);
        }
        let recipient = self
            .dm_channels
            .iter()
            .find(|&(_, &c)| c == channel_id)
            .map(|(&u, _)| u);
        if recipient.is_none() && channel_id != FakeDiscord::CHANNEL_ID {
            return discord_error(StatusCode::NOT_FOUND, 10003, "Unknown Channel");
        }
        if recipient.is_some_and(|user_id| self.closed_dms.contains(&user_id)) {
            let message = "Cannot send messages to this user";
            return discord_error(StatusCode::FORBIDDEN, 50007, message);
        }
        if is_empty_message(body) {
            return empty_message();
        }

        let message = StoredMessage::from_body(self.next_id(), channel_id, body);
        let reply = message.to_json(DEFAULT_MESSAGE);
        self.messages.push(message);
        Json(reply).into_response()
    }

    fn channel_message(
        &mut self,
        method: &str,
        channel_id: u64,
        id: u64,
        body: &Value,
    ) -> Response {
        let found = self
            .messages
            .iter()
            .position(|m| m.channel_id == channel_id && m.id == id);
        let Some(index) = found else {
            return unknown_message();
        };
        match method {
            "GET" => Json(self.messages[index].to_json(DEFAULT_MESSAGE)).into_response(),
            "PATCH" => {
                self.messages[index].apply_edit(body);
                Json(self.messages[index].to_json(DEFAULT_MESSAGE)).into_response()
            }
            "DELETE" => {
                self.messages.remove(index);
                StatusCode::NO_CONTENT.into_response()
            }
            _ => not_found(),
        }
    }
}

impl StoredMessage {
    fn from_body(id: u64, channel_id: u64, body: &Value) -> Self {
        Self {
            id,
            channel_id,
            content: body["content"].as_str().unwrap_or_default().to_owned(),
            embeds: array_or_empty(&body["embeds"]),
            components: array_or_empty(&body["components"]),
            flags: body["flags"].as_u64().unwrap_or(0),
            edits: 0,
        }
    }

    /// Applies an edit: fields sent replace the stored ones, absent fields stay.
    fn apply_edit(&mut self, body: &Value) {
        if let Some(content) = body.get("content") {
            self.content = content.as_str().unwrap_or_default().to_owned();
        }
        if let Some(embeds) = body.get("embeds") {
            self.embeds = array_or_empty(embeds);
        }
        if let Some(components) = body.get("components") {
            self.components = array_or_empty(components);
        }
        // Discord lets an edit toggle only SUPPRESS_EMBEDS; the first edit ends "loading".
        if let Some(flags) = body.get("flags").and_then(Value::as_u64) {
            self.flags = (self.flags & !SUPPRESS_EMBEDS) | (flags & SUPPRESS_EMBEDS);
        }
        self.flags &= !LOADING;
        self.edits += 1;
    }

    /// The full message object serenity's `Message` deserializes; the author is the bot.
    fn to_json(&self, kind: u64) -> Value {
        let mut message = json!({
            "id": self.id.to_string(),
            "channel_id": self.channel_id.to_string(),
            "author": bot_user_json(),
            "content": self.content,
            "timestamp": snowflake_time(self.id),
            "edited_timestamp": (self.edits > 0).then(now_rfc3339),
            "tts": false,
            "mention_everyone": false,
            "mentions": [],
            "mention_roles": [],
            "mention_channels": [],
            "attachments": [],
            "embeds": self.embeds,
            "components": self.components,
            "reactions": [],
            "pinned": false,
            "type": kind,
            "flags": self.flags,
        });
        if kind == CHAT_INPUT_COMMAND_MESSAGE {
            // Interaction responses are sent through the application's webhook.
            message["webhook_id"] = json!(FakeDiscord::APPLICATION_ID.to_string());
            message["application_id"] = json!(FakeDiscord::APPLICATION_ID.to_string());
        }
        message
    }
}

/// The REST side: records the call and answers it under one lock, so a waiter woken by the
/// call already sees its effect.
async fn answer_rest(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body = if body.is_empty() {
        Value::Null
    } else {
        // Limitation: multipart bodies (messages with files) are kept as a string, so their
        // payload_json is not applied; parse the payload_json part if the bot sends files.
        let text = || Value::String(String::from_utf8_lossy(&body).into_owned());
        serde_json::from_slice(&body).unwrap_or_else(|_| text())
    };
    let authorization = headers.get(header::AUTHORIZATION);
    let call = RecordedCall {
        method: method.as_str().to_owned(),
        path: uri.path().to_owned(),
        body,
        authorization: authorization
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        at: Instant::now(),
    };

    let response = {
        let mut model = shared.model();
        let response = route(&mut model, shared.port, &call);
        model.calls.push(call);
        response
    };
    shared.changed();
    response
}

fn route(model: &mut Model, port: u16, call: &RecordedCall) -> Response {
    let Some(path) = call.path.strip_prefix("/api/v10/") else {
        return not_found();
    };
    let segments: Vec<&str> = path.split('/').collect();
    let app = FakeDiscord::APPLICATION_ID.to_string();
    let body = &call.body;

    if call.method == "GET" && segments.first() == Some(&"gateway") {
        if let Some(status) = model.gateway_failures.pop_front() {
            return scripted_failure(status);
        }
    }
    match (call.method.as_str(), segments.as_slice()) {
        ("GET", ["gateway"]) => Json(json!({ "url": gateway_url(port) })).into_response(),
        ("GET", ["gateway", "bot"]) => Json(json!({
            "url": gateway_url(port),
            "shards": 1,
            "session_start_limit": {
                "total": 1000,
                "remaining": 1000,
                "reset_after": 0,
                "max_concurrency": 1,
            },
        }))
        .into_response(),
        ("GET", ["users", "@me"]) => Json(bot_user_json()).into_response(),
        ("GET", ["oauth2", "applications", "@me"]) => Json(application_json()).into_response(),
        (method, ["applications", app_id, "commands"]) if *app_id == app => {
            model.commands(method, None, body)
        }
        (method, ["applications", app_id, "guilds", guild_id, "commands"]) if *app_id == app => {
            match guild_id.parse() {
                Ok(guild_id) => model.commands(method, Some(guild_id), body),
                Err(_) => not_found(),
            }
        }
        ("POST", ["interactions", id, token, "callback"]) => {
            model.answer_interaction(id, token, body)
        }
        ("POST", ["webhooks", app_id, token]) if *app_id == app => {
            model.create_followup(token, body)
        }
        (method, ["webhooks", app_id, token, "messages", message]) if *app_id == app => {
            model.webhook_message(method, token, message, body)
        }
        ("POST", ["users", "@me", "channels"]) => model.open_dm(body),
        ("POST", ["channels", channel_id, "messages"]) => match channel_id.parse() {
            Ok(channel_id) => model.create_message(channel_id, body),
            Err(_) => not_found(),
        },
        (method, ["channels", channel_id, "messages", message_id]) => {
            match (channel_id.parse(), message_id.parse()) {
                (Ok(channel_id), Ok(id)) => model.channel_message(method, channel_id, id, body),
                _ => not_found(),
            }
        }
        _ => not_found(),
    }
}

async fn open_gateway(State(shared): State<Arc<Shared>>, upgrade: WebSocketUpgrade) -> Response {
    upgrade.on_upgrade(move |socket| serve_connection(shared, socket))
}

/// One gateway connection: HELLO, then client frames and injected events until either side
/// closes. A new connection becomes the current one; the one it replaces keeps being served
/// but receives no injected events.
async fn serve_connection(shared: Arc<Shared>, mut socket: WebSocket) {
    let (outbound, mut injected) = mpsc::unbounded_channel();
    let connection_id = {
        let mut model = shared.model();
        let id = model.next_id();
        model.connection = Some(Connection {
            id,
            outbound,
            is_ready: false,
        });
        id
    };
    shared.changed();

    let mut seq = 0;
    let hello = json!({ "op": 10, "d": { "heartbeat_interval": HEARTBEAT_INTERVAL_MS } });
    let mut is_open = send_json(&mut socket, &hello).await;
    let mut is_current = true;
    while is_open {
        tokio::select! {
            frame = socket.recv() => {
                is_open = match frame {
                    Some(Ok(Message::Text(text))) => {
                        let frame = serde_json::from_str(text.as_str()).unwrap_or(Value::Null);
                        answer_frame(&shared, connection_id, &mut socket, &mut seq, &frame).await
                    }
                    // After a Close, reading on lets the socket send its reply Close frame.
                    Some(Ok(_)) => true,
                    Some(Err(_)) | None => false,
                };
            }
            command = injected.recv(), if is_current => match command {
                Some(Outbound::Dispatch { event, data }) => {
                    is_open = send_dispatch(&mut socket, &mut seq, event, data).await;
                }
                Some(Outbound::Close(done)) => {
                    let frame = CloseFrame {
                        code: CLOSE_RECONNECT,
                        reason: "fake Discord disconnect".into(),
                    };
                    socket.send(Message::Close(Some(frame))).await.ok();
                    done.send(()).ok();
                    // Read until the client's reply Close completes the closing handshake.
                    while let Some(Ok(_)) = socket.recv().await {}
                    is_open = false;
                }
                // A newer connection took over the sender.
                None => is_current = false,
            },
        }
    }
    shared.forget_connection(connection_id);
}

/// Answers one client frame; returns whether the socket is still usable.
async fn answer_frame(
    shared: &Shared,
    connection_id: u64,
    socket: &mut WebSocket,
    seq: &mut u64,
    frame: &Value,
) -> bool {
    let data = &frame["d"];
    match frame["op"].as_u64() {
        Some(1) => send_json(socket, &json!({ "op": 11 })).await,
        Some(2) => {
            let session_id = random_string(32);
            {
                let mut model = shared.model();
                model.identifies.push(data.clone());
                model.sessions.insert(session_id.clone());
            }
            let shard = data.get("shard").cloned().unwrap_or(json!([0, 1]));
            let ready = json!({
                "v": 10,
                "user": bot_user_json(),
                "guilds": [],
                "session_id": session_id,
                "resume_gateway_url": gateway_url(shared.port),
                "shard": shard,
                "application": { "id": FakeDiscord::APPLICATION_ID.to_string(), "flags": 0 },
            });
            let is_sent = send_dispatch(socket, seq, "READY", ready).await;
            mark_ready(shared, connection_id);
            is_sent
        }
        Some(6) => {
            let session_id = data["session_id"].as_str().unwrap_or_default();
            let is_known = shared.model().sessions.contains(session_id);
            if !is_known {
                // Invalid session, not resumable: the client identifies again.
                return send_json(socket, &json!({ "op": 9, "d": false })).await;
            }
            *seq = data["seq"].as_u64().unwrap_or(0);
            let is_sent = send_dispatch(socket, seq, "RESUMED", json!({})).await;
            mark_ready(shared, connection_id);
            is_sent
        }
        // Presence, voice state and member requests need no answer here.
        _ => true,
    }
}

fn mark_ready(shared: &Shared, connection_id: u64) {
    {
        let mut model = shared.model();
        let current = model.connection.as_mut().filter(|c| c.id == connection_id);
        if let Some(connection) = current {
            connection.is_ready = true;
        }
    }
    shared.changed();
}

async fn send_dispatch(socket: &mut WebSocket, seq: &mut u64, event: &str, data: Value) -> bool {
    *seq += 1;
    let dispatch = json!({ "op": 0, "s": *seq, "t": event, "d": data });
    send_json(socket, &dispatch).await
}

async fn send_json(socket: &mut WebSocket, payload: &Value) -> bool {
    let text = payload.to_string();
    socket.send(Message::Text(text.into())).await.is_ok()
}

fn interaction_json(
    id: u64,
    token: &str,
    command_id: u64,
    command: &str,
    user_id: u64,
    options: Value,
) -> Value {
    let options = if options.is_null() {
        json!([])
    } else {
        options
    };
    let guild_id = FakeDiscord::GUILD_ID.to_string();
    let channel_id = FakeDiscord::CHANNEL_ID.to_string();
    json!({
        "id": id.to_string(),
        "application_id": FakeDiscord::APPLICATION_ID.to_string(),
        "type": 2,
        "token": token,
        "version": 1,
        "locale": "en-US",
        "guild_locale": "en-US",
        "entitlements": [],
        "attachment_size_limit": 10_485_760,
        "app_permissions": PERMISSIONS,
        "authorizing_integration_owners": { "0": guild_id },
        "context": 0,
        "guild_id": guild_id,
        "channel_id": channel_id,
        "channel": {
            "id": channel_id,
            "type": 0,
            "name": "general",
            "guild_id": guild_id,
            "permissions": PERMISSIONS,
        },
        "member": {
            "user": user_json(user_id),
            "nick": null,
            "avatar": null,
            "roles": [],
            "joined_at": now_rfc3339(),
            "premium_since": null,
            "deaf": false,
            "mute": false,
            "flags": 0,
            "pending": false,
            "permissions": PERMISSIONS,
        },
        "data": { "id": command_id.to_string(), "name": command, "type": 1, "options": options },
    })
}

fn bot_user_json() -> Value {
    json!({
        "id": FakeDiscord::BOT_USER_ID.to_string(),
        "username": "linkbot",
        "discriminator": "0",
        "global_name": null,
        "avatar": null,
        "bot": true,
        "system": false,
        "mfa_enabled": false,
        "verified": true,
        "email": null,
        "flags": 0,
        "public_flags": 0,
    })
}

fn user_json(user_id: u64) -> Value {
    json!({
        "id": user_id.to_string(),
        "username": format!("user{user_id}"),
        "discriminator": "0",
        "global_name": format!("User {user_id}"),
        "avatar": null,
        "public_flags": 0,
    })
}

fn application_json() -> Value {
    json!({
        "id": FakeDiscord::APPLICATION_ID.to_string(),
        "name": "linkbot",
        "icon": null,
        "description": "",
        "rpc_origins": [],
        "bot_public": false,
        "bot_require_code_grant": false,
        "owner": bot_user_json(),
        "verify_key": "0".repeat(64),
        "team": null,
        "flags": 0,
        "bot": bot_user_json(),
    })
}

fn gateway_url(port: u16) -> String {
    // No query string: serenity appends `?v=10` itself.
    format!("ws://127.0.0.1:{port}/gateway")
}

fn is_empty_message(body: &Value) -> bool {
    let is_blank = |field: &str| match &body[field] {
        Value::String(text) => text.is_empty(),
        Value::Array(items) => items.is_empty(),
        _ => true,
    };
    is_blank("content") && is_blank("embeds") && is_blank("components")
}

fn array_or_empty(value: &Value) -> Value {
    if value.is_array() {
        value.clone()
    } else {
        json!([])
    }
}

fn snowflake_time(id: u64) -> String {
    let ms = i64::try_from((id >> 22) + DISCORD_EPOCH_MS).expect("snowflake times fit in i64");
    let time = DateTime::from_timestamp_millis(ms).expect("snowflake times are valid dates");
    time.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn now_rfc3339() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn random_string(len: usize) -> String {
    let chars = rand::thread_rng().sample_iter(&Alphanumeric).take(len);
    chars.map(char::from).collect()
}

fn discord_error(status: StatusCode, code: u32, message: &str) -> Response {
    (status, Json(json!({ "message": message, "code": code }))).into_response()
}

fn not_found() -> Response {
    discord_error(StatusCode::NOT_FOUND, 0, "404: Not Found")
}

fn unknown_message() -> Response {
    discord_error(StatusCode::NOT_FOUND, 10008, "Unknown Message")
}

fn empty_message() -> Response {
    discord_error(
        StatusCode::BAD_REQUEST,
        50006,
        "Cannot send an empty message",
    )
}

fn invalid_form_body() -> Response {
    discord_error(StatusCode::BAD_REQUEST, 50035, "Invalid Form Body")
}

fn scripted_failure(status: StatusCode) -> Response {
    if status == StatusCode::TOO_MANY_REQUESTS {
        // Discord's rate-limit body has no `code`; the header rounds `retry_after` up.
        let body = json!({
            "message": "You are being rate limited.",
            "retry_after": 0.5,
            "global": false,
        });
        let scope = HeaderName::from_static("x-ratelimit-scope");
        let headers = [(header::RETRY_AFTER, "1"), (scope, "user")];
        return (status, headers, Json(body)).into_response();
    }
    let reason = status.canonical_reason().unwrap_or("Error");
    discord_error(status, 0, &format!("{}: {reason}", status.as_u16()))
}
