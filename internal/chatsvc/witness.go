package chatsvc

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"strconv"
	"time"

	"github.com/parley-chat/parley/internal/monitor"
)

// The witness: how an instance that cannot reach Redis tells an outage
// (nobody reaches it: the cache epoch lapses, and with it everything Redis
// held) from being cut off alone (the others keep the epoch alive, and with
// it values older than the writes this instance cannot invalidate). Every
// instance records in the database (cache_witness), a few times a second,
// when it last refreshed the epoch; acknowledge asks it before it lets a
// write through on a lapse (see acknowledge).

// witnessEvery is how often RunWitness records this instance's last
// refresh of the epoch; forgetEvery how often it drops the rows of
// instances silent for an hour. witnessTimeout bounds one write, and after
// a failed one the next waits witnessBackoff, doubling up to
// witnessMaxBackoff while they keep failing.
//
// Why not try again at the next tick: behind PgBouncer a write that gives up
// while queued for a server connection, or just as it gets one, makes
// PgBouncer close that server connection ("client disconnect while server
// was not ready"). Four writes a second per instance, each giving up at
// 250 ms, were the most frequent such clients after PgBouncer was restarted
// or resumed (parley chaos pgbouncer-restart: 140 of the 256 queries that
// timed out in the 27 s until sends succeeded again), feeding a stall in
// which every new server connection went to a client that then left.
const (
	witnessEvery      = 250 * time.Millisecond
	witnessTimeout    = time.Second
	witnessBackoff    = time.Second
	witnessMaxBackoff = 8 * time.Second
	forgetEvery       = time.Minute
)

// RunWitness records, every witnessEvery until ctx ends, when this instance
// last reached Redis (when it did so within the last two intervals). It
// does nothing without Redis.
func (s *Service) RunWitness(ctx context.Context) {
	t := time.NewTicker(witnessEvery)
	defer t.Stop()
	var forgotAt, quietUntil time.Time
	backoff := time.Duration(0)
	failed := func(err error) {
		backoff = min(max(2*backoff, witnessBackoff), witnessMaxBackoff)
		quietUntil = time.Now().Add(backoff)
		s.log.Debug("cache witness: write failed; waiting before the next", "err", err, "wait", backoff)
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if time.Now().Before(quietUntil) {
			continue
		}
		if time.Since(forgotAt) >= forgetEvery {
			forgotAt = time.Now()
			fctx, cancel := context.WithTimeout(ctx, witnessTimeout)
			err := s.store.ForgetSilentWitnesses(monitor.WithQueryName(fctx, "cache_witness"), s.cfg.InstanceID)
			cancel()
			if err != nil && ctx.Err() == nil {
				failed(err)
				continue
			}
		}
		ago, ok := s.cache.RedisReachedAgo()
		if !ok || ago > 2*witnessEvery {
			continue
		}
		wctx, cancel := context.WithTimeout(ctx, witnessTimeout)
		err := s.store.RecordRedisReached(monitor.WithQueryName(wctx, "cache_witness"), s.cfg.InstanceID, ago)
		cancel()
		switch {
		case err != nil && ctx.Err() == nil:
			failed(err)
		case err == nil:
			backoff = 0
		}
	}
}

// redisReachedElsewhere reports whether another instance recorded reaching
// Redis within 0.9 × the epoch's life: then the epoch cannot have lapsed.
// In an outage of Redis for everyone the last records are older than the
// epoch's life by the time acknowledge asks (its wait is longer).
func (s *Service) redisReachedElsewhere(ctx context.Context) (bool, error) {
	return s.store.RedisReachedElsewhere(monitor.WithQueryName(ctx, "cache_witness"), s.cfg.InstanceID, s.cache.EpochTTL()*9/10)
}

// newInstanceID names this process in cache_witness: host, pid and a random
// part (a restarted process is a new instance).
func newInstanceID() string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	h, _ := os.Hostname()
	return h + "/" + strconv.Itoa(os.Getpid()) + "/" + hex.EncodeToString(b)
}
