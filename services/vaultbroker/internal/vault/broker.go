package vault

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/url"
	"sort"
	"strconv"
	"time"

	vaultapi "github.com/hashicorp/vault-client-go"
)

// Broker performs a tenant's credential and transit operations with that tenant's own Vault
// token. It holds no credential that reaches more than one tenant: each tenant's token comes
// from a JWT login bound to that tenant and carries only that tenant's policy.
//
// Every method takes the tenant id as its first argument after ctx. The caller must take it
// from verified claims only, never from a request field: it is the cache key and the identity
// the broker logs in as.
type Broker struct {
	cfg   Config
	cache *tenantCache
}

// Credential is one version of a connection's credential.
type Credential struct {
	Data        map[string]string
	Version     int
	CreatedTime time.Time
}

// CredentialVersion describes one stored version (never its value).
type CredentialVersion struct {
	Version      int
	CreatedTime  time.Time
	DeletionTime time.Time // zero unless soft-deleted
	Destroyed    bool
}

// CredentialVersions is a credential's version history, oldest first.
type CredentialVersions struct {
	Current  int
	Versions []CredentialVersion
}

// NewBroker returns a Broker for the verified server. src supplies tenant JWTs for logins.
func NewBroker(cfg Config, v *Verified, src JWTSource) (*Broker, error) {
	c, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if err := v.matches(&c); err != nil {
		return nil, err
	}
	if src == nil {
		return nil, fmt.Errorf("vault broker: a JWT source is required")
	}
	b := &Broker{cfg: c}
	if b.cache, err = newTenantCache(&b.cfg, src); err != nil {
		return nil, err
	}
	return b, nil
}

// Mode is the layout the broker serves.
func (b *Broker) Mode() Mode { return b.cfg.Mode }

// MaxSecretBytes is the size limit of a credential's JSON encoding and of a plaintext.
func (b *Broker) MaxSecretBytes() int { return b.cfg.MaxSecretBytes }

// Stats returns the tenant token cache's counters.
func (b *Broker) Stats() Stats { return b.cache.stats() }

// Close releases the broker's idle connections to Vault. Cached tenant tokens are not revoked:
// batch tokens cannot be, and all expire within the role's TTL.
func (b *Broker) Close() { b.cfg.closeIdle() }

// Forget drops tenant's cached client and token (after deprovisioning, or to force a login).
func (b *Broker) Forget(tenantID string) { b.cache.forget(tenantID) }

// do runs fn with tenant's current token. If Vault answers 403 the token is dropped and fn runs
// once more with a freshly logged-in token (the cached one may have been revoked, or its policy
// rewritten); a second 403 is returned as ErrPermissionDenied.
func (b *Broker) do(ctx context.Context, tenant, op string, fn func(e *tenantEntry, token vaultapi.RequestOption) error) error {
	if err := validateTenant(tenant); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	e, err := b.cache.entry(tenant)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	st, err := b.cache.token(ctx, e)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	err = fn(e, vaultapi.WithToken(st.token))
	if isForbidden(err) {
		b.cache.invalidate(e, st)
		if st, err = b.cache.token(ctx, e); err != nil {
			return fmt.Errorf("%s: %w", op, err)
		}
		err = fn(e, vaultapi.WithToken(st.token))
	}
	return classify(op, err)
}

// PutCredential writes a new version of credentialID with KV v2 check-and-set: expectedVersion
// 0 creates it only if it does not exist, n > 0 replaces it only if n is still the current
// version. It returns the new version. A lost race is ErrConflict: re-read and retry. The
// mount also has cas_required set, so Vault refuses any write without check-and-set.
func (b *Broker) PutCredential(ctx context.Context, tenantID, credentialID string, data map[string]string, expectedVersion int) (int, error) {
	const op = "put credential"
	if err := validateCredentialID(credentialID); err != nil {
		return 0, fmt.Errorf("%s: %w", op, err)
	}
	if expectedVersion < 0 {
		return 0, fmt.Errorf("%s: expected version %d: %w", op, expectedVersion, ErrInvalidArgument)
	}
	if len(data) == 0 {
		// Also avoids vault-client-go's KV write-with-empty-data 400 (issue #258).
		return 0, fmt.Errorf("%s: %w: empty credential", op, ErrInvalidArgument)
	}
	for k := range data {
		if k == "" {
			return 0, fmt.Errorf("%s: %w: empty field name", op, ErrInvalidArgument)
		}
	}
	encoded, err := json.Marshal(data)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", op, err)
	}
	if len(encoded) > b.cfg.MaxSecretBytes {
		return 0, fmt.Errorf("%s: %w: %d bytes, limit %d", op, ErrTooLarge, len(encoded), b.cfg.MaxSecretBytes)
	}
	body := map[string]any{"data": json.RawMessage(encoded), "options": map[string]any{"cas": expectedVersion}}
	var version int
	err = b.do(ctx, tenantID, op, func(e *tenantEntry, tok vaultapi.RequestOption) error {
		resp, err := e.client.Write(ctx, e.l.dataPath(credentialID), body, tok)
		if err != nil {
			return err
		}
		if resp == nil {
			return fmt.Errorf("empty response")
		}
		version = int(asInt(resp.Data["version"]))
		return nil
	})
	return version, err
}

// GetCredential reads version of credentialID (0: the current version). A missing, deleted or
// destroyed version is ErrNotFound.
func (b *Broker) GetCredential(ctx context.Context, tenantID, credentialID string, version int) (Credential, error) {
	const op = "get credential"
	var cred Credential
	if err := validateCredentialID(credentialID); err != nil {
		return cred, fmt.Errorf("%s: %w", op, err)
	}
	if version < 0 {
		return cred, fmt.Errorf("%s: version %d: %w", op, version, ErrInvalidArgument)
	}
	var opts []vaultapi.RequestOption
	if version > 0 {
		opts = append(opts, vaultapi.WithQueryParameters(url.Values{"version": {strconv.Itoa(version)}}))
	}
	err := b.do(ctx, tenantID, op, func(e *tenantEntry, tok vaultapi.RequestOption) error {
		resp, err := e.client.Read(ctx, e.l.dataPath(credentialID), append(opts, tok)...)
		if err != nil {
			return err
		}
		if resp == nil {
			return fmt.Errorf("empty response")
		}
		meta := asMap(resp.Data["metadata"])
		raw := asMap(resp.Data["data"])
		cred = Credential{Data: make(map[string]string, len(raw)), Version: int(asInt(meta["version"])), CreatedTime: asTime(meta["created_time"])}
		for k, v := range raw {
			if s, ok := v.(string); ok {
				cred.Data[k] = s
			} else {
				// Written by something other than the broker; keep it readable as JSON.
				j, _ := json.Marshal(v)
				cred.Data[k] = string(j)
			}
		}
		return nil
	})
	return cred, err
}

// DeleteCredential destroys every version of credentialID and its metadata. Deleting a
// credential that does not exist succeeds (idempotent, so a retried delete is harmless).
func (b *Broker) DeleteCredential(ctx context.Context, tenantID, credentialID string) error {
	const op = "delete credential"
	if err := validateCredentialID(credentialID); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	return b.do(ctx, tenantID, op, func(e *tenantEntry, tok vaultapi.RequestOption) error {
		_, err := e.client.Delete(ctx, e.l.metadataPath(credentialID), tok)
		return err
	})
}

// ListCredentialVersions returns credentialID's versions (ErrNotFound if it has none).
func (b *Broker) ListCredentialVersions(ctx context.Context, tenantID, credentialID string) (CredentialVersions, error) {
	const op = "list credential versions"
	var out CredentialVersions
	if err := validateCredentialID(credentialID); err != nil {
		return out, fmt.Errorf("%s: %w", op, err)
	}
	err := b.do(ctx, tenantID, op, func(e *tenantEntry, tok vaultapi.RequestOption) error {
		resp, err := e.client.Read(ctx, e.l.metadataPath(credentialID), tok)
		if err != nil {
			return err
		}
		if resp == nil {
			return fmt.Errorf("empty response")
		}
		out.Current = int(asInt(resp.Data["current_version"]))
		for k, v := range asMap(resp.Data["versions"]) {
			n, err := strconv.Atoi(k)
			if err != nil {
				continue
			}
			m := asMap(v)
			out.Versions = append(out.Versions, CredentialVersion{
				Version:      n,
				CreatedTime:  asTime(m["created_time"]),
				DeletionTime: asTime(m["deletion_time"]),
				Destroyed:    asBool(m["destroyed"]),
			})
		}
		sort.Slice(out.Versions, func(i, j int) bool { return out.Versions[i].Version < out.Versions[j].Version })
		return nil
	})
	return out, err
}

// Encrypt encrypts plaintext with the tenant's transit key and returns Vault's ciphertext
// ("vault:v<key version>:…") and the key version used.
func (b *Broker) Encrypt(ctx context.Context, tenantID string, plaintext []byte) (string, int, error) {
	const op = "encrypt"
	if len(plaintext) == 0 {
		return "", 0, fmt.Errorf("%s: %w: empty plaintext", op, ErrInvalidArgument)
	}
	if len(plaintext) > b.cfg.MaxSecretBytes {
		return "", 0, fmt.Errorf("%s: %w: %d bytes, limit %d", op, ErrTooLarge, len(plaintext), b.cfg.MaxSecretBytes)
	}
	var ciphertext string
	var keyVersion int
	err := b.do(ctx, tenantID, op, func(e *tenantEntry, tok vaultapi.RequestOption) error {
		resp, err := e.client.Write(ctx, e.l.transitMount+"/encrypt/"+e.l.transitKey,
			map[string]any{"plaintext": base64.StdEncoding.EncodeToString(plaintext)}, tok)
		if err != nil {
			return err
		}
		if resp == nil {
			return fmt.Errorf("empty response")
		}
		ciphertext, keyVersion = asString(resp.Data["ciphertext"]), int(asInt(resp.Data["key_version"]))
		return nil
	})
	return ciphertext, keyVersion, err
}

// Decrypt decrypts a ciphertext produced by Encrypt for the same tenant. A ciphertext that is
// malformed or was made with another key is ErrInvalidArgument.
func (b *Broker) Decrypt(ctx context.Context, tenantID, ciphertext string) ([]byte, error) {
	const op = "decrypt"
	if ciphertext == "" || len(ciphertext) > 2*b.cfg.MaxSecretBytes {
		return nil, fmt.Errorf("%s: %w: ciphertext empty or too long", op, ErrInvalidArgument)
	}
	var plaintext []byte
	err := b.do(ctx, tenantID, op, func(e *tenantEntry, tok vaultapi.RequestOption) error {
		resp, err := e.client.Write(ctx, e.l.transitMount+"/decrypt/"+e.l.transitKey,
			map[string]any{"ciphertext": ciphertext}, tok)
		if err != nil {
			return err
		}
		if resp == nil {
			return fmt.Errorf("empty response")
		}
		plaintext, err = base64.StdEncoding.DecodeString(asString(resp.Data["plaintext"]))
		return err
	})
	return plaintext, err
}

// RotateKey adds a new version to the tenant's transit key; new encryptions use it, older
// ciphertexts still decrypt. It returns the new latest version.
func (b *Broker) RotateKey(ctx context.Context, tenantID string) (int, error) {
	const op = "rotate key"
	var latest int
	err := b.do(ctx, tenantID, op, func(e *tenantEntry, tok vaultapi.RequestOption) error {
		resp, err := e.client.Write(ctx, e.l.transitMount+"/keys/"+e.l.transitKey+"/rotate", map[string]any{}, tok)
		if err != nil {
			return err
		}
		if resp != nil {
			latest = int(asInt(resp.Data["latest_version"]))
		}
		return nil
	})
	return latest, err
}
