package catalog_test

import (
	"errors"
	"net/url"
	"slices"
	"testing"

	"github.com/bulkhead/bulkhead/services/connection/internal/catalog"
)

func mustGet(t *testing.T, key string) *catalog.Provider {
	t.Helper()
	c, err := catalog.Load()
	if err != nil {
		t.Fatal(err)
	}
	p, ok := c.Get(key)
	if !ok {
		t.Fatalf("provider %q missing", key)
	}
	return p
}

func TestResolveRendersTemplates(t *testing.T) {
	p := mustGet(t, "zendesk")
	e, err := p.Resolve(map[string]string{"subdomain": "acme"})
	if err != nil {
		t.Fatal(err)
	}
	want := catalog.Endpoints{
		AuthorizationURL: "https://acme.zendesk.com/oauth/authorizations/new",
		TokenURL:         "https://acme.zendesk.com/oauth/tokens",
		BaseURLs:         []string{"https://acme.zendesk.com/api/v2"},
		Scheme:           "https",
		AllowedHosts:     []string{"acme.zendesk.com"},
		Fields:           map[string]string{"subdomain": "acme"},
	}
	if e.AuthorizationURL != want.AuthorizationURL || e.TokenURL != want.TokenURL || e.RevocationURL != "" ||
		!slices.Equal(e.BaseURLs, want.BaseURLs) || e.Scheme != want.Scheme ||
		!slices.Equal(e.AllowedHosts, want.AllowedHosts) || e.Fields["subdomain"] != "acme" || len(e.Fields) != 1 {
		t.Fatalf("endpoints = %+v\nwant %+v", e, want)
	}

	mc := mustGet(t, "mailchimp")
	e, err = mc.Resolve(map[string]string{"dc": "us21"})
	if err != nil || e.TestURL != "https://us21.api.mailchimp.com/3.0/ping" {
		t.Fatalf("mailchimp test URL = %q (%v)", e.TestURL, err)
	}
}

func TestResolveRefusesBadFieldValues(t *testing.T) {
	cases := []struct {
		provider string
		fields   map[string]string
		field    string
		code     catalog.FieldErrorCode
	}{
		// Attempts to change the host of https://{subdomain}.zendesk.com.
		{"zendesk", map[string]string{"subdomain": "evil.com/"}, "subdomain", catalog.FieldInvalid},
		{"zendesk", map[string]string{"subdomain": "evil.com#"}, "subdomain", catalog.FieldInvalid},
		{"zendesk", map[string]string{"subdomain": "evil.com?"}, "subdomain", catalog.FieldInvalid},
		{"zendesk", map[string]string{"subdomain": "a@b"}, "subdomain", catalog.FieldInvalid},
		{"zendesk", map[string]string{"subdomain": "evil.com:443"}, "subdomain", catalog.FieldInvalid},
		{"zendesk", map[string]string{"subdomain": "acme.evil"}, "subdomain", catalog.FieldInvalid},
		{"zendesk", map[string]string{"subdomain": "acme%2f"}, "subdomain", catalog.FieldInvalid},
		{"zendesk", map[string]string{"subdomain": ".."}, "subdomain", catalog.FieldInvalid},
		{"zendesk", map[string]string{"subdomain": "ACME"}, "subdomain", catalog.FieldInvalid},
		{"zendesk", map[string]string{"subdomain": " acme"}, "subdomain", catalog.FieldInvalid},
		{"zendesk", map[string]string{"subdomain": "acme\n"}, "subdomain", catalog.FieldInvalid},
		{"zendesk", map[string]string{"subdomain": "ａｃｍｅ"}, "subdomain", catalog.FieldInvalid},
		{"zendesk", map[string]string{"subdomain": ""}, "subdomain", catalog.FieldMissing},
		{"zendesk", nil, "subdomain", catalog.FieldMissing},
		{"zendesk", map[string]string{"subdomain": "acme", "region": "eu"}, "region", catalog.FieldUnknown},
		// A path-segment field: dot segments and separators must not escape it, even where the
		// pattern allows dots.
		{"microsoft-365", map[string]string{"tenant": ".."}, "tenant", catalog.FieldInvalid},
		{"microsoft-365", map[string]string{"tenant": "../common"}, "tenant", catalog.FieldInvalid},
		{"microsoft-365", map[string]string{"tenant": "contoso..com"}, "tenant", catalog.FieldInvalid},
		{"microsoft-365", map[string]string{"tenant": "contoso.com/"}, "tenant", catalog.FieldInvalid},
		{"microsoft-365", map[string]string{"tenant": "Contoso.com"}, "tenant", catalog.FieldInvalid},
		{"shopify", map[string]string{"shop": "-acme"}, "shop", catalog.FieldInvalid},
		{"mailchimp", map[string]string{"dc": "us21.evil.com"}, "dc", catalog.FieldInvalid},
		{"microsoft-graph-app", map[string]string{"tenant": "common"}, "tenant", catalog.FieldInvalid},
	}
	for _, tc := range cases {
		t.Run(tc.provider+"/"+tc.fields[tc.field], func(t *testing.T) {
			_, err := mustGet(t, tc.provider).Resolve(tc.fields)
			var fe *catalog.FieldError
			if !errors.As(err, &fe) || fe.Field != tc.field || fe.Code != tc.code || fe.Provider != tc.provider {
				t.Fatalf("err = %v, want %s %s", err, tc.field, tc.code)
			}
		})
	}
}

func TestResolveAcceptsGoodFieldValues(t *testing.T) {
	cases := []struct {
		provider string
		fields   map[string]string
		tokenURL string
	}{
		{"microsoft-365", nil, "https://login.microsoftonline.com/common/oauth2/v2.0/token"},
		{"microsoft-365", map[string]string{"tenant": "contoso.onmicrosoft.com"}, "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token"},
		{"microsoft-365", map[string]string{"tenant": "72f988bf-86f1-41af-91ab-2d7cd011db47"}, "https://login.microsoftonline.com/72f988bf-86f1-41af-91ab-2d7cd011db47/oauth2/v2.0/token"},
		{"shopify", map[string]string{"shop": "acme-store"}, "https://acme-store.myshopify.com/admin/oauth/access_token"},
		{"quickbooks", map[string]string{"realm_id": "4620816365178043860"}, "https://oauth.platform.intuit.com/oauth2/v1/tokens/bearer"},
	}
	for _, tc := range cases {
		e, err := mustGet(t, tc.provider).Resolve(tc.fields)
		if err != nil || e.TokenURL != tc.tokenURL {
			t.Errorf("%s %v: token URL %q (%v), want %q", tc.provider, tc.fields, e.TokenURL, err, tc.tokenURL)
		}
	}
}

func TestResolveNeedsACatalog(t *testing.T) {
	p := validProvider()
	if _, err := p.Resolve(map[string]string{"subdomain": "acme"}); !errors.Is(err, catalog.ErrNotValidated) {
		t.Fatalf("err = %v, want ErrNotValidated", err)
	}
}

func TestAllowsURL(t *testing.T) {
	c, err := catalog.Load()
	if err != nil {
		t.Fatal(err)
	}
	c, err = c.With(validProvider())
	if err != nil {
		t.Fatal(err)
	}
	p, _ := c.Get("example")
	e, err := p.Resolve(map[string]string{"subdomain": "acme"})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"acme.example.com", "files.example.com"}; !slices.Equal(e.AllowedHosts, want) {
		t.Fatalf("allowed hosts = %v, want %v", e.AllowedHosts, want)
	}
	cases := []struct {
		url  string
		want bool
	}{
		{"https://acme.example.com/api/tickets", true},
		{"https://files.example.com/download/1", true},
		{"https://ACME.example.com:443/api", true},
		{"http://acme.example.com/api", false},
		{"https://acme.example.com:8443/api", false},
		{"https://user@acme.example.com/api", false},
		{"https://other.example.com/api", false},
		{"https://acme.example.com.evil.com/api", false},
		{"https://evil.com/acme.example.com", false},
		{"https://acme.example.com./api", false},
		{"https://127.0.0.1/api", false},
	}
	for _, tc := range cases {
		u, err := url.Parse(tc.url)
		if err != nil {
			t.Fatal(err)
		}
		if got := e.AllowsURL(u); got != tc.want {
			t.Errorf("AllowsURL(%s) = %v, want %v", tc.url, got, tc.want)
		}
	}
	if e.AllowsURL(nil) {
		t.Error("AllowsURL(nil) = true")
	}
}
