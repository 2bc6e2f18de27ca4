-- Parley's schema. Every hot query carries conversation_id or user_id so the
-- schema can later be distributed by conversation without rewriting queries.
-- The queries that use it are in the store (users.go, conversations.go,
-- messages.go, unread.go) and their plans are pinned by explain_test.go.

CREATE TABLE users (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    handle       text        NOT NULL UNIQUE,
    display_name text        NOT NULL,
    -- SHA-256 of the bearer token; the token itself is never stored.
    token_hash   bytea       NOT NULL UNIQUE CHECK (octet_length(token_hash) = 32),
    created_at   timestamptz NOT NULL DEFAULT now()
);

-- last_message_* and last_seq are updated by every send. None of them is
-- indexed, so those updates stay HOT (fillfactor leaves room on the page);
-- the conversation list orders a user's memberships after selecting them
-- instead of through an index on last_message_at.
-- last_seq is the number of messages sent into the conversation: each message
-- carries its seq (1, 2, …, assigned under the row lock of the send), so a
-- member's unread count is last_seq - last_read_seq, O(1).
CREATE TABLE conversations (
    id              bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    created_by      bigint      NOT NULL REFERENCES users (id),
    created_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    last_message_id bigint,
    last_message_at timestamptz,
    last_seq        bigint      NOT NULL DEFAULT 0,
    title           text        NOT NULL DEFAULT ''
) WITH (fillfactor = 80);

-- The read marker is the seq of the last message read (0: none). It has no
-- index, so advancing it (every send advances the sender's) is a HOT update.
CREATE TABLE conversation_members (
    conversation_id bigint      NOT NULL REFERENCES conversations (id),
    user_id         bigint      NOT NULL REFERENCES users (id),
    last_read_seq   bigint      NOT NULL DEFAULT 0,
    joined_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (conversation_id, user_id)
) WITH (fillfactor = 80);

-- A user's memberships: the conversation list and the unread summary start here.
CREATE INDEX conversation_members_by_user ON conversation_members (user_id, conversation_id);

-- Append-only: rows are never updated, so the default fillfactor (100).
CREATE TABLE messages (
    id              bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    conversation_id bigint      NOT NULL REFERENCES conversations (id),
    sender_id       bigint      NOT NULL REFERENCES users (id),
    created_at      timestamptz NOT NULL,
    seq             bigint      NOT NULL,
    body            text        NOT NULL,
    idempotency_key text
);

-- History: keyset pages on the row value (created_at, id) within a
-- conversation, both directions, no sort.
CREATE INDEX messages_history ON messages (conversation_id, created_at, id);

-- Idempotent sends: one row per (sender, key); partial, since most sends carry no key.
CREATE UNIQUE INDEX messages_idempotency ON messages (sender_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;

-- Append-heavy: vacuum and analyze on a fixed number of rows, not a fraction
-- of a table that only grows, and keep the visibility map fresh for
-- index-only scans. (internal/monitor declares the same values.)
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

-- Settings every instance shares. cursor_key is the HMAC key of the opaque
-- pagination cursors: random per database, created once here, read at
-- start-up (PARLEY_CURSOR_KEY overrides it).
CREATE TABLE parley_settings (
    name  text  PRIMARY KEY,
    value bytea NOT NULL
);
INSERT INTO parley_settings (name, value)
VALUES ('cursor_key', uuid_send(gen_random_uuid()) || uuid_send(gen_random_uuid()));
