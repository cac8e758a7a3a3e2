// Package seal encrypts the sensitive fields of records with the tenant's transit key (through
// the vault-broker) before they are stored, and decrypts them for readers of the feed.
//
// A sealed record is the provider's record without its sensitive fields plus one top-level
// string field, SealedField, holding the broker's ciphertext of a JSON object that maps each
// sensitive field's dot path to its value. One Encrypt per record (not per field) keeps the
// broker's load at one call per record with sensitive values, and the calls of a page run
// concurrently with a bound. Deprovisioning a tenant in Vault destroys its key, and with it
// every sealed value (crypto-shredding).
//
// Content hashes of sealed records are HMAC-SHA256 of the plaintext record with a service key
// (Hash): a plain hash of the record would let whoever reads the table test guesses of a
// low-entropy sensitive value (a phone number, a birth date) against the hash, with the rest of
// the record in clear beside it. The hash covers the plaintext, not the ciphertext, because
// transit ciphertexts differ on every call and change detection must stay stable.
package seal

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"golang.org/x/sync/errgroup"
)

// SealedField is the top-level field of a stored record that holds its sealed values.
const SealedField = "_bulkhead_sealed"

// Concurrency bounds the broker calls of one page.
const Concurrency = 8

// ErrNoCipher is returned when a record needs sealing or opening and no broker is configured:
// sensitive values are never stored in clear, nor ciphertext handed out as data.
var ErrNoCipher = errors.New("seal: no vault-broker configured for sensitive fields")

// ErrReservedField is returned for a provider record that has a field named SealedField.
var ErrReservedField = errors.New("seal: the record has a field named " + SealedField)

// Cipher encrypts and decrypts with a tenant's transit key (the vault-broker).
type Cipher interface {
	Encrypt(ctx context.Context, tenantID string, plaintext []byte) (string, error)
	Decrypt(ctx context.Context, tenantID, ciphertext string) ([]byte, error)
}

// Hash returns the content hash of a record with sensitive fields: HMAC-SHA256 of its canonical
// plaintext payload with key.
func Hash(key, payload []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write(payload)
	return m.Sum(nil)
}

// Seal returns payload (a JSON object) with the values at fields moved into SealedField,
// encrypted for tenantID. A record that has none of the fields is returned unchanged without a
// broker call.
func Seal(ctx context.Context, c Cipher, tenantID string, fields []string, payload []byte) ([]byte, error) {
	obj, err := decode(payload)
	if err != nil {
		return nil, err
	}
	if _, ok := obj[SealedField]; ok {
		return nil, ErrReservedField
	}
	values := make(map[string]any, len(fields))
	for _, f := range fields {
		if v, ok := take(obj, f); ok {
			values[f] = v
		}
	}
	if len(values) == 0 {
		return payload, nil
	}
	if c == nil {
		return nil, ErrNoCipher
	}
	plain, err := json.Marshal(values)
	if err != nil {
		return nil, fmt.Errorf("seal: %w", err)
	}
	ct, err := c.Encrypt(ctx, tenantID, plain)
	if err != nil {
		return nil, fmt.Errorf("seal: encrypt: %w", err)
	}
	obj[SealedField] = ct
	return json.Marshal(obj)
}

// Open returns payload with its sealed values decrypted and put back where they were; a payload
// without SealedField is returned unchanged.
func Open(ctx context.Context, c Cipher, tenantID string, payload []byte) ([]byte, error) {
	if !bytes.Contains(payload, []byte(SealedField)) {
		return payload, nil
	}
	obj, err := decode(payload)
	if err != nil {
		return nil, err
	}
	ct, ok := obj[SealedField].(string)
	if !ok {
		return payload, nil
	}
	if c == nil {
		return nil, ErrNoCipher
	}
	plain, err := c.Decrypt(ctx, tenantID, ct)
	if err != nil {
		return nil, fmt.Errorf("seal: decrypt: %w", err)
	}
	values, err := decode(plain)
	if err != nil {
		return nil, err
	}
	delete(obj, SealedField)
	for path, v := range values {
		put(obj, path, v)
	}
	return json.Marshal(obj)
}

// SealAll seals payloads in place, up to Concurrency at once.
func SealAll(ctx context.Context, c Cipher, tenantID string, fields []string, payloads [][]byte) error {
	return each(ctx, payloads, func(ctx context.Context, p []byte) ([]byte, error) {
		return Seal(ctx, c, tenantID, fields, p)
	})
}

// OpenAll opens payloads in place, up to Concurrency at once.
func OpenAll(ctx context.Context, c Cipher, tenantID string, payloads [][]byte) error {
	return each(ctx, payloads, func(ctx context.Context, p []byte) ([]byte, error) {
		return Open(ctx, c, tenantID, p)
	})
}

func each(ctx context.Context, payloads [][]byte, f func(context.Context, []byte) ([]byte, error)) error {
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(Concurrency)
	for i := range payloads {
		g.Go(func() error {
			out, err := f(ctx, payloads[i])
			if err != nil {
				return err
			}
			payloads[i] = out
			return nil
		})
	}
	return g.Wait()
}

// decode parses a JSON object keeping numbers as sent.
func decode(b []byte) (map[string]any, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var obj map[string]any
	if err := dec.Decode(&obj); err != nil {
		return nil, fmt.Errorf("seal: payload: %w", err)
	}
	if obj == nil {
		return nil, errors.New("seal: payload is not a JSON object")
	}
	return obj, nil
}

// take removes and returns the value at a dot path.
func take(obj map[string]any, path string) (any, bool) {
	parts := strings.Split(path, ".")
	for _, p := range parts[:len(parts)-1] {
		next, ok := obj[p].(map[string]any)
		if !ok {
			return nil, false
		}
		obj = next
	}
	last := parts[len(parts)-1]
	v, ok := obj[last]
	if ok {
		delete(obj, last)
	}
	return v, ok
}

// put sets the value at a dot path, creating objects on the way.
func put(obj map[string]any, path string, v any) {
	parts := strings.Split(path, ".")
	for _, p := range parts[:len(parts)-1] {
		next, ok := obj[p].(map[string]any)
		if !ok {
			next = map[string]any{}
			obj[p] = next
		}
		obj = next
	}
	obj[parts[len(parts)-1]] = v
}
