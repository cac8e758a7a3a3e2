package definition_test

import (
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/bulkhead/bulkhead/services/sync/internal/definition"
)

func TestLoadEmbedded(t *testing.T) {
	set, err := definition.Load()
	if err != nil {
		t.Fatal(err)
	}
	if len(set.Keys()) < 6 {
		t.Fatalf("only %d definitions", len(set.Keys()))
	}
	for _, k := range set.Keys() {
		d, _ := set.Get(k.Integration, k.Model)
		if d.BaseURL == "" && k.Integration != "providertest" {
			t.Errorf("%s has no base URL", k)
		}
	}
}

func TestParseRefusesBadDefinitions(t *testing.T) {
	base := "definitions:\n  - integration: x\n    model: m\n    endpoint: /items\n    primary_key: id\n    default_frequency: 1h\n"
	tests := []struct{ name, yaml string }{
		{"unknown key", base + "    pagination: {style: link, page_size: 10}\n    bogus: 1\n"},
		{"unknown style", base + "    pagination: {style: magic, page_size: 10}\n"},
		{"cursor without path", base + "    pagination: {style: cursor, cursor_param: c, page_size: 10}\n"},
		{"incremental without updated_at", base + "    pagination: {style: link, page_size: 10}\n    incremental: {param: since}\n"},
		{"plain http base", base + "    pagination: {style: link, page_size: 10}\n    base_url: http://api.example.com\n"},
		{"too frequent", strings.Replace(base, "1h", "10s", 1) + "    pagination: {style: link, page_size: 10}\n"},
		{"sensitive primary key", base + "    pagination: {style: link, page_size: 10}\n    sensitive_fields: [id]\n"},
		{"sensitive field not a path", base + "    pagination: {style: link, page_size: 10}\n    sensitive_fields: [\"a..b\"]\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := definition.Parse([]byte(tc.yaml)); err == nil {
				t.Fatal("accepted")
			}
		})
	}
}

func def(t *testing.T, yaml string) *definition.Definition {
	t.Helper()
	set, err := definition.Parse([]byte("definitions:\n  - integration: x\n    model: m\n    endpoint: /items\n    default_frequency: 1h\n" + yaml))
	if err != nil {
		t.Fatal(err)
	}
	d, _ := set.Get("x", "m")
	return d
}

func TestPagination(t *testing.T) {
	t.Run("cursor in body, nested", func(t *testing.T) {
		d := def(t, "    records_path: results\n    primary_key: id\n    pagination: {style: cursor, cursor_param: after, next_cursor_path: paging.next.after, limit_param: limit, page_size: 2}\n")
		u, err := d.RequestURL("https://api.example.com/v1", "abc", time.Time{})
		if err != nil || u != "https://api.example.com/v1/items?after=abc&limit=2" {
			t.Fatalf("url = %s, %v", u, err)
		}
		p, err := d.ParsePage([]byte(`{"results":[{"id":7,"b":1,"a":2},{"id":"8"}],"paging":{"next":{"after":"xyz"}}}`), http.Header{}, u, "abc")
		if err != nil {
			t.Fatal(err)
		}
		if p.Next != "xyz" || len(p.Records) != 2 || p.Records[0].ExternalID != "7" || string(p.Records[0].Payload) != `{"a":2,"b":1,"id":7}` {
			t.Fatalf("page = %+v", p)
		}
		if _, err := d.ParsePage([]byte(`{"results":[{"id":1}],"paging":{"next":{"after":"abc"}}}`), http.Header{}, u, "abc"); !errors.Is(err, definition.ErrBadResponse) {
			t.Fatalf("same cursor again = %v", err)
		}
	})
	t.Run("link header stays on the origin", func(t *testing.T) {
		d := def(t, "    primary_key: id\n    pagination: {style: link, limit_param: per_page, page_size: 2}\n")
		h := http.Header{"Link": {`<https://api.example.com/items?page=2>; rel="next", <https://api.example.com/items?page=9>; rel="last"`}}
		p, err := d.ParsePage([]byte(`[{"id":1},{"id":2}]`), h, "https://api.example.com/items", "")
		if err != nil || p.Next != "https://api.example.com/items?page=2" {
			t.Fatalf("next = %q, %v", p.Next, err)
		}
		h = http.Header{"Link": {`<https://evil.example.net/steal>; rel="next"`}}
		if _, err := d.ParsePage([]byte(`[{"id":1}]`), h, "https://api.example.com/items", ""); !errors.Is(err, definition.ErrForeignNextPage) {
			t.Fatalf("foreign link = %v", err)
		}
		if _, err := d.RequestURL("https://api.example.com", "https://evil.example.net/x", time.Time{}); !errors.Is(err, definition.ErrForeignNextPage) {
			t.Fatalf("foreign position = %v", err)
		}
	})
	t.Run("offset and page", func(t *testing.T) {
		d := def(t, "    primary_key: id\n    pagination: {style: offset, offset_param: start, limit_param: limit, page_size: 2}\n")
		p, _ := d.ParsePage([]byte(`[{"id":1},{"id":2}]`), http.Header{}, "https://x/items", "4")
		if p.Next != "6" {
			t.Fatalf("offset next = %q", p.Next)
		}
		p, _ = d.ParsePage([]byte(`[{"id":1}]`), http.Header{}, "https://x/items", "6")
		if p.Next != "" {
			t.Fatalf("short page next = %q", p.Next)
		}
		d = def(t, "    primary_key: id\n    pagination: {style: page, page_param: page, page_size: 2}\n")
		if u, _ := d.RequestURL("https://x", "", time.Time{}); !strings.Contains(u, "page=1") {
			t.Fatalf("first page url = %s", u)
		}
		p, _ = d.ParsePage([]byte(`[{"id":1},{"id":2}]`), http.Header{}, "https://x/items", "")
		if p.Next != "2" {
			t.Fatalf("page next = %q", p.Next)
		}
	})
	t.Run("incremental filter and update times", func(t *testing.T) {
		d := def(t, "    primary_key: id\n    updated_at: meta.updated\n    updated_at_format: unix\n    incremental: {param: since, format: unix}\n    pagination: {style: link, page_size: 2}\n")
		u, _ := d.RequestURL("https://x", "", time.Unix(1700000000, 0))
		if !strings.Contains(u, "since=1700000000") {
			t.Fatalf("url = %s", u)
		}
		p, err := d.ParsePage([]byte(`[{"id":1,"meta":{"updated":1700000100}}]`), http.Header{}, u, "")
		if err != nil || !p.Records[0].UpdatedAt.Equal(time.Unix(1700000100, 0)) {
			t.Fatalf("updated = %v, %v", p.Records, err)
		}
		if _, err := d.ParsePage([]byte(`[{"name":"no id"}]`), http.Header{}, u, ""); !errors.Is(err, definition.ErrBadResponse) {
			t.Fatalf("record without id = %v", err)
		}
	})
}
