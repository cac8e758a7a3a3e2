package vault

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/bulkhead/bulkhead/pkg/vaultlocal"
	vaultapi "github.com/hashicorp/vault-client-go"
)

// Verified is proof that Verify checked the configured mode against the server. NewBroker and
// NewProvisioner require it, so a broker cannot start in namespace mode on a server that merely
// accepts namespace headers.
type Verified struct {
	addr   string
	mode   Mode
	parent string
	caps   vaultlocal.Capabilities
}

// Mode is the verified mode.
func (v *Verified) Mode() Mode { return v.mode }

// Capabilities is what the server reported during verification.
func (v *Verified) Capabilities() vaultlocal.Capabilities { return v.caps }

func (v *Verified) matches(c *Config) error {
	if v == nil {
		return errors.New("vault mode not verified: call Verify first")
	}
	if v.addr != c.Addr || v.mode != c.Mode || v.parent != c.NamespaceParent {
		return fmt.Errorf("vault verification was for %s mode %s (parent %q), config says %s mode %s (parent %q)",
			v.addr, v.mode, v.parent, c.Addr, c.Mode, c.NamespaceParent)
	}
	return nil
}

// Verify checks that the server at cfg.Addr can serve cfg.Mode, using the provisioner token.
// Mount mode needs only a reachable, unsealed server. Namespace mode needs proof: LIST
// sys/namespaces must answer as a real endpoint, and a canary policy written in one fresh
// namespace must be readable there and absent from a sibling namespace. Anything less returns
// an error wrapping ErrNamespacesUnsupported that says why; there is no fallback to mount mode.
func Verify(ctx context.Context, cfg Config, provisionerToken string) (*Verified, error) {
	c, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	defer c.closeIdle()
	if provisionerToken == "" {
		return nil, errors.New("vault verify: provisioner token is required")
	}
	// In namespace mode the provisioner's token lives in the parent namespace, so the probe
	// lists the parent's children (open-source Vault ignores the header and still says
	// "enterprise-only feature").
	probeNS := ""
	if c.Mode == ModeNamespace {
		probeNS = c.NamespaceParent
	}
	caps, err := vaultlocal.ProbeWith(ctx, c.HTTPClient, c.Addr, provisionerToken, probeNS)
	if err != nil {
		return nil, fmt.Errorf("vault verify: %w: %w", ErrUnavailable, err)
	}
	v := &Verified{addr: c.Addr, mode: c.Mode, parent: c.NamespaceParent, caps: caps}
	if c.Mode == ModeMount {
		c.Logger.Info("vault mode: mount", "addr", c.Addr, "version", caps.Version, "namespaces_available", caps.Namespaces)
		return v, nil
	}
	if !caps.Namespaces {
		return nil, fmt.Errorf("vault namespace mode refused: %w: %s (open-source Vault serves the root namespace for any X-Vault-Namespace header, so it cannot isolate tenants by namespace; configure mode %q instead)",
			ErrNamespacesUnsupported, caps.Reason, ModeMount)
	}
	client, err := newAPIClient(&c)
	if err != nil {
		return nil, err
	}
	if err := client.SetToken(provisionerToken); err != nil {
		return nil, err
	}
	if err := namespaceCanary(ctx, client, c.NamespaceParent); err != nil {
		return nil, fmt.Errorf("vault namespace mode refused: %w: %w", ErrNamespacesUnsupported, err)
	}
	c.Logger.Info("vault mode: namespace", "addr", c.Addr, "version", caps.Version, "parent", c.NamespaceParent)
	return v, nil
}

// namespaceCanary creates two sibling namespaces under parent and runs canaryIsolation across
// them, then deletes them.
func namespaceCanary(ctx context.Context, client *vaultapi.Client, parent string) error {
	suffix, err := randomHex(6)
	if err != nil {
		return err
	}
	names := []string{"bulkhead-canary-" + suffix + "-a", "bulkhead-canary-" + suffix + "-b"}
	defer func() {
		// Clean up even when ctx is done; deletion is asynchronous and best-effort.
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		for _, n := range names {
			_, _ = client.Delete(cctx, "sys/namespaces/"+n, vaultapi.WithNamespace(parent))
		}
	}()
	for _, n := range names {
		if _, err := client.Write(ctx, "sys/namespaces/"+n, map[string]any{}, vaultapi.WithNamespace(parent)); err != nil {
			return fmt.Errorf("create canary namespace %s/%s: %w", parent, n, err)
		}
	}
	return canaryIsolation(ctx, client, parent+"/"+names[0], parent+"/"+names[1])
}

// canaryIsolation writes a policy holding a random nonce in namespace nsA and requires that
// nsA reads it back and nsB answers 404 for the same name. On a server that ignores the
// namespace header both requests hit the same (root) namespace and nsB sees the canary.
func canaryIsolation(ctx context.Context, client *vaultapi.Client, nsA, nsB string) error {
	nonce, err := randomHex(16)
	if err != nil {
		return err
	}
	const path = "sys/policies/acl/bulkhead-canary"
	body := fmt.Sprintf("# bulkhead namespace canary %s\npath \"bulkhead-canary/%s\" {\n  capabilities = [\"deny\"]\n}\n", nonce, nonce)
	if _, err := client.Write(ctx, path, map[string]any{"policy": body}, vaultapi.WithNamespace(nsA)); err != nil {
		return fmt.Errorf("write canary in %s: %w", nsA, err)
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		_, _ = client.Delete(cctx, path, vaultapi.WithNamespace(nsA))
	}()
	own, err := client.Read(ctx, path, vaultapi.WithNamespace(nsA))
	if err != nil {
		return fmt.Errorf("read canary back in %s: %w", nsA, err)
	}
	if !strings.Contains(asString(own.Data["policy"]), nonce) {
		return fmt.Errorf("canary read back in %s does not hold its nonce", nsA)
	}
	other, err := client.Read(ctx, path, vaultapi.WithNamespace(nsB))
	switch {
	case err == nil && strings.Contains(asString(other.Data["policy"]), nonce):
		return fmt.Errorf("a canary written in namespace %s is readable from namespace %s: the server does not isolate namespaces (it ignores X-Vault-Namespace)", nsA, nsB)
	case err == nil:
		return fmt.Errorf("namespace %s unexpectedly holds a policy named like the canary", nsB)
	case statusOf(err) != http.StatusNotFound:
		return fmt.Errorf("read canary from %s: want 404, got: %w", nsB, err)
	}
	return nil
}

func randomHex(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return hex.EncodeToString(b), nil
}
