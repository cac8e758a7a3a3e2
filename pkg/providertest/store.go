package providertest

import (
	"context"
	"errors"
	"sync"

	"github.com/ory/fosite"
	"github.com/ory/fosite/storage"
)

// store is fosite's in-memory storage with three changes a test provider needs:
//   - clients live in a map guarded by our own mutex, so RegisterClient may run while requests
//     are served (MemoryStore.Clients has no exported lock);
//   - refresh-token rotation can be switched off, which fosite's MemoryStore cannot do;
//   - revoking a grant revokes every token it ever issued. MemoryStore remembers only the latest
//     signature per grant, which is enough while rotation retires old tokens but would leave old
//     tokens alive once rotation is off.
type store struct {
	*storage.MemoryStore

	rotate bool

	mu      sync.Mutex
	clients map[string]fosite.Client
	// Every token signature a grant (fosite request id) ever received, in issue order.
	refreshSigs map[string][]string
	accessSigs  map[string][]string
}

func newStore(rotate bool) *store {
	return &store{
		MemoryStore: storage.NewMemoryStore(),
		rotate:      rotate,
		clients:     make(map[string]fosite.Client),
		refreshSigs: make(map[string][]string),
		accessSigs:  make(map[string][]string),
	}
}

func (s *store) setClient(c fosite.Client) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.clients[c.GetID()] = c
}

// GetClient shadows MemoryStore.GetClient so clients come from our guarded map.
func (s *store) GetClient(_ context.Context, id string) (fosite.Client, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.clients[id]
	if !ok {
		return nil, fosite.ErrNotFound
	}
	return c, nil
}

func (s *store) CreateAccessTokenSession(ctx context.Context, signature string, req fosite.Requester) error {
	s.mu.Lock()
	s.accessSigs[req.GetID()] = append(s.accessSigs[req.GetID()], signature)
	s.mu.Unlock()
	return s.MemoryStore.CreateAccessTokenSession(ctx, signature, req)
}

func (s *store) CreateRefreshTokenSession(ctx context.Context, signature, accessSignature string, req fosite.Requester) error {
	s.mu.Lock()
	s.refreshSigs[req.GetID()] = append(s.refreshSigs[req.GetID()], signature)
	s.mu.Unlock()
	return s.MemoryStore.CreateRefreshTokenSession(ctx, signature, accessSignature, req)
}

// RotateRefreshToken runs when a refresh token is used, before the new pair is stored. With
// rotation on it retires the used refresh token and the access token issued with it, so a second
// use of the old refresh token is detected as reuse and revokes the whole grant (fosite's
// behaviour, RFC 6819 §5.2.2.3). With rotation off both stay valid, like providers that never
// rotate.
func (s *store) RotateRefreshToken(ctx context.Context, requestID, _ string) error {
	if !s.rotate {
		return nil
	}
	if err := s.MemoryStore.RevokeRefreshToken(ctx, requestID); err != nil {
		return err
	}
	return s.MemoryStore.RevokeAccessToken(ctx, requestID)
}

// RevokeRefreshToken revokes every refresh token of the grant: the latest is marked inactive by
// MemoryStore (so fosite reports reuse), older ones are deleted.
func (s *store) RevokeRefreshToken(ctx context.Context, requestID string) error {
	s.mu.Lock()
	sigs := append([]string(nil), s.refreshSigs[requestID]...)
	s.mu.Unlock()
	for i, sig := range sigs {
		if i == len(sigs)-1 {
			break
		}
		if err := s.MemoryStore.DeleteRefreshTokenSession(ctx, sig); err != nil {
			return err
		}
	}
	return s.MemoryStore.RevokeRefreshToken(ctx, requestID)
}

// RevokeAccessToken deletes every access token the grant was issued.
func (s *store) RevokeAccessToken(ctx context.Context, requestID string) error {
	s.mu.Lock()
	sigs := append([]string(nil), s.accessSigs[requestID]...)
	s.mu.Unlock()
	for _, sig := range sigs {
		if err := s.MemoryStore.DeleteAccessTokenSession(ctx, sig); err != nil {
			return err
		}
	}
	return nil
}

// revokeAll revokes every grant, as when a user disconnects the app at the provider.
func (s *store) revokeAll(ctx context.Context) error {
	s.mu.Lock()
	ids := make(map[string]struct{}, len(s.refreshSigs)+len(s.accessSigs))
	for id := range s.refreshSigs {
		ids[id] = struct{}{}
	}
	for id := range s.accessSigs {
		ids[id] = struct{}{}
	}
	s.mu.Unlock()
	for id := range ids {
		// ErrNotFound: the grant's tokens were already deleted (e.g. by reuse detection).
		if err := s.RevokeRefreshToken(ctx, id); err != nil && !errors.Is(err, fosite.ErrNotFound) {
			return err
		}
		if err := s.RevokeAccessToken(ctx, id); err != nil && !errors.Is(err, fosite.ErrNotFound) {
			return err
		}
	}
	return nil
}
