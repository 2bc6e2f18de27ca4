package chatsvc

import (
	"crypto/sha256"
	"sync"
	"time"

	"github.com/parley-chat/parley/internal/chat"
)

// DefaultAuthCacheTTL is how long an instance remembers which user a bearer
// token belongs to. Users and their tokens never change once created (the
// API has no update, revocation or deletion), so this only bounds memory and
// how long a row deleted by hand keeps working on an instance.
const DefaultAuthCacheTTL = time.Minute

// defaultAuthCacheSize bounds the remembered tokens (about 150 bytes each).
const defaultAuthCacheSize = 100_000

// authCache remembers token → user for a TTL, so that a request that is
// otherwise served from the cache costs the database nothing. Only found
// users are remembered (an unknown token is looked up every time). Keys are
// the tokens' SHA-256, never the tokens.
type authCache struct {
	ttl time.Duration // <= 0: disabled
	max int
	mu  sync.RWMutex
	m   map[[sha256.Size]byte]authEntry
}

type authEntry struct {
	user    chat.User
	expires time.Time
}

func newAuthCache(ttl time.Duration, max int) *authCache {
	return &authCache{ttl: ttl, max: max, m: make(map[[sha256.Size]byte]authEntry)}
}

func (c *authCache) get(key [sha256.Size]byte, now time.Time) (chat.User, bool) {
	if c.ttl <= 0 {
		return chat.User{}, false
	}
	c.mu.RLock()
	e, ok := c.m[key]
	c.mu.RUnlock()
	if !ok || now.After(e.expires) {
		return chat.User{}, false
	}
	return e.user, true
}

func (c *authCache) put(key [sha256.Size]byte, u chat.User, now time.Time) {
	if c.ttl <= 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.m) >= c.max {
		// Full: drop the expired entries, then arbitrary ones (map order is
		// random enough for a cache) down to seven eighths.
		for k, e := range c.m {
			if now.After(e.expires) {
				delete(c.m, k)
			}
		}
		target := c.max - max(c.max/8, 1)
		for k := range c.m {
			if len(c.m) <= target {
				break
			}
			delete(c.m, k)
		}
	}
	c.m[key] = authEntry{user: u, expires: now.Add(c.ttl)}
}
