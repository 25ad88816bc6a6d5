package envflag

import (
	"flag"
	"io"
	"strings"
	"testing"
	"time"
)

func TestParse(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		listen  string
		ttl     time.Duration
		wantErr string
	}{
		{name: "defaults", listen: ":8080", ttl: 15 * time.Minute},
		{name: "env fills", env: map[string]string{"TOKENGATE_GRPC_LISTEN": ":1", "TOKENGATE_ACCESS_TTL": "1m"}, listen: ":1", ttl: time.Minute},
		{name: "flag wins", args: []string{"--grpc-listen=:2"}, env: map[string]string{"TOKENGATE_GRPC_LISTEN": ":1"}, listen: ":2", ttl: 15 * time.Minute},
		{name: "bad env named", env: map[string]string{"TOKENGATE_ACCESS_TTL": "soon"}, wantErr: "TOKENGATE_ACCESS_TTL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			fs := flag.NewFlagSet("x", flag.ContinueOnError)
			fs.SetOutput(io.Discard)
			listen := fs.String("grpc-listen", ":8080", "")
			ttl := fs.Duration("access-ttl", 15*time.Minute, "")
			err := Parse(fs, tt.args, "TOKENGATE_", func(k string) string { return tt.env[k] })
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want it to name %s", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if *listen != tt.listen || *ttl != tt.ttl {
				t.Fatalf("got %q %v, want %q %v", *listen, *ttl, tt.listen, tt.ttl)
			}
		})
	}
}
