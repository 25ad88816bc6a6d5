package revocationfeed

import (
	"encoding/json"
	"testing"
	"time"
)

// The JSON is a contract between two services (and any third-party
// consumer): these bytes must not change.
func TestJSON(t *testing.T) {
	t.Parallel()
	until := time.Date(2026, 3, 1, 12, 15, 0, 500, time.UTC)
	for _, tc := range []struct {
		name string
		page Page
		want string
	}{
		{"entries", Page{Cursor: "7", Revoked: []Entry{{SessionID: "s1", Until: until}}},
			`{"cursor":"7","revoked":[{"sid":"s1","until":"2026-03-01T12:15:00.0000005Z"}]}`},
		{"empty", Page{Cursor: "7", Revoked: []Entry{}}, `{"cursor":"7","revoked":[]}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := json.Marshal(tc.page)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tc.want {
				t.Errorf("got %s\nwant %s", got, tc.want)
			}
			var back Page
			if err := json.Unmarshal(got, &back); err != nil {
				t.Fatal(err)
			}
			if back.Cursor != tc.page.Cursor || len(back.Revoked) != len(tc.page.Revoked) ||
				len(back.Revoked) > 0 && (back.Revoked[0].SessionID != "s1" || !back.Revoked[0].Until.Equal(until)) {
				t.Errorf("round trip: %+v, want %+v", back, tc.page)
			}
		})
	}
}
