-- Per-endpoint rollout switches (internal/rollout). Every instance polls this
-- table and applies a change within 2 s; PUT /admin/rollouts/{endpoint} writes it.
--
-- version comes from one sequence for the whole table: an UPDATE takes the
-- next value after it holds the row lock, so per row the version grows in
-- commit order and a poller can keep the newer of two reads of a row.

CREATE SEQUENCE rollouts_version_seq;

CREATE TABLE rollouts (
    endpoint   text        PRIMARY KEY,
    percent    smallint    NOT NULL DEFAULT 0 CHECK (percent BETWEEN 0 AND 100),
    cache      boolean     NOT NULL DEFAULT false,
    replica    boolean     NOT NULL DEFAULT false,
    version    bigint      NOT NULL DEFAULT nextval('rollouts_version_seq'),
    updated_at timestamptz NOT NULL DEFAULT now()
);

ALTER SEQUENCE rollouts_version_seq OWNED BY rollouts.version;

-- Everything starts on the baseline path: primary, no cache.
INSERT INTO rollouts (endpoint) VALUES
    ('message_history'),
    ('conversation_list'),
    ('unread_count')
ON CONFLICT (endpoint) DO NOTHING;
