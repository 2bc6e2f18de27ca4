-- Which instances reach Redis (chatsvc's witness, issue 10): every instance
-- records here, a few times a second, when it last refreshed the cache
-- epoch. An instance that cannot deliver a write's invalidation to Redis
-- may acknowledge the write only if the epoch has lapsed — nobody reaches
-- Redis, so every instance ignores what it held —; if another instance
-- reached Redis a moment ago the epoch lives on, and the write is answered
-- 503 instead (the client retries its key, maybe elsewhere).
-- Unlogged: nothing here needs to survive a crash or reach the replicas.
CREATE UNLOGGED TABLE cache_witness (
    instance    text        PRIMARY KEY,
    redis_ok_at timestamptz NOT NULL
);
