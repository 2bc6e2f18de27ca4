-- Server-side bounds on every session of the role that runs the migrations
-- (Parley's own role: serve connects with it) in this database, so that no
-- query of the API outlives the request that asked for it, whatever the
-- client does (parley chaos, issue 10):
--   statement_timeout 1s: a request's database budget is 1.5 s; a slow
--     statement ends with 57014 (answered 503 + Retry-After) and its
--     connection is kept;
--   lock_timeout 500ms: a statement waiting for a row lock gives up (55P03,
--     503) instead of queueing behind a stuck transaction;
--   idle_in_transaction_session_timeout 5s: a transaction left open by a
--     client that went away releases its locks and its connection.
-- A role setting applies at each backend login, also to PgBouncer's server
-- connections (session SET or startup options cannot: transaction pooling
-- leaks a SET to later clients, and PgBouncer 1.18 refuses an options
-- startup parameter); PgBouncer's server connections opened before this
-- migration keep the old values until RECONNECT on its admin console (or
-- server_lifetime). Work that needs longer sets its own with SET LOCAL in
-- its transaction (migrations, bulk imports, the chaos suite's hogs).
DO $$
BEGIN
  EXECUTE format('ALTER ROLE %I IN DATABASE %I SET statement_timeout = %L', current_user, current_database(), '1s');
  EXECUTE format('ALTER ROLE %I IN DATABASE %I SET lock_timeout = %L', current_user, current_database(), '500ms');
  EXECUTE format('ALTER ROLE %I IN DATABASE %I SET idle_in_transaction_session_timeout = %L', current_user, current_database(), '5s');
END
$$;
