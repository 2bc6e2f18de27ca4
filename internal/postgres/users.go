package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/parley-chat/parley/internal/chat"
	"github.com/parley-chat/parley/internal/wal"
)

// CreateUser stores a new user with a fresh bearer token and returns both,
// and the commit position; the token is returned once and only its SHA-256
// is kept. A taken handle is ECONFLICT.
func (s *Store) CreateUser(ctx context.Context, handle, displayName string) (chat.User, string, wal.LSN, error) {
	if err := chat.ValidateHandle(handle); err != nil {
		return chat.User{}, "", 0, err
	}
	if displayName == "" {
		displayName = handle
	}
	if err := chat.ValidateDisplayName(displayName); err != nil {
		return chat.User{}, "", 0, err
	}
	token, hash := chat.NewToken()
	u := chat.User{Handle: handle, DisplayName: displayName}
	pos, err := s.write(ctx, func(q Querier) error {
		return q.QueryRow(ctx, `
			INSERT INTO users (handle, display_name, token_hash)
			VALUES ($1, $2, $3)
			ON CONFLICT (handle) DO NOTHING
			RETURNING id, created_at`, handle, displayName, hash).Scan(&u.ID, &u.CreatedAt)
	})
	if errors.Is(err, pgx.ErrNoRows) {
		return chat.User{}, "", 0, chat.Errorf(chat.ECONFLICT, "the handle %q is taken", handle)
	}
	if err != nil {
		return chat.User{}, "", 0, fmt.Errorf("create user: %w", err)
	}
	return u, token, pos, nil
}

// UserByToken returns the user whose bearer token is token; an unknown token
// is EUNAUTHENTICATED. It runs one unique-index lookup on q.
func (s *Store) UserByToken(ctx context.Context, q Querier, token string) (chat.User, error) {
	u := chat.User{}
	err := q.QueryRow(ctx, `
		SELECT id, handle, display_name, created_at
		FROM users WHERE token_hash = $1`, chat.HashToken(token)).Scan(&u.ID, &u.Handle, &u.DisplayName, &u.CreatedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return chat.User{}, chat.Errorf(chat.EUNAUTHENTICATED, "unknown token")
	}
	if err != nil {
		return chat.User{}, fmt.Errorf("user by token: %w", err)
	}
	return u, nil
}
