package main

import (
	"bufio"
	"context"
	"io"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tokengate/tokengate/internal/proctest"
)

// `tokengate dev` prints a walkthrough whose commands work as printed: run
// them with bash and check each step's answer.
func TestDevWalkthrough(t *testing.T) {
	t.Parallel()
	proctest.RequireBinary(t, "curl", "apt-get install -y curl")
	proctest.RequireBinary(t, "jq", "apt-get install -y jq")
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"dev", "--dir", filepath.Join(dir, ".tokengate"),
			"--listen", "127.0.0.1:0", "--grpc-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"},
			func(string) string { return "" }, pw, io.Discard)
		pw.Close()
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("dev exited with %v", err)
		}
	})

	var script strings.Builder
	in := false
	sc := bufio.NewScanner(pr)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "# --- walkthrough ---":
			in = true
		case line == "# --- end ---":
			in = false
		case in:
			script.WriteString(line + "\n")
		}
		if strings.HasPrefix(line, "Ctrl-C") {
			break
		}
	}
	go io.Copy(io.Discard, pr)
	if script.Len() == 0 {
		t.Fatal("no walkthrough printed")
	}
	cmd := exec.Command("bash", "-euo", "pipefail", "-c", script.String())
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("walkthrough failed: %v\n%s\n--- script ---\n%s", err, out, script.String())
	}
	// Three forward-auth answers: allowed, allowed after refresh, revoked.
	got := string(out)
	var statuses []string
	for _, line := range strings.Split(got, "\n") {
		if strings.HasPrefix(line, "HTTP/1.1 ") {
			statuses = append(statuses, strings.TrimSpace(line))
		}
	}
	want := []string{"HTTP/1.1 200 OK", "HTTP/1.1 200 OK", "HTTP/1.1 401 Unauthorized"}
	if strings.Join(statuses, "|") != strings.Join(want, "|") {
		t.Errorf("forward-auth answers = %q, want %q\n%s", statuses, want, got)
	}
	if !strings.Contains(strings.ToLower(got), "x-user-id: alice") || !strings.Contains(got, `"error":"token_revoked"`) {
		t.Errorf("walkthrough output lacks the identity header or token_revoked:\n%s", got)
	}
}
