package postgres

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/parley-chat/parley/internal/chat"
)

// CursorKey returns the HMAC key of the pagination cursors, which every
// instance must share. override (PARLEY_CURSOR_KEY), when not empty, is the
// key as hex or base64 (at least 16 bytes); otherwise the key is read from
// parley_settings, where the first migration stored a random one.
func CursorKey(ctx context.Context, q Querier, override string) ([]byte, error) {
	if override != "" {
		return parseKey(override)
	}
	var key []byte
	err := q.QueryRow(ctx, `SELECT value FROM parley_settings WHERE name = 'cursor_key'`).Scan(&key)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, errors.New("cursor key: parley_settings has no cursor_key (run parley migrate)")
	}
	if err != nil {
		return nil, fmt.Errorf("cursor key: %w (has parley migrate run?)", err)
	}
	if len(key) < chat.MinCursorKeyLen {
		return nil, fmt.Errorf("cursor key: the stored key has %d bytes, want at least %d", len(key), chat.MinCursorKeyLen)
	}
	return key, nil
}

func parseKey(s string) ([]byte, error) {
	for _, dec := range []func(string) ([]byte, error){
		hex.DecodeString, base64.StdEncoding.DecodeString, base64.RawStdEncoding.DecodeString,
		base64.URLEncoding.DecodeString, base64.RawURLEncoding.DecodeString,
	} {
		if b, err := dec(s); err == nil && len(b) >= chat.MinCursorKeyLen {
			return b, nil
		}
	}
	return nil, fmt.Errorf("cursor key: PARLEY_CURSOR_KEY must be hex or base64 of at least %d bytes", chat.MinCursorKeyLen)
}
