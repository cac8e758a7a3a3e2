package secret_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/bulkhead/bulkhead/pkg/secret"
)

// holder is how services use Value: as fields of a Config that gets logged whole.
type holder struct {
	Name  string
	URL   secret.Value
	Empty secret.Value
	Ptr   *secret.Value
}

// TestNeverPrints renders a Value, alone and inside a struct, every way it could reach a log
// or a terminal, and looks for the secret.
func TestNeverPrints(t *testing.T) {
	const plain = "postgres://app:app-password-123@127.0.0.1/db"
	v := secret.Value(plain)
	h := holder{Name: "visible-name", URL: v, Ptr: &v}

	var logs bytes.Buffer
	slog.New(slog.NewJSONHandler(&logs, nil)).Info("cfg", "config", h, "url", v)
	slog.New(slog.NewTextHandler(&logs, nil)).Info("cfg", "config", h, "url", v)
	js, err := json.Marshal(h)
	if err != nil {
		t.Fatal(err)
	}
	renders := map[string]string{
		"%v": fmt.Sprintf("%v", h), "%+v": fmt.Sprintf("%+v", h), "%#v": fmt.Sprintf("%#v", h),
		"%s value": fmt.Sprintf("%s", v), "%q value": fmt.Sprintf("%q", v), "%#v value": fmt.Sprintf("%#v", v),
		"%v pointer": fmt.Sprintf("%v", &v), "json": string(js), "slog": logs.String(),
	}
	for how, out := range renders {
		if strings.Contains(out, "app-password-123") {
			t.Errorf("%s shows the secret: %s", how, out)
		}
		if !strings.Contains(out, secret.Redacted) {
			t.Errorf("%s does not say the value is redacted: %s", how, out)
		}
	}
	if !strings.Contains(logs.String(), "visible-name") {
		t.Fatalf("log lost the non-secret fields: %s", logs.String())
	}
	if v.Reveal() != plain {
		t.Fatalf("Reveal = %q, want the value", v.Reveal())
	}
}

// TestEmptyPrintsEmpty: an unset secret prints as empty, so a missing setting is visible.
func TestEmptyPrintsEmpty(t *testing.T) {
	var v secret.Value
	cases := map[string]string{
		"%v": fmt.Sprintf("%v", v), "%#v": fmt.Sprintf("%#v", v), "String": v.String(),
		"LogValue": v.LogValue().String(),
	}
	for how, got := range cases {
		if got != "" {
			t.Errorf("%s of an empty Value = %q, want empty", how, got)
		}
	}
	if js, err := json.Marshal(v); err != nil || string(js) != `""` {
		t.Errorf("json of an empty Value = %s, %v; want \"\"", js, err)
	}
}
