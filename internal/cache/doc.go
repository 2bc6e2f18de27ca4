// Package cache is Parley's Redis cache-aside for read endpoints (message
// history pages, conversation lists, unread counts) and the store of the
// per-user read-your-writes tokens. It stores opaque []byte values: callers
// (de)serialize, so the package knows nothing about the messaging store.
//
// # Keys and generations
//
// Every cached value belongs to a conversation or to a user, and its key
// embeds that owner's current generation, kept in the owner's record:
//
//	{conv:123}:gen                          hash: g generation, l write position,
//	                                        e epoch, c created, f floor
//	{conv:123}:hist:g1718000000123457:…    a history page under generation g
//	{user:7}:gen                            the same, plus t, x: the user's
//	                                        read-your-writes token and its expiry
//	{user:7}:convs:g…:…                     a user's conversation list
//	{epoch}                                 the cache epoch (see Outages)
//
// The braces are Redis Cluster hash tags: all keys of one owner live in one
// slot, so the Lua scripts below touch one slot only. After a write commits
// (and before it is acknowledged) the caller invalidates: the owner's
// generation is incremented and its write position raised, in one script per
// owner and one pipelined round trip for a conversation and all its members.
// Old keys are never deleted; they are unreachable and expire by TTL. There
// is no KEYS or SCAN anywhere.
//
// A record that is missing (new owner, TTL, eviction, a Redis restart) or
// of an older epoch is made anew from Redis's clock in microseconds, so a
// re-created generation is larger than any earlier one and can never name an
// old entry.
//
// # The fill rule (no stale refill)
//
// GetOrFill reads the generation g atomically with the lookup, before the
// database is queried, and stores the filled value under g only. The fill
// function is told Fill.MinLSN, the larger of the record's write position l
// and its floor f: a value is cacheable only if it was read from the primary
// or from a replica whose replay position is at least MinLSN. Then a cached
// value reflects every write that bumped the owner to g, and every write
// acknowledged before a reader's lookup has bumped the owner to at most the
// generation the reader sees. A fill that races a write lands under the old
// generation, which no later reader asks for.
//
// The floor covers what a new record cannot know: writes acknowledged
// before it existed (a record evicted and made again, or reset by a new
// epoch, lost their positions). It is the primary's position read after the
// record was made (Config.Position, once per record, on its first miss), so
// at least that of every such write. When the write position is unknown (a
// write whose position could not be read) or no floor can be had, MinLSN is
// wal.Unknown: only the primary may fill. Positions are wal.LSN, stored as
// their text ("16/B374D848").
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
// Config.BreakerFailures consecutive failures the breaker opens: every
// request bypasses Redis at no cost until Run's probe succeeds again.
// Invalidations and tokens that cannot reach Redis are queued and replayed
// before the breaker closes; meanwhile this instance bypasses the cache for
// the affected owners.
//
// # Outages: the epoch
//
// A write acknowledged while Redis could not take its invalidation must not
// let any instance serve a value cached before it, even if the instance that
// owes the invalidation dies. Two rules make sure of it:
//
//  1. The epoch ({epoch}) lives Config.EpochTTL (1 s) after its last
//     refresh, and every instance refreshes it every ProbeInterval (at most
//     EpochTTL/5). An instance reads from Redis only within 0.9 × EpochTTL of
//     its last successful refresh (refreshing first when that has passed),
//     and passes its epoch to every script: a record of an older epoch is
//     reset before use. When Redis has been unreachable from every instance
//     for EpochTTL — a hang, a restart, a network cut — the epoch lapses,
//     the next refresh starts a new one (from the clock) and nothing written
//     before is used again: values, generations, write positions, tokens.
//  2. A write whose token or invalidation did not reach Redis is
//     acknowledged only after AwaitDelivery: once Run has delivered it (it
//     probes every 10 ms while a write waits), or once Redis has failed
//     every operation of this instance for OpTimeout + 1.1 × EpochTTL, by
//     which time the epoch has lapsed. A Redis that is back before that gets
//     the invalidation before the write is acknowledged.
//
// So an acknowledged write is either in Redis or behind a new epoch. The
// price: at the start of an outage a write waits up to ~1.1 s; after it,
// every record is rebuilt (one miss per key, one floor per record). Limit:
// an instance cut off from a Redis that the others still reach keeps them
// refreshing the epoch; its writes, acknowledged after the wait, are seen
// elsewhere only when it delivers them (at the latest the cache TTL).
//
// # Read-your-writes tokens
//
// A user's token (the position of their last write) lives in their record
// for Config.TokenTTL. UserToken trusts the absence of a token only in a
// record older than TokenTTL; in a younger one the floor stands for writes
// whose token the record cannot have. When Redis cannot be asked (down,
// timed out, breaker open, no current epoch) the position is unknown
// (ErrUnavailable): the caller reads from the primary.
package cache
