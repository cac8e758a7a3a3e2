package token

import (
	"bytes"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"time"
)

// JWKSPath is where identity serves its public keys over HTTP.
const JWKSPath = "/.well-known/jwks.json"

// DefaultJWKSMaxAge is how long HTTP clients may cache the JWKS. It must be shorter than the
// key ring's Overlap; verifiers also refetch on an unknown kid, so a new key is picked up at
// once whatever the cache says.
const DefaultJWKSMaxAge = 5 * time.Minute

// JWKSHandlerConfig configures NewJWKSHandler.
type JWKSHandlerConfig struct {
	// MaxAge is the Cache-Control max-age (default DefaultJWKSMaxAge); it must be positive and
	// shorter than the key ring's Overlap.
	MaxAge time.Duration
	// Logger receives errors; nil discards them.
	Logger *slog.Logger
}

// JWKSHandler serves the key ring's JWKS (GET and HEAD) with Cache-Control and an ETag, so
// conditional requests cost no body.
type JWKSHandler struct {
	keys         *Keyring
	cacheControl string
	logger       *slog.Logger
}

// NewJWKSHandler returns the handler for JWKSPath.
func NewJWKSHandler(keys *Keyring, cfg JWKSHandlerConfig) (*JWKSHandler, error) {
	if keys == nil {
		return nil, fmt.Errorf("token: NewJWKSHandler needs a key ring")
	}
	if cfg.MaxAge == 0 {
		cfg.MaxAge = DefaultJWKSMaxAge
	}
	// A cache that outlives the overlap could still hold a set without the current key
	// when the previous one has already left: the refetch on an unknown kid covers that, but
	// the documented promise is that a cached set is never that stale.
	if cfg.MaxAge < time.Second || cfg.MaxAge >= keys.Overlap() {
		return nil, fmt.Errorf("token: JWKS max-age %s must be at least 1s and shorter than the key overlap %s", cfg.MaxAge, keys.Overlap())
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &JWKSHandler{
		keys:         keys,
		cacheControl: "public, max-age=" + strconv.Itoa(int(cfg.MaxAge/time.Second)),
		logger:       cfg.Logger,
	}, nil
}

// ServeHTTP implements http.Handler.
func (h *JWKSHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, http.StatusText(http.StatusMethodNotAllowed), http.StatusMethodNotAllowed)
		return
	}
	v, err := h.keys.fresh(r.Context(), false)
	if err != nil {
		h.logger.ErrorContext(r.Context(), "token: serve JWKS", "error", err)
		w.Header().Set("Cache-Control", "no-store")
		http.Error(w, http.StatusText(http.StatusServiceUnavailable), http.StatusServiceUnavailable)
		return
	}
	hdr := w.Header()
	hdr.Set("Content-Type", "application/json")
	hdr.Set("Cache-Control", h.cacheControl)
	hdr.Set("ETag", v.etag)
	hdr.Set("X-Content-Type-Options", "nosniff")
	// ServeContent answers If-None-Match with 304 and HEAD without a body.
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(v.jwks))
}
