//! The internal API over real HTTP against the real App (fake Microsoft and Discord behind it),
//! and the `linkbot api-key` and `linkbot token` commands against the same App.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use chrono::{TimeDelta, Utc};
use linkbot::domain::{Account, DiscordUserId, Secret};
use linkbot::store::api_keys::{self, Role};
use linkbot::store::audit;
use linkbot::store::links::{self, NewLink};
use reqwest::StatusCode;
use serde_json::Value;

use crate::support::PATIENCE;
use crate::support::app::{TestApp, spawn_app};
use crate::support::microsoft::{FakeUser, Reply};

const ADA: DiscordUserId = DiscordUserId::new(80351110224678912);
const BOB: DiscordUserId = DiscordUserId::new(80351110224678913);
const TOKEN_ROUTE: &str = "/v1/users/{discord_id}/token";

/// Stores a new key with `role` and returns it.
async fn key(app: &TestApp, name: &str, role: Role) -> String {
    let key = linkbot::cli::generate_api_key();
    api_keys::create(&app.state.store, name, role, &key, Utc::now())
        .await
        .expect("key is stored");
    key.expose().to_owned()
}

/// Links `user` as `who` through a real device flow and waits until the link is stored.
async fn link(app: &TestApp, user: DiscordUserId, who: &FakeUser) {
    let started = app
        .state
        .linking
        .start(user, None)
        .await
        .expect("flow starts");
    app.microsoft.approve(&started.prompt.user_code, who);
    let stored = async {
        loop {
            let status = links::status(&app.state.store, user)
                .await
                .expect("status reads");
            if status.is_some() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(PATIENCE, stored)
        .await
        .expect("the link is stored");
}

/// Writes a link directly, with an access token that expires after `lifetime` (negative: has
/// expired) and a refresh the background worker will not start during the test.
async fn insert_link(app: &TestApp, user: DiscordUserId, lifetime: TimeDelta) -> String {
    let now = Utc::now();
    let access_token = format!("seeded-access-{user}");
    let new = NewLink {
        user,
        account: Account {
            tenant_id: "5f3c9a7e-2b41-4d8e-9c06-7a1b3e5d2f84".into(),
            object_id: format!("00000000-0000-0000-0000-{:012}", user.get() % 1_000_000),
            username: format!("user{user}@contoso.example"),
            display_name: format!("User {user}"),
        },
        scopes: "User.Read openid profile email".into(),
        access_token: Secret::new(access_token.clone()),
        access_expires_at: now + lifetime,
        refresh_token: Secret::new(format!("seeded-refresh-{user}")),
        linked_at: now,
        next_refresh_at: now + TimeDelta::days(1),
    };
    let mut conn = app.state.store.pool().acquire().await.expect("connection");
    links::save_new(&mut conn, &app.state.store, &new)
        .await
        .expect("link is stored");
    access_token
}

async fn get(app: &TestApp, path: &str, key: Option<&str>) -> reqwest::Response {
    let mut request = app.client.get(format!("{}{path}", app.api));
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    request.send().await.expect("the API answers")
}

async fn delete(app: &TestApp, path: &str, key: &str) -> reqwest::Response {
    app.client
        .delete(format!("{}{path}", app.api))
        .bearer_auth(key)
        .send()
        .await
        .expect("the API answers")
}

/// Asserts an error answer's status and code and returns the response's headers.
async fn assert_error(
    response: reqwest::Response,
    status: StatusCode,
    code: &str,
) -> reqwest::header::HeaderMap {
    let headers = response.headers().clone();
    assert_eq!(response.status(), status);
    let body: Value = response.json().await.expect("error bodies are JSON");
    assert_eq!(body["error"], code, "{body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    headers
}

/// The audit events about `user`, once there are at least `n` of them. The API queues events
/// and stores them in batches, so they land shortly after the answer.
async fn audit_events(app: &TestApp, user: DiscordUserId, n: usize) -> Vec<audit::AuditEvent> {
    let since = Utc::now() - TimeDelta::hours(1);
    let stored = async {
        loop {
            let events = audit::for_subject(&app.state.store, &user.to_string(), since)
                .await
                .expect("audit reads");
            if events.len() >= n {
                return events;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(PATIENCE, stored)
        .await
        .expect("audit events are stored")
}

#[tokio::test]
async fn a_reader_gets_a_fresh_token_with_its_account_and_the_hand_out_is_audited() {
    let app = spawn_app().await;
    let ada = FakeUser::entra("ada");
    link(&app, ADA, &ada).await;
    let key = key(&app, "backup-cron", Role::Reader).await;

    let response = get(&app, &format!("/v1/users/{ADA}/token"), Some(&key)).await;

    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let body: Value = response.json().await.unwrap();
    let issued = app.microsoft.issued_access_tokens();
    assert_eq!(body["access_token"], issued.last().unwrap().as_str());
    assert_eq!(body["token_type"], "Bearer");
    let expires_in = body["expires_in"].as_i64().unwrap();
    assert!((3000..=3600).contains(&expires_in), "{expires_in}");
    let expires_at = chrono::DateTime::parse_from_rfc3339(body["expires_at"].as_str().unwrap())
        .expect("expires_at is RFC 3339");
    let left = expires_at.with_timezone(&Utc) - Utc::now();
    assert!((left.num_seconds() - expires_in).abs() <= 2);
    assert!(body["scope"].as_str().unwrap().contains("User.Read"));
    let account = &body["account"];
    assert_eq!(account["discord_id"], ADA.to_string());
    assert_eq!(account["username"], ada.username.as_str());
    assert_eq!(account["display_name"], ada.display_name.as_str());
    assert_eq!(account["tenant_id"], ada.tenant_id.as_str());
    assert_eq!(account["object_id"], ada.object_id.as_str());
    assert!(
        app.microsoft.refreshes().is_empty(),
        "a fresh token is served as stored"
    );

    let events = audit_events(&app, ADA, 1).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].actor, "key:backup-cron");
    assert_eq!(events[0].action, "token.issue");
    assert_eq!(events[0].subject, ADA.to_string());
    assert_eq!(events[0].detail, None);
    assert_eq!(events[0].outcome, "ok");
    app.stop().await;
}

#[tokio::test]
async fn a_key_in_use_gets_its_last_use_recorded() {
    let app = spawn_app().await;
    let key = key(&app, "status-page", Role::Reader).await;

    let response = get(&app, "/v1/users", Some(&key)).await;

    assert_eq!(response.status(), StatusCode::OK);
    let recorded = async {
        loop {
            let keys = api_keys::list(&app.state.store).await.unwrap();
            if keys[0].last_used_at.is_some() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(PATIENCE, recorded)
        .await
        .expect("last_used_at is written");
    app.stop().await;
}

#[tokio::test]
async fn requests_without_a_valid_key_are_401_with_a_bearer_challenge() {
    let app = spawn_app().await;
    insert_link(&app, ADA, TimeDelta::hours(1)).await;
    let path = format!("/v1/users/{ADA}/token");

    let missing = get(&app, &path, None).await;
    let headers = assert_error(missing, StatusCode::UNAUTHORIZED, "unauthorized").await;
    assert!(
        headers["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer")
    );

    let unknown = linkbot::cli::generate_api_key();
    let bad = get(&app, &path, Some(unknown.expose())).await;
    let headers = assert_error(bad, StatusCode::UNAUTHORIZED, "unauthorized").await;
    assert!(
        headers["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer")
    );

    let basic = app
        .client
        .get(format!("{}{path}", app.api))
        .basic_auth("user", Some("pass"))
        .send()
        .await
        .unwrap();
    assert_error(basic, StatusCode::UNAUTHORIZED, "unauthorized").await;
    let key = key(&app, "reader", Role::Reader).await;
    assert_eq!(get(&app, &path, Some(&key)).await.status(), StatusCode::OK);
    let events = audit_events(&app, ADA, 1).await;
    assert_eq!(
        events.len(),
        1,
        "refused requests are not audited: {events:?}"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_revoked_key_stops_working_at_once() {
    let app = spawn_app().await;
    insert_link(&app, ADA, TimeDelta::hours(1)).await;
    let key = key(&app, "old-script", Role::Admin).await;
    let path = format!("/v1/users/{ADA}/token");
    assert_eq!(get(&app, &path, Some(&key)).await.status(), StatusCode::OK);

    assert!(
        api_keys::revoke(&app.state.store, "old-script", Utc::now())
            .await
            .unwrap()
    );
    let after = get(&app, &path, Some(&key)).await;

    assert_error(after, StatusCode::UNAUTHORIZED, "unauthorized").await;
    app.stop().await;
}

#[tokio::test]
async fn a_reader_may_not_unlink_but_an_admin_may_and_it_is_audited() {
    let app = spawn_app().await;
    insert_link(&app, ADA, TimeDelta::hours(1)).await;
    let reader = key(&app, "reader", Role::Reader).await;
    let admin = key(&app, "ops", Role::Admin).await;
    let path = format!("/v1/users/{ADA}");

    let refused = delete(&app, &path, &reader).await;
    assert_error(refused, StatusCode::FORBIDDEN, "forbidden").await;
    assert!(
        links::status(&app.state.store, ADA)
            .await
            .unwrap()
            .is_some()
    );

    let done = delete(&app, &path, &admin).await;
    assert_eq!(done.status(), StatusCode::NO_CONTENT);
    assert!(
        links::status(&app.state.store, ADA)
            .await
            .unwrap()
            .is_none()
    );
    let events = audit_events(&app, ADA, 1).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].actor, "key:ops");
    assert_eq!(events[0].action, "link.delete");
    assert_eq!(events[0].outcome, "ok");

    let again = delete(&app, &path, &admin).await;
    assert_error(again, StatusCode::NOT_FOUND, "not_linked").await;
    let token = get(&app, &format!("{path}/token"), Some(&reader)).await;
    assert_error(token, StatusCode::NOT_FOUND, "not_linked").await;
    app.stop().await;
}

#[tokio::test]
async fn an_unlinked_user_is_404_not_linked_and_not_audited() {
    let app = spawn_app().await;
    let key = key(&app, "reader", Role::Reader).await;

    let token = get(&app, &format!("/v1/users/{BOB}/token"), Some(&key)).await;
    assert_error(token, StatusCode::NOT_FOUND, "not_linked").await;
    let status = get(&app, &format!("/v1/users/{BOB}"), Some(&key)).await;
    assert_error(status, StatusCode::NOT_FOUND, "not_linked").await;

    // Events are stored in order, so once a later one is in, an earlier one would be too.
    insert_link(&app, ADA, TimeDelta::hours(1)).await;
    get(&app, &format!("/v1/users/{ADA}/token"), Some(&key)).await;
    audit_events(&app, ADA, 1).await;
    assert!(audit_events(&app, BOB, 0).await.is_empty());
    app.stop().await;
}

#[tokio::test]
async fn force_true_refreshes_a_token_that_is_still_fresh() {
    let app = spawn_app().await;
    link(&app, ADA, &FakeUser::entra("ada")).await;
    let key = key(&app, "reader", Role::Reader).await;
    let path = format!("/v1/users/{ADA}/token");
    let first: Value = get(&app, &path, Some(&key)).await.json().await.unwrap();
    assert!(app.microsoft.refreshes().is_empty());

    let forced = get(&app, &format!("{path}?force=true"), Some(&key)).await;

    assert_eq!(forced.status(), StatusCode::OK);
    let forced: Value = forced.json().await.unwrap();
    assert_eq!(app.microsoft.refreshes().len(), 1);
    assert_ne!(forced["access_token"], first["access_token"]);
    assert_eq!(
        forced["access_token"],
        app.microsoft
            .issued_access_tokens()
            .last()
            .unwrap()
            .as_str()
    );
    let unforced = get(&app, &format!("{path}?force=false"), Some(&key)).await;
    assert_eq!(unforced.status(), StatusCode::OK);
    assert_eq!(app.microsoft.refreshes().len(), 1);
    app.stop().await;
}

#[tokio::test]
async fn min_valid_is_honoured() {
    let app = spawn_app().await;
    // Linked with a 20-minute token; refreshes then mint the usual hour.
    app.microsoft.set_access_token_lifetime(1200);
    link(&app, ADA, &FakeUser::entra("ada")).await;
    app.microsoft.set_access_token_lifetime(3599);
    let key = key(&app, "reader", Role::Reader).await;
    let path = format!("/v1/users/{ADA}/token");

    let default = get(&app, &path, Some(&key)).await;
    assert_eq!(default.status(), StatusCode::OK);
    let default: Value = default.json().await.unwrap();
    assert!(default["expires_in"].as_i64().unwrap() <= 1200);
    assert!(
        app.microsoft.refreshes().is_empty(),
        "20 minutes left covers the default of 300 s"
    );

    let long = get(&app, &format!("{path}?min_valid=1800"), Some(&key)).await;

    assert_eq!(long.status(), StatusCode::OK);
    let long: Value = long.json().await.unwrap();
    assert_eq!(app.microsoft.refreshes().len(), 1);
    assert!(long["expires_in"].as_i64().unwrap() >= 1800, "{long}");
    let again = get(&app, &format!("{path}?min_valid=1800"), Some(&key)).await;
    assert_eq!(again.status(), StatusCode::OK);
    assert_eq!(
        app.microsoft.refreshes().len(),
        1,
        "the refreshed token is long enough"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_token_for_another_scope_is_minted_from_the_same_link_and_audited_with_it() {
    let app = spawn_app().await;
    link(&app, ADA, &FakeUser::entra("ada")).await;
    let key = key(&app, "reports", Role::Reader).await;
    let scope = "api://reports.example/.default";

    let response = app
        .client
        .get(format!("{}/v1/users/{ADA}/token", app.api))
        .query(&[("scope", scope)])
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert!(
        body["scope"].as_str().unwrap().contains("reports.example"),
        "{body}"
    );
    let refreshes = app.microsoft.refreshes();
    assert_eq!(refreshes.len(), 1);
    assert!(refreshes[0].form["scope"].contains(scope));
    assert_eq!(
        body["access_token"],
        app.microsoft
            .issued_access_tokens()
            .last()
            .unwrap()
            .as_str()
    );
    let events = audit_events(&app, ADA, 1).await;
    assert_eq!(events[0].detail.as_deref(), Some(scope));
    assert_eq!(events[0].outcome, "ok");
    app.stop().await;
}

#[tokio::test]
async fn a_scope_the_user_never_consented_to_is_403_scope_refused() {
    let app = spawn_app().await;
    link(&app, ADA, &FakeUser::entra("ada")).await;
    let key = key(&app, "reader", Role::Reader).await;

    let refused = get(
        &app,
        &format!("/v1/users/{ADA}/token?scope=Mail.Send"),
        Some(&key),
    )
    .await;

    assert_error(refused, StatusCode::FORBIDDEN, "scope_refused").await;
    let plain = get(&app, &format!("/v1/users/{ADA}/token"), Some(&key)).await;
    assert_eq!(
        plain.status(),
        StatusCode::OK,
        "the link itself still works"
    );
    let events = audit_events(&app, ADA, 2).await;
    assert!(
        events.iter().any(|e| e.outcome == "scope_refused"),
        "{events:?}"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_grant_revoked_at_microsoft_is_409_relink_required() {
    let app = spawn_app().await;
    let ada = FakeUser::entra("ada");
    link(&app, ADA, &ada).await;
    let key = key(&app, "reader", Role::Reader).await;
    app.microsoft.revoke(&ada);
    let path = format!("/v1/users/{ADA}/token");

    let forced = get(&app, &format!("{path}?force=true"), Some(&key)).await;
    assert_error(forced, StatusCode::CONFLICT, "relink_required").await;
    let plain = get(&app, &path, Some(&key)).await;
    assert_error(plain, StatusCode::CONFLICT, "relink_required").await;

    let status: Value = get(&app, &format!("/v1/users/{ADA}"), Some(&key))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(status["state"], "relink_required");
    assert!(
        status["last_error"]
            .as_str()
            .unwrap()
            .contains("AADSTS50173")
    );
    let events = audit_events(&app, ADA, 2).await;
    assert!(
        events.iter().all(|e| e.outcome == "relink_required"),
        "{events:?}"
    );
    app.stop().await;
}

#[tokio::test]
async fn microsoft_down_with_no_valid_token_left_is_503_with_retry_after() {
    let app = spawn_app().await;
    insert_link(&app, ADA, TimeDelta::minutes(-1)).await;
    let key = key(&app, "reader", Role::Reader).await;
    app.microsoft
        .script_refresh([Reply::TooManyRequests { retry_after: 120 }]);

    let response = get(&app, &format!("/v1/users/{ADA}/token"), Some(&key)).await;

    let headers = assert_error(
        response,
        StatusCode::SERVICE_UNAVAILABLE,
        "provider_unavailable",
    )
    .await;
    assert_eq!(headers["retry-after"], "120");
    let events = audit_events(&app, ADA, 1).await;
    assert_eq!(events[0].outcome, "provider_unavailable");
    app.stop().await;
}

#[tokio::test]
async fn microsoft_down_while_the_token_is_valid_still_serves_it() {
    let app = spawn_app().await;
    let stored = insert_link(&app, ADA, TimeDelta::minutes(3)).await;
    let key = key(&app, "reader", Role::Reader).await;
    app.microsoft.script_refresh([Reply::Status(503)]);

    let response = get(&app, &format!("/v1/users/{ADA}/token"), Some(&key)).await;

    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["access_token"], stored.as_str());
    app.stop().await;
}

#[tokio::test]
async fn malformed_ids_and_parameters_are_400_invalid_request() {
    let app = spawn_app().await;
    insert_link(&app, ADA, TimeDelta::hours(1)).await;
    let key = key(&app, "reader", Role::Reader).await;
    let token = format!("/v1/users/{ADA}/token");
    let bad = [
        "/v1/users/abc/token".to_owned(),
        "/v1/users/0".to_owned(),
        "/v1/users/-5".to_owned(),
        "/v1/users/99999999999999999999".to_owned(),
        "/v1/users/%F0%9F%A6%80/token".to_owned(),
        format!("{token}?min_valid=abc"),
        format!("{token}?min_valid=-1"),
        format!("{token}?min_valid=999999"),
        format!("{token}?force=yes"),
        format!("{token}?scope="),
        format!("{token}?scope=%0A"),
        format!("{token}?min_vaild=60"),
        "/v1/users?limit=0".to_owned(),
        "/v1/users?limit=1001".to_owned(),
        "/v1/users?limit=ten".to_owned(),
        "/v1/users?after=x".to_owned(),
        "/v1/users?state=pending".to_owned(),
        "/v1/users?state=".to_owned(),
    ];

    for path in &bad {
        let response = get(&app, path, Some(&key)).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{path}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], "invalid_request", "{path}: {body}");
    }
    let delete = delete(&app, "/v1/users/abc", &key).await;
    assert_error(delete, StatusCode::FORBIDDEN, "forbidden").await;
    assert_eq!(get(&app, &token, Some(&key)).await.status(), StatusCode::OK);
    let events = audit_events(&app, ADA, 1).await;
    assert_eq!(
        events.len(),
        1,
        "refused requests are not audited: {events:?}"
    );
    app.stop().await;
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_in_json() {
    let app = spawn_app().await;
    let key = key(&app, "reader", Role::Reader).await;

    let missing = get(&app, "/v1/tokens", Some(&key)).await;
    assert_error(missing, StatusCode::NOT_FOUND, "not_found").await;
    let root = get(&app, "/", None).await;
    assert_error(root, StatusCode::NOT_FOUND, "not_found").await;

    let post = app
        .client
        .post(format!("{}/v1/users", app.api))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_error(post, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed").await;
    app.stop().await;
}

#[tokio::test]
async fn status_shows_the_link_without_secrets() {
    let app = spawn_app().await;
    let ada = FakeUser::entra("ada");
    link(&app, ADA, &ada).await;
    let key = key(&app, "reader", Role::Reader).await;
    get(&app, &format!("/v1/users/{ADA}/token"), Some(&key)).await;

    let response = get(&app, &format!("/v1/users/{ADA}"), Some(&key)).await;

    assert_eq!(response.status(), StatusCode::OK);
    let text = response.text().await.unwrap();
    for secret in app
        .microsoft
        .issued_access_tokens()
        .iter()
        .chain(&app.microsoft.issued_refresh_tokens())
    {
        assert!(!text.contains(secret.as_str()), "a token is in the status");
    }
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["discord_id"], ADA.to_string());
    assert_eq!(body["state"], "active");
    assert_eq!(body["account"]["object_id"], ada.object_id.as_str());
    assert_eq!(body["account"]["username"], ada.username.as_str());
    assert!(
        body["scopes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s == "User.Read")
    );
    for field in [
        "linked_at",
        "last_refresh_at",
        "last_used_at",
        "access_token_expires_at",
    ] {
        let text = body[field].as_str().unwrap_or_else(|| panic!("{field}"));
        chrono::DateTime::parse_from_rfc3339(text).expect("RFC 3339");
    }
    assert!(body["last_error"].is_null());
    app.stop().await;
}

#[tokio::test]
async fn a_user_still_signing_in_is_pending() {
    let app = spawn_app().await;
    let key = key(&app, "reader", Role::Reader).await;
    app.state.linking.start(BOB, None).await.unwrap();

    let response = get(&app, &format!("/v1/users/{BOB}"), Some(&key)).await;

    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["state"], "pending");
    assert!(body["account"].is_null());
    let token = get(&app, &format!("/v1/users/{BOB}/token"), Some(&key)).await;
    assert_error(token, StatusCode::NOT_FOUND, "not_linked").await;
    app.stop().await;
}

#[tokio::test]
async fn the_list_pages_with_a_cursor_and_filters_by_state() {
    let app = spawn_app().await;
    let key = key(&app, "reader", Role::Reader).await;
    let users: Vec<DiscordUserId> = (1..=5).map(|n| DiscordUserId::new(1000 + n)).collect();
    for user in &users {
        insert_link(&app, *user, TimeDelta::hours(1)).await;
    }
    links::mark_relink_required(&app.state.store, users[1], "invalid_grant", Utc::now())
        .await
        .unwrap();

    let mut seen = Vec::new();
    let mut path = "/v1/users?limit=2".to_owned();
    let mut pages = 0;
    loop {
        let page: Value = get(&app, &path, Some(&key)).await.json().await.unwrap();
        pages += 1;
        for user in page["users"].as_array().unwrap() {
            seen.push(user["discord_id"].as_str().unwrap().to_owned());
        }
        match page["next"].as_str() {
            Some(next) => path = format!("/v1/users?limit=2&after={next}"),
            None => break,
        }
    }
    let expected: Vec<String> = users.iter().map(ToString::to_string).collect();
    assert_eq!(seen, expected);
    assert_eq!(pages, 3);

    let default: Value = get(&app, "/v1/users", Some(&key))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(default["users"].as_array().unwrap().len(), 5);
    assert!(default["next"].is_null());
    let relink: Value = get(&app, "/v1/users?state=relink_required", Some(&key))
        .await
        .json()
        .await
        .unwrap();
    let relink = relink["users"].as_array().unwrap();
    assert_eq!(relink.len(), 1);
    assert_eq!(relink[0]["discord_id"], users[1].to_string());
    assert_eq!(relink[0]["state"], "relink_required");
    let active: Value = get(&app, "/v1/users?state=active&limit=1000", Some(&key))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(active["users"].as_array().unwrap().len(), 4);
    app.stop().await;
}

/// Parses Prometheus text format into `series → value`, failing on any malformed line.
fn parse_prometheus(text: &str) -> HashMap<String, f64> {
    let mut series = HashMap::new();
    let mut typed = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE has a kind");
            assert!(
                ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                "{line}"
            );
            typed.push(name.to_owned());
            continue;
        }
        if line.starts_with("# HELP ") {
            continue;
        }
        assert!(!line.starts_with('#'), "unknown comment {line}");
        let (key, value) = line.rsplit_once(' ').expect("a sample has a value");
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("value in {line}"));
        let name = key.split('{').next().expect("split yields a first part");
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "{line}"
        );
        assert!(typed.iter().any(|t| t == name), "{name} has no TYPE line");
        if let Some(labels) = key.strip_prefix(name) {
            if !labels.is_empty() {
                let inner = labels
                    .strip_prefix('{')
                    .and_then(|l| l.strip_suffix('}'))
                    .unwrap_or_else(|| panic!("labels in {line}"));
                for pair in inner.split("\",") {
                    let (label, quoted) = pair.split_once('=').expect("label=value");
                    assert!(label.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
                    assert!(quoted.starts_with('"'), "{line}");
                }
            }
        }
        assert!(
            series.insert(key.to_owned(), value).is_none(),
            "duplicate {key}"
        );
    }
    series
}

async fn scrape(app: &TestApp) -> HashMap<String, f64> {
    let response = get(app, "/metrics", None).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .expect("content type is text")
            .starts_with("text/plain; version=0.0.4")
    );
    parse_prometheus(&response.text().await.expect("metrics body"))
}

#[tokio::test]
async fn metrics_parse_as_prometheus_text_and_the_counters_move() {
    let app = spawn_app().await;
    link(&app, ADA, &FakeUser::entra("ada")).await;
    let key = key(&app, "reader", Role::Reader).await;
    let token_ok = format!("linkbot_http_requests_total{{route=\"{TOKEN_ROUTE}\",status=\"200\"}}");
    let success = "linkbot_refreshes_total{outcome=\"success\"}";
    let before = scrape(&app).await;
    assert_eq!(before["linkbot_links{state=\"active\"}"], 1.0);
    assert_eq!(before["linkbot_links{state=\"relink_required\"}"], 0.0);
    assert!(before.contains_key("linkbot_refreshes_total{outcome=\"transient\"}"));
    assert!(!before.contains_key(&token_ok));

    let path = format!("/v1/users/{ADA}/token?force=true");
    for _ in 0..3 {
        assert_eq!(get(&app, &path, Some(&key)).await.status(), StatusCode::OK);
    }
    get(&app, "/v1/users/x", Some(&key)).await;
    get(&app, "/nowhere", None).await;
    let after = scrape(&app).await;

    assert_eq!(after[&token_ok], 3.0);
    assert_eq!(after[success] - before[success], 3.0);
    assert_eq!(
        after["linkbot_http_requests_total{route=\"/v1/users/{discord_id}\",status=\"400\"}"],
        1.0
    );
    assert_eq!(
        after["linkbot_http_requests_total{route=\"unmatched\",status=\"404\"}"],
        1.0
    );
    assert!(after["linkbot_http_requests_total{route=\"/metrics\",status=\"200\"}"] >= 1.0);
    app.stop().await;
}

#[tokio::test]
async fn the_openapi_document_matches_the_served_routes_and_error_codes() {
    let app = spawn_app().await;

    let response = get(&app, "/openapi.json", None).await;

    assert_eq!(response.status(), StatusCode::OK);
    let document: Value = response.json().await.unwrap();
    assert!(document["openapi"].as_str().unwrap().starts_with("3."));
    let routes = linkbot::api::routes();
    for (method, path) in &routes {
        let operation = &document["paths"][*path][method.as_str().to_lowercase()];
        assert!(operation.is_object(), "{method} {path} is not documented");
        assert!(
            operation["responses"].is_object(),
            "{method} {path} has no responses"
        );
        // Each listed route is really served: it answers something other than the fallback.
        let concrete = path.replace("{discord_id}", "1");
        let served = app
            .client
            .request(method.clone(), format!("{}{concrete}", app.api))
            .send()
            .await
            .unwrap();
        assert!(
            served.status() != StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path}"
        );
        if served.status() == StatusCode::NOT_FOUND {
            let body: Value = served.json().await.unwrap();
            assert_ne!(body["error"], "not_found", "{method} {path} is not routed");
        }
    }
    for (path, operations) in document["paths"].as_object().unwrap() {
        for method in operations.as_object().unwrap().keys() {
            assert!(
                routes
                    .iter()
                    .any(|(m, p)| p == path && m.as_str().eq_ignore_ascii_case(method)),
                "{method} {path} is documented but not served"
            );
        }
    }
    let codes = document["components"]["schemas"]["Error"]["properties"]["error"]["enum"]
        .as_array()
        .unwrap();
    for code in linkbot::api::ERROR_CODES {
        assert!(codes.iter().any(|c| c == code), "{code} is not documented");
    }
    assert_eq!(codes.len(), linkbot::api::ERROR_CODES.len());
    app.stop().await;
}

#[tokio::test]
async fn a_database_failure_is_a_generic_500() {
    let app = spawn_app().await;
    let key = key(&app, "reader", Role::Reader).await;
    app.state.store.close().await;

    let response = get(&app, "/v1/users", Some(&key)).await;

    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "internal_error");
    let message = body["message"].as_str().unwrap();
    assert!(
        !message.contains("pool") && !message.contains("sqlx"),
        "{message}"
    );
}

// A current-thread runtime keeps the App's tasks on the thread whose subscriber captures.
#[tokio::test(flavor = "current_thread")]
async fn no_key_or_token_reaches_the_logs_at_trace() {
    let captured = crate::logs::Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(captured.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let app = spawn_app().await;
    link(&app, ADA, &FakeUser::entra("ada")).await;
    let reader = key(&app, "reader", Role::Reader).await;
    let admin = key(&app, "ops", Role::Admin).await;
    let unknown = "lbk_not-a-real-key".to_owned();

    let path = format!("/v1/users/{ADA}/token");
    get(&app, &format!("{path}?force=true"), Some(&reader)).await;
    get(&app, &path, Some(&unknown)).await;
    get(&app, &format!("/v1/users/{ADA}"), Some(&admin)).await;
    delete(&app, &format!("/v1/users/{ADA}"), &admin).await;
    let microsoft = app.microsoft.clone();
    app.stop().await;

    let logs = captured.text();
    // Info and above always reach this thread's subscriber; lower levels may be filtered out
    // when another test thread registered the same call site first.
    assert!(
        logs.contains("unlinked through the API"),
        "the capture works"
    );
    let mut secrets = vec![reader, admin, unknown];
    secrets.extend(microsoft.issued_access_tokens());
    secrets.extend(microsoft.issued_refresh_tokens());
    crate::logs::assert_no_secrets(&logs, &secrets);
}

/// Runs the `linkbot` binary in `dir` with only `env` (and `PATH`) set.
fn linkbot(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_linkbot"))
        .args(args)
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().copied())
        .output()
        .expect("linkbot runs")
}

/// As [`linkbot`], off the async runtime so the App keeps serving meanwhile.
async fn linkbot_async(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let dir = dir.to_owned();
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        linkbot(&dir, &args, &env)
    })
    .await
    .expect("the command's thread joins")
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).expect("stdout is UTF-8")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn api_key_commands_need_only_the_database_and_never_print_a_key_twice() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("keys.db").display());
    let secret = linkbot::store::seal::generate_key();
    let secret = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, secret);
    let env = [
        ("DATABASE_URL", db.as_str()),
        ("LINKBOT_SECRET_KEY", secret.as_str()),
    ];

    let created = linkbot(dir.path(), &["api-key", "create", "backup-cron"], &env);
    let admin = linkbot(
        dir.path(),
        &["api-key", "create", "ops", "--role", "admin"],
        &env,
    );
    let duplicate = linkbot(dir.path(), &["api-key", "create", "ops"], &env);
    let bad_name = linkbot(dir.path(), &["api-key", "create", "has space"], &env);
    let bad_role = linkbot(
        dir.path(),
        &["api-key", "create", "x", "--role", "root"],
        &env,
    );
    let listed = linkbot(dir.path(), &["api-key", "list"], &env);
    let revoked = linkbot(dir.path(), &["api-key", "revoke", "backup-cron"], &env);
    let revoked_again = linkbot(dir.path(), &["api-key", "revoke", "backup-cron"], &env);
    let listed_after = linkbot(dir.path(), &["api-key", "list"], &env);

    assert_eq!(created.status.code(), Some(0), "{}", stderr(&created));
    let key = stdout(&created);
    assert_eq!(key.lines().count(), 1, "only the key on stdout");
    let key = key.trim().to_owned();
    assert!(key.starts_with("lbk_"));
    assert_eq!(admin.status.code(), Some(0), "{}", stderr(&admin));
    let admin_key = stdout(&admin).trim().to_owned();
    assert_ne!(key, admin_key);
    assert!(!stderr(&created).contains(&key), "the key is shown once");
    assert_eq!(duplicate.status.code(), Some(2));
    assert!(duplicate.stdout.is_empty());
    assert!(stderr(&duplicate).contains("already exists"));
    assert_eq!(bad_name.status.code(), Some(2));
    assert_eq!(bad_role.status.code(), Some(2));

    assert_eq!(listed.status.code(), Some(0), "{}", stderr(&listed));
    let table = stdout(&listed);
    assert!(
        table.contains("backup-cron") && table.contains("reader"),
        "{table}"
    );
    assert!(table.contains("ops") && table.contains("admin"), "{table}");
    assert!(!table.contains(&key) && !table.contains(&admin_key));
    assert_eq!(revoked.status.code(), Some(0), "{}", stderr(&revoked));
    assert_eq!(revoked_again.status.code(), Some(2));
    let table = stdout(&listed_after);
    let line = table
        .lines()
        .find(|l| l.starts_with("backup-cron"))
        .unwrap();
    assert!(line.ends_with("revoked"), "{table}");

    let stored: Vec<(String,)> = {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async {
            let pool = sqlx::SqlitePool::connect(&db).await.unwrap();
            sqlx::query_as("SELECT key_hash FROM api_keys")
                .fetch_all(&pool)
                .await
                .unwrap()
        })
    };
    assert_eq!(stored.len(), 2);
    assert!(
        stored
            .iter()
            .all(|(hash,)| hash.len() == 64 && *hash != key && *hash != admin_key),
        "only SHA-256 hashes are stored"
    );
}

#[tokio::test]
async fn linkbot_token_prints_only_the_token_and_fails_clearly() {
    let app = spawn_app().await;
    link(&app, ADA, &FakeUser::entra("ada")).await;
    let dir = app.dir.path().to_owned();
    let db = format!("sqlite://{}", dir.join("linkbot.db").display());
    let store_env = [("DATABASE_URL", db.as_str())];
    let created = linkbot_async(&dir, &["api-key", "create", "shell"], &store_env).await;
    assert_eq!(created.status.code(), Some(0), "{}", stderr(&created));
    let key = stdout(&created).trim().to_owned();
    let api = app.api.clone();
    let env = [
        ("LINKBOT_API_URL", api.as_str()),
        ("LINKBOT_API_KEY", key.as_str()),
    ];
    let ada = ADA.to_string();

    let token = linkbot_async(&dir, &["token", &ada], &env).await;
    let scoped = linkbot_async(
        &dir,
        &["token", &ada, "--scope", "api://reports.example/.default"],
        &env,
    )
    .await;
    let long = linkbot_async(&dir, &["token", &ada, "--min-valid", "3000"], &env).await;
    let unlinked = linkbot_async(&dir, &["token", &BOB.to_string()], &env).await;
    let bad_id = linkbot_async(&dir, &["token", "bob"], &env).await;
    let too_long = linkbot_async(&dir, &["token", &ada, "--min-valid", "9999"], &env).await;
    let no_key = linkbot_async(&dir, &["token", &ada], &env[..1]).await;
    let unreachable = linkbot_async(
        &dir,
        &["token", &ada],
        &[("LINKBOT_API_URL", "http://127.0.0.1:9"), env[1]],
    )
    .await;
    let revoke = linkbot_async(&dir, &["api-key", "revoke", "shell"], &store_env).await;
    let revoked = linkbot_async(&dir, &["token", &ada], &env).await;

    assert_eq!(token.status.code(), Some(0), "{}", stderr(&token));
    let issued = app.microsoft.issued_access_tokens();
    assert_eq!(stdout(&token), format!("{}\n", issued[0]));
    assert_eq!(scoped.status.code(), Some(0), "{}", stderr(&scoped));
    assert_eq!(stdout(&scoped).trim(), issued.last().unwrap());
    assert_eq!(long.status.code(), Some(0), "{}", stderr(&long));
    for (out, code, says) in [
        (&unlinked, 1, "not_linked"),
        (&bad_id, 2, "DISCORD_ID"),
        (&too_long, 2, "invalid_request"),
        (&no_key, 2, "LINKBOT_API_KEY"),
        (&unreachable, 1, "unreachable"),
        (&revoked, 2, "unauthorized"),
    ] {
        assert_eq!(out.status.code(), Some(code), "{}", stderr(out));
        assert!(out.stdout.is_empty(), "nothing on stdout on failure");
        assert!(stderr(out).contains(says), "{}", stderr(out));
        assert!(!stderr(out).contains(&key), "the key is never printed");
    }
    assert_eq!(revoke.status.code(), Some(0), "{}", stderr(&revoke));
    let events = audit_events(&app, ADA, 3).await;
    assert!(events.iter().all(|e| e.actor == "key:shell"), "{events:?}");
    assert_eq!(events.len(), 3);
    app.stop().await;
}

#[tokio::test]
async fn a_key_revoked_by_another_process_is_refused_on_the_next_request() {
    let app = spawn_app().await;
    insert_link(&app, ADA, TimeDelta::hours(1)).await;
    let key = key(&app, "cron", Role::Reader).await;
    let path = format!("/v1/users/{ADA}/token");
    for _ in 0..3 {
        assert_eq!(get(&app, &path, Some(&key)).await.status(), StatusCode::OK);
    }
    let dir = app.dir.path().to_owned();
    let db = format!("sqlite://{}", dir.join("linkbot.db").display());

    let revoked = linkbot_async(
        &dir,
        &["api-key", "revoke", "cron"],
        &[("DATABASE_URL", &db)],
    )
    .await;
    let after = get(&app, &path, Some(&key)).await;

    assert_eq!(revoked.status.code(), Some(0), "{}", stderr(&revoked));
    assert_error(after, StatusCode::UNAUTHORIZED, "unauthorized").await;
    app.stop().await;
}

#[tokio::test]
async fn a_relink_to_another_account_is_served_at_once() {
    let app = spawn_app().await;
    let ada = FakeUser::entra("ada");
    link(&app, ADA, &ada).await;
    let key = key(&app, "reader", Role::Reader).await;
    let path = format!("/v1/users/{ADA}/token");
    let before: Value = get(&app, &path, Some(&key)).await.json().await.unwrap();
    let eve = FakeUser::entra("eve");

    let started = app.state.linking.start(ADA, None).await.unwrap();
    app.microsoft.approve(&started.prompt.user_code, &eve);
    let relinked = async {
        loop {
            let status = links::status(&app.state.store, ADA).await.unwrap().unwrap();
            if status.account.object_id == eve.object_id {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(PATIENCE, relinked).await.unwrap();
    let after: Value = get(&app, &path, Some(&key)).await.json().await.unwrap();

    assert_eq!(before["account"]["object_id"], ada.object_id.as_str());
    assert_eq!(after["account"]["object_id"], eve.object_id.as_str());
    assert_eq!(after["account"]["username"], eve.username.as_str());
    assert_ne!(after["access_token"], before["access_token"]);
    app.stop().await;
}
