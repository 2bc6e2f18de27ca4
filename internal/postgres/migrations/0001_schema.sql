-- Parley's schema. Every hot query carries conversation_id or user_id so the
-- schema can later be distributed by conversation without rewriting queries.

CREATE TABLE users (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    handle       text        NOT NULL UNIQUE,
    display_name text        NOT NULL,
    token_hash   bytea       NOT NULL UNIQUE, -- SHA-256 of the bearer token; the token itself is never stored
    created_at   timestamptz NOT NULL DEFAULT now()
);

-- last_message_* are updated by every send: no index on them, so those
-- updates stay HOT (fillfactor leaves room on the page).
CREATE TABLE conversations (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    title           text        NOT NULL DEFAULT '',
    created_by      bigint      NOT NULL REFERENCES users (id),
    created_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    last_message_id bigint,
    last_message_at timestamptz
) WITH (fillfactor = 80);

-- The read marker is the (created_at, id) of the last message read. It has no
-- index, so advancing it is a HOT update.
CREATE TABLE conversation_members (
    conversation_id bigint      NOT NULL REFERENCES conversations (id),
    user_id         bigint      NOT NULL REFERENCES users (id),
    joined_at       timestamptz NOT NULL DEFAULT now(),
    last_read_at    timestamptz,
    last_read_id    bigint,
    PRIMARY KEY (conversation_id, user_id)
) WITH (fillfactor = 80);

CREATE INDEX conversation_members_by_user ON conversation_members (user_id, conversation_id);

CREATE TABLE messages (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    conversation_id bigint      NOT NULL REFERENCES conversations (id),
    sender_id       bigint      NOT NULL REFERENCES users (id),
    body            text        NOT NULL,
    created_at      timestamptz NOT NULL,
    idempotency_key text,
    body_hash       bytea
);

-- History: keyset pages on (created_at, id) within a conversation. sender_id
-- is included so the unread count is an index-only scan.
CREATE INDEX messages_history ON messages (conversation_id, created_at, id) INCLUDE (sender_id);

-- Idempotent sends: one row per (sender, key); partial, since most sends carry no key.
CREATE UNIQUE INDEX messages_idempotency ON messages (sender_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;

-- Append-heavy: vacuum and analyze on a fixed number of rows, not a fraction
-- of a table that only grows, and keep the visibility map fresh for
-- index-only scans.
ALTER TABLE messages SET (
    autovacuum_vacuum_scale_factor = 0.0,
    autovacuum_vacuum_threshold = 10000,
    autovacuum_vacuum_insert_scale_factor = 0.0,
    autovacuum_vacuum_insert_threshold = 10000,
    autovacuum_analyze_scale_factor = 0.0,
    autovacuum_analyze_threshold = 10000,
    autovacuum_vacuum_cost_delay = 1
);
ALTER TABLE conversation_members SET (
    autovacuum_vacuum_scale_factor = 0.05,
    autovacuum_analyze_scale_factor = 0.05
);
ALTER TABLE conversations SET (
    autovacuum_vacuum_scale_factor = 0.05,
    autovacuum_analyze_scale_factor = 0.05
);
