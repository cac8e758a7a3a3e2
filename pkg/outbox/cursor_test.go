package outbox_test

import (
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/bulkhead/bulkhead/pkg/outbox"
)

func TestCursorRoundTrip(t *testing.T) {
	for _, c := range []outbox.Cursor{{}, {XID: 1, Seq: 0}, {XID: 18446744073709551615, Seq: 9223372036854775807}} {
		got, err := outbox.ParseCursor(c.String())
		if err != nil || got != c {
			t.Fatalf("ParseCursor(%q) = %+v, %v; want %+v", c.String(), got, err, c)
		}
	}
	if got, err := outbox.ParseCursor(""); err != nil || got != (outbox.Cursor{}) {
		t.Fatalf(`ParseCursor("") = %+v, %v; want the start`, got, err)
	}
}

func TestParseCursorRefusesMalformed(t *testing.T) {
	for _, s := range []string{"12", "12.", ".3", "12.-1", "-1.2", "a.b", "1.2.3", "18446744073709551616.1"} {
		_, err := outbox.ParseCursor(s)
		if status.Code(err) != codes.InvalidArgument {
			t.Errorf("ParseCursor(%q): %v, want InvalidArgument", s, err)
		}
	}
}
