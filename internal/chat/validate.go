package chat

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Limits of the API contract.
const (
	MaxHandleLen         = 32   // bytes of [a-z0-9_.-]
	MaxDisplayNameRunes  = 64   // code points
	MaxTitleRunes        = 200  // code points
	MaxBodyRunes         = 4000 // code points
	MaxIdempotencyKeyLen = 128  // printable ASCII
	MaxMembers           = 1000 // including the creator
	MaxPageLimit         = 100
	DefaultMessageLimit  = 50
	DefaultConvListLimit = 30
)

// ValidateHandle checks a handle: 1–32 of [a-z0-9_.-].
func ValidateHandle(h string) error {
	if h == "" || len(h) > MaxHandleLen {
		return Errorf(EINVALID, "handle must be 1–%d characters of a-z, 0-9, '_', '.', '-'", MaxHandleLen)
	}
	for i := 0; i < len(h); i++ {
		c := h[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '_' || c == '.' || c == '-') {
			return Errorf(EINVALID, "handle must be 1–%d characters of a-z, 0-9, '_', '.', '-'", MaxHandleLen)
		}
	}
	return nil
}

// ValidateDisplayName checks a display name: 1–64 code points of valid UTF-8,
// at least one that is not a space, no control characters.
func ValidateDisplayName(s string) error {
	if err := checkText("display_name", s, MaxDisplayNameRunes, false); err != nil {
		return err
	}
	if strings.IndexFunc(s, unicode.IsControl) >= 0 {
		return Errorf(EINVALID, "display_name must not contain control characters")
	}
	return nil
}

// ValidateTitle checks an optional conversation title: at most 200 code
// points of valid UTF-8, no control characters ("" is no title).
func ValidateTitle(s string) error {
	if s == "" {
		return nil
	}
	if err := checkText("title", s, MaxTitleRunes, true); err != nil {
		return err
	}
	if strings.IndexFunc(s, unicode.IsControl) >= 0 {
		return Errorf(EINVALID, "title must not contain control characters")
	}
	return nil
}

// ValidateBody checks a message body: valid UTF-8, 1–4000 code points, at
// least one that is not white space, no NUL (PostgreSQL text cannot hold it).
func ValidateBody(s string) error {
	return checkText("body", s, MaxBodyRunes, false)
}

func checkText(field, s string, maxRunes int, blankOK bool) error {
	if !utf8.ValidString(s) {
		return Errorf(EINVALID, "%s is not valid UTF-8", field)
	}
	n := utf8.RuneCountInString(s)
	if n == 0 {
		return Errorf(EINVALID, "%s must not be empty", field)
	}
	if n > maxRunes {
		return Errorf(EINVALID, "%s is %d characters long; the maximum is %d", field, n, maxRunes)
	}
	if strings.IndexByte(s, 0) >= 0 {
		return Errorf(EINVALID, "%s must not contain NUL characters", field)
	}
	if !blankOK && strings.TrimFunc(s, unicode.IsSpace) == "" {
		return Errorf(EINVALID, "%s must contain a character that is not white space", field)
	}
	return nil
}

// ValidateIdempotencyKey checks an Idempotency-Key: 1–128 printable ASCII
// characters (space through tilde).
func ValidateIdempotencyKey(k string) error {
	if k == "" || len(k) > MaxIdempotencyKeyLen {
		return Errorf(EINVALID, "Idempotency-Key must be 1–%d printable ASCII characters", MaxIdempotencyKeyLen)
	}
	for i := 0; i < len(k); i++ {
		if k[i] < 0x20 || k[i] > 0x7e {
			return Errorf(EINVALID, "Idempotency-Key must be 1–%d printable ASCII characters", MaxIdempotencyKeyLen)
		}
	}
	return nil
}

// ValidateLimit checks a page size: 1–MaxPageLimit.
func ValidateLimit(n int) error {
	if n < 1 || n > MaxPageLimit {
		return Errorf(EINVALID, "limit must be between 1 and %d", MaxPageLimit)
	}
	return nil
}

// Members returns the member set of a new conversation: the creator plus
// memberIDs, deduplicated and sorted. It fails on a non-positive id or more
// than MaxMembers members.
func Members(creatorID int64, memberIDs []int64) ([]int64, error) {
	ids := make([]int64, 0, len(memberIDs)+1)
	ids = append(ids, creatorID)
	for _, id := range memberIDs {
		if id <= 0 {
			return nil, Errorf(EINVALID, "member id %d does not exist", id)
		}
		ids = append(ids, id)
	}
	slices.Sort(ids)
	ids = slices.Compact(ids)
	if len(ids) > MaxMembers {
		return nil, Errorf(EINVALID, "a conversation has at most %d members (the creator included); got %d", MaxMembers, len(ids))
	}
	return ids, nil
}

// tokenPrefix marks Parley user tokens (secret scanners can match it).
const tokenPrefix = "plt_"

// NewToken returns a new random user bearer token (256 bits) and the hash
// that the store keeps instead of it.
func NewToken() (token string, hash []byte) {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // never fails (crypto/rand, Go ≥ 1.24)
	token = tokenPrefix + base64.RawURLEncoding.EncodeToString(b)
	return token, HashToken(token)
}

// HashToken is the stored form of a bearer token: its SHA-256.
func HashToken(token string) []byte {
	h := sha256.Sum256([]byte(token))
	return h[:]
}
