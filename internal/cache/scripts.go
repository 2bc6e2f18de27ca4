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

// luaNewGen makes a fresh generation from Redis's clock in microseconds, so
// that a re-created record never repeats an earlier generation.
const luaNewGen = `
local function newgen()
  local t = redis.call('TIME')
  return t[1] .. string.format('%06d', tonumber(t[2]))
end
`

// lookupScript reads the owner's generation and write LSN, creating the
// record if missing, then the data key under that generation; on a miss it
// tries to take the key's lease.
//
//	KEYS[1] generation record  ARGV[1] data key head  ARGV[2] data key tail
//	ARGV[3] lease ms           ARGV[4] record TTL ms
//	→ {generation, write LSN or nil, value or nil, 1 if the lease was taken}
//
// The data key is built inside the script; it shares KEYS[1]'s hash tag, so
// it is in the same Redis Cluster slot.
var lookupScript = redis.NewScript(luaNewGen + `
local r = redis.call('HMGET', KEYS[1], 'g', 'l')
local g, l = r[1], r[2]
if not g then
  g = newgen()
  l = false
  redis.call('HSET', KEYS[1], 'g', g)
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
end
local dk = ARGV[1] .. g .. ARGV[2]
local v = redis.call('GET', dk)
if v then return {g, l, v, 0} end
if redis.call('SET', dk .. ':lease', '1', 'NX', 'PX', ARGV[3]) then return {g, l, false, 1} end
return {g, l, false, 0}
`)

// bumpScript moves an owner to a new generation after a write and raises its
// write LSN.
//
//	KEYS[1] generation record  ARGV[1] write position (wal.Unknown's text: unknown)
//	ARGV[2] record TTL ms      → the new generation
var bumpScript = redis.NewScript(luaNewer + luaNewGen + `
if not redis.call('HEXISTS', KEYS[1], 'g') then
  redis.call('HSET', KEYS[1], 'g', newgen())
end
local n = redis.call('HINCRBY', KEYS[1], 'g', 1)
if newer(ARGV[1], redis.call('HGET', KEYS[1], 'l')) then
  redis.call('HSET', KEYS[1], 'l', ARGV[1])
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return n
`)

// raiseScript stores a read-your-writes token, keeping the newer of the
// stored and the given position, and never shortens its TTL.
//
//	KEYS[1] token key  ARGV[1] position  ARGV[2] TTL ms  → the stored position
var raiseScript = redis.NewScript(luaNewer + `
local cur = redis.call('GET', KEYS[1])
if newer(ARGV[1], cur) then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return ARGV[1]
end
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[2]) then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return cur
`)

func isNoScript(err error) bool {
	return err != nil && strings.HasPrefix(err.Error(), "NOSCRIPT")
}

// loadScripts loads every script (on every shard of a cluster), for
// pipelines, where EVALSHA cannot fall back to EVAL by itself.
func loadScripts(ctx context.Context, c redis.UniversalClient) error {
	for _, s := range []*redis.Script{lookupScript, bumpScript, raiseScript} {
		if err := s.Load(ctx, c).Err(); err != nil {
			return err
		}
	}
	return nil
}
