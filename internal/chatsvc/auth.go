package chatsvc

import (
	"context"
	"crypto/sha256"
	"time"

	"github.com/parley-chat/parley/internal/chat"
	"github.com/parley-chat/parley/internal/dbrouter"
	"github.com/parley-chat/parley/internal/monitor"
	"github.com/parley-chat/parley/internal/postgres"
)

// Authenticate finds the user of a bearer token: from this instance's memory
// of recent tokens (authCache) unless the request asked for strong
// consistency, else from the primary (a user created a moment ago may not
// have been replayed to a replica yet). An unknown token is EUNAUTHENTICATED.
func (s *Service) Authenticate(ctx context.Context, token string, opts chat.ReadOptions) (chat.User, chat.Source, error) {
	key := sha256.Sum256([]byte(token))
	now := time.Now()
	if !opts.Strong {
		if u, ok := s.auth.get(key, now); ok {
			return u, chat.SourceCache, nil
		}
	}
	var u chat.User
	ctx, cancel := s.budget(ctx)
	defer cancel()
	target, err := s.router.Read(monitor.WithQueryName(ctx, "user_by_token"), chat.EndpointAuth, dbrouter.Route{},
		func(ctx context.Context, q postgres.Querier) error {
			var err error
			u, err = s.store.UserByToken(ctx, q, token)
			return err
		})
	if err != nil {
		return chat.User{}, chat.Source(target), DomainError(ctx, err)
	}
	s.auth.put(key, u, now)
	return u, chat.Source(target), nil
}

// CheckMember is nil when u is a member of conversation convID and
// ENOTFOUND when not; it reads the primary.
func (s *Service) CheckMember(ctx context.Context, u chat.User, convID int64) error {
	ctx, cancel := s.budget(ctx)
	defer cancel()
	_, err := s.router.Read(monitor.WithQueryName(ctx, "conversation"), chat.EndpointConversation, dbrouter.Route{},
		func(ctx context.Context, q postgres.Querier) error {
			_, err := s.store.Conversation(ctx, q, u.ID, convID)
			return err
		})
	return DomainError(ctx, err)
}
