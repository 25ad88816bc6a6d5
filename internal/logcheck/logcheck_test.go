package logcheck

import "testing"

func TestStyleError(t *testing.T) {
	t.Parallel()
	for msg, bad := range map[string]bool{
		"store not ready":                 false,
		"jwks fetch failed; retrying":     false,
		"shutdown: readiness NOT_SERVING": false,
		"not_ready":                       true,
		"refresh_reuse_detected":          true,
		"Store not ready":                 true,
		"store not ready.":                true,
		"":                                true,
	} {
		if got := StyleError(msg) != ""; got != bad {
			t.Errorf("StyleError(%q) = %q, want bad=%v", msg, StyleError(msg), bad)
		}
	}
}

func TestDocumented(t *testing.T) {
	t.Parallel()
	doc := "| info | `session started` | `sid` |\n| warn | `redis persistence can lose acknowledged rotations; …` | |"
	for msg, want := range map[string]bool{
		"session started": true,
		"session":         false,
		"redis persistence can lose acknowledged rotations; set appendonly yes": true,
		"redis persistence": false,
	} {
		if got := Documented(doc, msg); got != want {
			t.Errorf("Documented(%q) = %v, want %v", msg, got, want)
		}
	}
}

// The package's own source: one Messages call over a directory without
// log calls finds none and fails nothing.
func TestMessagesNone(t *testing.T) {
	t.Parallel()
	msgs, err := Messages(".")
	if err != nil || len(msgs) != 0 {
		t.Fatalf("Messages(.) = %v, %v; want none", msgs, err)
	}
}
