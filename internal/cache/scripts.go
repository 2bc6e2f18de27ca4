package cache

import (
	"context"
	"strings"

	"github.com/redis/go-redis/v9"
)

// luaNewer is shared by the scripts: does WAL position a (wal.LSN's text
// form, "HI/LO") replace b (b false: none)? The order is wal.LSN's:
// a higher position replaces a lower one; a stored value that is not a
// position is replaced. wal.Unknown ("FFFFFFFF/FFFFFFFF") is the highest of
// all, so it stays once set. Hex halves are at most 8 digits, exact in Lua's
// doubles.
const luaNewer = `
local function split(s)
  local h, l = string.match(s, '^(%x+)/(%x+)$')
  if not h then return nil end
  return tonumber(h, 16), tonumber(l, 16)
end
local function newer(a, b)
  if not b then return true end
  local hb, lb = split(b)
  if not hb then return true end
  local ha, la = split(a)
  if not ha then return false end
  if ha ~= hb then return ha > hb end
  return la > lb
end
`

// luaRecord is shared by the scripts that touch an owner's record
// ({conv:1}:gen, {user:7}:gen; see doc.go). Times come from Redis's clock:
// microseconds since the epoch fit a double exactly (< 2^53).
//
// nowus is the clock in microseconds, as text (a new generation, epoch or
// creation time) and as a number.
// epochOf says how a record (g, e: its fields, false when missing) stands
// with the caller's epoch ep: 1 current, 0 missing or older (reset it), -1
// newer (the caller's view of the epoch is out of date).
// reset replaces the record with an empty one of epoch ep: a generation
// from the clock, above every earlier one, so that nothing cached before can
// be named again; no write position, no floor, no token.
const luaRecord = `
local function nowus()
  local t = redis.call('TIME')
  return t[1] .. string.format('%06d', tonumber(t[2])), tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local function epochOf(g, e, ep)
  if not g or not e then return 0 end
  local n, want = tonumber(e), tonumber(ep)
  if not n or n < want then return 0 end
  if n > want then return -1 end
  return 1
end
local function reset(k, ep, ttl)
  local g = nowus()
  redis.call('DEL', k)
  redis.call('HSET', k, 'g', g, 'e', ep, 'c', g)
  redis.call('PEXPIRE', k, ttl)
  return g
end
`

// epochScript reads the cache epoch and extends its life; when it is
// missing (it lapsed because nobody could refresh it for its TTL — Redis
// hung or unreachable from every instance —, or Redis restarted or evicted
// it) it starts a new one from the clock, above every earlier epoch.
//
//	KEYS[1] epoch key  ARGV[1] TTL ms  → {epoch, 1 if it was created now}
var epochScript = redis.NewScript(luaRecord + `
local e = redis.call('GET', KEYS[1])
if e then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  return {e, 0}
end
e = nowus()
redis.call('SET', KEYS[1], e, 'PX', ARGV[1])
return {e, 1}
`)

// lookupScript reads the owner's record (resetting it if it belongs to an
// older epoch or is missing), then the data key under its generation; on a
// miss it tries to take the key's lease. A hit reads no more of the record
// than the generation and the epoch.
//
//	KEYS[1] owner record   ARGV[1] data key head  ARGV[2] data key tail
//	ARGV[3] lease ms       ARGV[4] record TTL ms  ARGV[5] the caller's epoch
//	→ hit: {generation, value}
//	  miss: {generation, nil, write position or nil, floor or nil, created,
//	         1 if the lease was taken}
//	  {} when the record belongs to a newer epoch than the caller's
//
// The data key is built inside the script; it shares KEYS[1]'s hash tag, so
// it is in the same Redis Cluster slot.
//
// It inlines luaRecord's epochOf and reset: the hit path defines no Lua
// function (each definition is made again on every call).
var lookupScript = redis.NewScript(`
local r = redis.call('HMGET', KEYS[1], 'g', 'e')
local g, e, ep = r[1], tonumber(r[2]), tonumber(ARGV[5])
if g and e and e > ep then return {} end
if not g or not e or e < ep then
  local t = redis.call('TIME')
  g = t[1] .. string.format('%06d', tonumber(t[2]))
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[1], 'g', g, 'e', ARGV[5], 'c', g)
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
end
local dk = ARGV[1] .. g .. ARGV[2]
local v = redis.call('GET', dk)
if v then return {g, v} end
local m = redis.call('HMGET', KEYS[1], 'l', 'f', 'c')
local leased = 0
if redis.call('SET', dk .. ':lease', '1', 'NX', 'PX', ARGV[3]) then leased = 1 end
return {g, false, m[1], m[2], m[3], leased}
`)

// bumpScript moves an owner to a new generation after a write and raises its
// write position (a record of an older epoch is reset first; one of a newer
// epoch than the writer knows is bumped as it is).
//
//	KEYS[1] owner record  ARGV[1] write position (wal.Unknown's text: unknown)
//	ARGV[2] record TTL ms  ARGV[3] the writer's epoch  → the new generation
var bumpScript = redis.NewScript(luaNewer + luaRecord + `
local r = redis.call('HMGET', KEYS[1], 'g', 'e')
if epochOf(r[1], r[2], ARGV[3]) == 0 then reset(KEYS[1], ARGV[3], ARGV[2]) end
local n = redis.call('HINCRBY', KEYS[1], 'g', 1)
if newer(ARGV[1], redis.call('HGET', KEYS[1], 'l')) then
  redis.call('HSET', KEYS[1], 'l', ARGV[1])
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return n
`)

// floorScript records the owner's floor — a position at least that of every
// write acknowledged before the record was created — unless the record was
// re-created since the caller read its creation time, or has one already.
//
//	KEYS[1] owner record  ARGV[1] creation time read  ARGV[2] floor
//	→ the record's floor, or nil if the record changed
var floorScript = redis.NewScript(`
local r = redis.call('HMGET', KEYS[1], 'c', 'f')
if r[1] ~= ARGV[1] then return false end
if r[2] then return r[2] end
redis.call('HSET', KEYS[1], 'f', ARGV[2])
return ARGV[2]
`)

// setTokenScript raises a user's read-your-writes token, kept in the user's
// record (fields t: position, x: expiry in ms of Redis's clock): an expired
// token is replaced, a live one keeps the higher position, and its expiry
// only moves later.
//
//	KEYS[1] user record  ARGV[1] position  ARGV[2] token TTL ms
//	ARGV[3] record TTL ms  ARGV[4] the writer's epoch  → 1
var setTokenScript = redis.NewScript(luaNewer + luaRecord + `
local r = redis.call('HMGET', KEYS[1], 'g', 'e', 't', 'x')
local t, x = r[3], tonumber(r[4])
if epochOf(r[1], r[2], ARGV[4]) == 0 then
  reset(KEYS[1], ARGV[4], ARGV[3])
  t, x = false, nil
end
local _, now = nowus()
now = math.floor(now / 1000)
local live = t and x and x > now
if not live or newer(ARGV[1], t) then redis.call('HSET', KEYS[1], 't', ARGV[1]) end
local exp = now + tonumber(ARGV[2])
if not live or x < exp then redis.call('HSET', KEYS[1], 'x', exp) end
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[3]) then redis.call('PEXPIRE', KEYS[1], ARGV[3]) end
return 1
`)

// getTokenScript reads a user's token for routing: the live token, whether
// the record is younger than the token TTL (then a write made before it
// existed may have left no token: the floor stands for those), its floor and
// its creation time. A record of an older epoch, or none, is reset.
//
//	KEYS[1] user record  ARGV[1] the caller's epoch  ARGV[2] token TTL ms
//	ARGV[3] record TTL ms
//	→ {token or nil, 1 if young, floor or nil, created}, or {} when the
//	  record belongs to a newer epoch than the caller's
var getTokenScript = redis.NewScript(luaRecord + `
local r = redis.call('HMGET', KEYS[1], 'g', 'e', 't', 'x', 'f', 'c')
local st = epochOf(r[1], r[2], ARGV[1])
if st < 0 then return {} end
local t, x, f, c = r[3], tonumber(r[4]), r[5], r[6]
if st == 0 then
  c = reset(KEYS[1], ARGV[1], ARGV[3])
  t, x, f = false, nil, false
end
local _, now = nowus()
local tok = false
if t and x and x > math.floor(now / 1000) then tok = t end
local young = 1
local cn = tonumber(c)
if cn and now - cn >= tonumber(ARGV[2]) * 1000 then young = 0 end
return {tok, young, f, c}
`)

func isNoScript(err error) bool {
	return err != nil && strings.HasPrefix(err.Error(), "NOSCRIPT")
}

// loadScripts loads every script (on every shard of a cluster), for
// pipelines, where EVALSHA cannot fall back to EVAL by itself.
func loadScripts(ctx context.Context, c redis.UniversalClient) error {
	for _, s := range []*redis.Script{epochScript, lookupScript, bumpScript, floorScript, setTokenScript, getTokenScript} {
		if err := s.Load(ctx, c).Err(); err != nil {
			return err
		}
	}
	return nil
}
