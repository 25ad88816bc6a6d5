package redisstore_test

import (
	"context"
	"log/slog"
	"strings"
	"testing"

	"github.com/tokengate/tokengate/internal/proctest"
	"github.com/tokengate/tokengate/refresher/store/redisstore"
)

// TestDurabilityWarning opens the store on real redis-servers with each
// persistence setting and reads what it logs: a warning naming the loss
// unless appendfsync is always; a debug line, no warning, when CONFIG is
// disabled (as on managed services).
func TestDurabilityWarning(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		args    []string
		warn    string // "" for no warning
		debug   string
		checked bool
	}{
		{"no persistence", nil, "a Redis restart signs every user out", "", true},
		{"RDB snapshots only", []string{"--save", "3600 1"}, "since the last RDB snapshot", "", true},
		{"AOF everysec", []string{"--appendonly", "yes", "--appendfsync", "everysec"}, "up to about one second", "", true},
		{"AOF always", []string{"--appendonly", "yes", "--appendfsync", "always"}, "", "appendfsync always", true},
		{"CONFIG disabled", []string{"--rename-command", "CONFIG", ""}, "", "not readable", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := proctest.StartRedis(t, tt.args...)
			var logs proctest.SyncBuffer
			log := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
			s, err := redisstore.Open(context.Background(), "redis://"+r.Addr, redisstore.Options{Logger: log})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			d, err := s.CheckDurability(context.Background())
			if d.Checked != tt.checked || (err == nil) != tt.checked {
				t.Errorf("CheckDurability = %+v, %v; want checked=%v", d, err, tt.checked)
			}
			var warns, debugs []string
			for _, line := range strings.Split(logs.String(), "\n") {
				switch {
				case strings.Contains(line, `"level":"WARN"`):
					warns = append(warns, line)
				case strings.Contains(line, `"level":"DEBUG"`) && strings.Contains(line, "persistence"):
					debugs = append(debugs, line)
				}
			}
			if tt.warn == "" && len(warns) > 0 {
				t.Errorf("warnings, want none:\n%s", strings.Join(warns, "\n"))
			}
			if tt.warn != "" && (len(warns) != 1 || !strings.Contains(warns[0], tt.warn)) {
				t.Errorf("want one warning containing %q, got:\n%s", tt.warn, logs.String())
			}
			if tt.debug != "" && (len(debugs) != 1 || !strings.Contains(debugs[0], tt.debug)) {
				t.Errorf("want one debug line containing %q, got:\n%s", tt.debug, logs.String())
			}
		})
	}
}
