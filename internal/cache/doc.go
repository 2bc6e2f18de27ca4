// Package cache is Parley's Redis cache-aside for read endpoints (message
// history pages, conversation lists, unread counts) and the store of the
// per-user read-your-writes tokens. It stores opaque []byte values: callers
// (de)serialize, so the package knows nothing about the messaging store.
//
// # Keys and generations
//
// Every cached value belongs to a conversation or to a user, and its key
// embeds that owner's current generation:
//
//	{conv:123}:gen                          hash {g: generation, l: write LSN}
//	{conv:123}:hist:g1718000000123457:…    a history page under generation g
//	{user:7}:gen, {user:7}:convs:g…:…       a user's conversation list
//	{user:7}:tok                            the user's read-your-writes token
//
// The braces are Redis Cluster hash tags: all keys of one owner live in one
// slot, so the Lua scripts below touch one slot only. After a write commits
// (and before it is acknowledged) the caller invalidates: the owner's
// generation is incremented and its write LSN raised, in one script per owner
// and one pipelined round trip for a conversation and all its members. Old
// keys are never deleted; they are unreachable and expire by TTL. There is no
// KEYS or SCAN anywhere.
//
// A generation record that is missing (new owner, TTL, eviction, a Redis
// restart) is created from Redis's clock in microseconds, so a re-created
// generation is larger than any earlier one and can never name an old entry.
//
// # The fill rule (no stale refill)
//
// GetOrFill reads the generation g and its write LSN l atomically with the
// lookup, before the database is queried, and stores the filled value under g
// only. The fill function is told l (Fill.MinLSN): a value is cacheable only
// if it was read from the primary or from a replica whose replay LSN is at
// least l. Then a cached value reflects every write that bumped the owner to
// g, and every write acknowledged before a reader's lookup has bumped the
// owner to at most the generation the reader sees. A fill that races a write
// lands under the old generation, which no later reader asks for. When l is
// unknown (MinLSN == wal.Unknown: no write recorded since the record was
// created, or a write whose position could not be read) only the primary may
// fill. Positions are wal.LSN, stored as their text ("16/B374D848").
//
// # Stampedes
//
// On a miss, the lookup script also tries a lease (SET NX PX) on the key: one
// filler per key across all instances. Requests of the same instance share one
// fill (an in-process single flight, per generation); requests of other
// instances poll the key for up to Config.LeaseWait and then query the
// database themselves.
//
// # Failing open
//
// Every Redis operation has a tight deadline (Config.OpTimeout). After
// Config.BreakerFailures consecutive failures the breaker opens: every request
// bypasses Redis at no cost until Run's background PING succeeds again.
// Invalidations that cannot reach Redis are queued and replayed before the
// breaker closes; meanwhile this instance bypasses the cache for the affected
// owners, so its users keep read-your-writes. Another instance that can still
// reach Redis may serve a stale entry for at most Config.TTL.
package cache
