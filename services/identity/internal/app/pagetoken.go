package app

import (
	"encoding/base64"
	"encoding/json"
	"time"

	"github.com/google/uuid"

	"github.com/bulkhead/bulkhead/pkg/apierr"
	"github.com/bulkhead/bulkhead/services/identity/internal/store"
)

// pageToken is the opaque next_page_token: the position of the last item returned. It is not
// signed: it only says where to continue, and every list is scoped by row-level security, so a
// forged token can at worst skip items of the caller's own tenant.
type pageToken struct {
	T time.Time `json:"t"`
	I string    `json:"i"`
}

func encodePageToken(c *store.Cursor) string {
	if c == nil {
		return ""
	}
	b, _ := json.Marshal(pageToken{T: c.CreatedAt, I: c.ID}) // a struct of a time and a string cannot fail
	return base64.RawURLEncoding.EncodeToString(b)
}

func decodePageToken(s string) (*store.Cursor, error) {
	if s == "" {
		return nil, nil
	}
	bad := apierr.InvalidArgument("page_token", "invalid page token")
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return nil, bad
	}
	var t pageToken
	if err := json.Unmarshal(b, &t); err != nil || t.T.IsZero() {
		return nil, bad
	}
	if _, err := uuid.Parse(t.I); err != nil {
		return nil, bad
	}
	return &store.Cursor{CreatedAt: t.T, ID: t.I}, nil
}
