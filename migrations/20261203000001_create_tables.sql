-- The first schema: links, pending device flows, API keys and the audit trail.
-- Times are Unix milliseconds (INTEGER here, BIGINT on Postgres) so the same SQL runs on both.
-- Secrets are stored sealed (see src/store/seal.rs) as TEXT.

CREATE TABLE links (
    discord_user_id BIGINT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    object_id TEXT NOT NULL,
    username TEXT NOT NULL,
    display_name TEXT NOT NULL,
    scopes TEXT NOT NULL,
    access_token TEXT NOT NULL,
    access_expires_at BIGINT NOT NULL,
    refresh_token TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('active', 'relink_required')),
    linked_at BIGINT NOT NULL,
    last_refresh_at BIGINT NOT NULL,
    last_used_at BIGINT,
    next_refresh_at BIGINT NOT NULL,
    transient_failures INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    alerted_at BIGINT
);

-- The background worker asks for active links whose refresh is due.
CREATE INDEX links_due ON links (state, next_refresh_at);

-- Access tokens for resources other than the linked scopes, minted from the link's refresh
-- token and cached per scope set.
CREATE TABLE scoped_tokens (
    discord_user_id BIGINT NOT NULL REFERENCES links (discord_user_id) ON DELETE CASCADE,
    scope_key TEXT NOT NULL,
    access_token TEXT NOT NULL,
    scope TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    PRIMARY KEY (discord_user_id, scope_key)
);

CREATE TABLE device_flows (
    discord_user_id BIGINT PRIMARY KEY,
    device_code TEXT NOT NULL,
    user_code TEXT NOT NULL,
    verification_uri TEXT NOT NULL,
    message TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    interval_secs BIGINT NOT NULL,
    next_poll_at BIGINT NOT NULL,
    relink INTEGER NOT NULL DEFAULT 0,
    dm_channel_id BIGINT,
    dm_message_id BIGINT,
    reply_token TEXT,
    outcome TEXT,
    created_at BIGINT NOT NULL
);

CREATE INDEX device_flows_open ON device_flows (outcome, expires_at);

CREATE TABLE api_keys (
    name TEXT PRIMARY KEY,
    role TEXT NOT NULL CHECK (role IN ('reader', 'admin')),
    key_hash TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL,
    last_used_at BIGINT,
    revoked_at BIGINT
);

CREATE TABLE audit_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at BIGINT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    subject TEXT NOT NULL,
    detail TEXT,
    outcome TEXT NOT NULL
);

CREATE INDEX audit_events_subject ON audit_events (subject, at);
CREATE INDEX audit_events_at ON audit_events (at);
