// Package token is identity's token authority: it keeps the Ed25519 signing keys (Keyring),
// signs JWTs with them (Issuer) and publishes the public keys as a JWK Set (Keyring.JWKS, the
// JWKSHandler at /.well-known/jwks.json, and Keyring as a pkg/authn KeySource so identity
// verifies its own tokens without HTTP). The token format is docs/design.md's "Tokens"; the
// verification side is pkg/authn.
//
// # Keys
//
// Keys are shared by every identity replica through a KeyStore (PostgresStore: the global
// table signing_keys). Private keys are stored sealed with AES-256-GCM under the
// key-encryption key (KEK) from configuration; a key is published or used only after its
// sealed private key opens and matches the stored public key and kid, so write access to the
// table alone can neither read a key nor get a key of one's own published.
//
// One key is current and signs. Rotate makes a new key current; the previous one stays
// published for Overlap (MaxTTL + RefreshInterval + ClockSkew), which outlasts every token it
// can have signed — including those a replica that had not reloaded yet signed right after
// the rotation — and then leaves the JWKS. Retired rows stay in the table as a record.
//
// # Wiring (identity's main)
//
//	kek, _ := token.ParseKEK(cfg.SigningKEK)            // or token.GenerateDevKEK(logger) in dev
//	keys, _ := token.NewKeyring(ctx, token.KeyringConfig{
//		Store: token.NewPostgresStore(db), KEK: kek, Logger: logger})
//	issuer, _ := token.NewIssuer(keys, token.IssuerConfig{Issuer: cfg.Issuer})
//	jwks, _ := token.NewJWKSHandler(keys, token.JWKSHandlerConfig{Logger: logger})
//	mux.Handle(token.JWKSPath, jwks)
//	verifier, _ := authn.NewVerifier(authn.VerifierConfig{
//		Issuer: issuer.Issuer(), Audience: "bulkhead.identity", Keys: keys, Tenants: …})
package token
