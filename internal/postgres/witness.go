package postgres

import (
	"context"
	"fmt"
	"time"
)

// RecordRedisReached records that instance refreshed the cache epoch in
// Redis ago (by the primary's clock: now() − ago), in cache_witness.
func (s *Store) RecordRedisReached(ctx context.Context, instance string, ago time.Duration) error {
	_, err := s.pool.Exec(ctx, `
		INSERT INTO cache_witness (instance, redis_ok_at) VALUES ($1, now() - make_interval(secs => $2))
		ON CONFLICT (instance) DO UPDATE SET redis_ok_at = greatest(cache_witness.redis_ok_at, excluded.redis_ok_at)`,
		instance, ago.Seconds())
	if err != nil {
		return Classify(ctx, fmt.Errorf("record redis reached: %w", err))
	}
	return nil
}

// ForgetSilentWitnesses drops the cache_witness rows of instances (other
// than instance) silent for an hour: processes that stopped.
func (s *Store) ForgetSilentWitnesses(ctx context.Context, instance string) error {
	_, err := s.pool.Exec(ctx, `DELETE FROM cache_witness WHERE redis_ok_at < now() - interval '1 hour' AND instance <> $1`, instance)
	if err != nil {
		return Classify(ctx, fmt.Errorf("forget silent witnesses: %w", err))
	}
	return nil
}

// RedisReachedElsewhere reports whether an instance other than instance
// recorded reaching Redis within the last within (by the primary's clock).
func (s *Store) RedisReachedElsewhere(ctx context.Context, instance string, within time.Duration) (bool, error) {
	var ok bool
	err := s.pool.QueryRow(ctx, `
		SELECT EXISTS (SELECT 1 FROM cache_witness
		               WHERE instance <> $1 AND redis_ok_at > now() - make_interval(secs => $2))`,
		instance, within.Seconds()).Scan(&ok)
	if err != nil {
		return false, Classify(ctx, fmt.Errorf("redis reached elsewhere: %w", err))
	}
	return ok, nil
}
