package deploy

import (
	"bytes"
	"debug/elf"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
)

// Docker cannot run here, so the Dockerfile is checked by reading it: the
// runtime stage's promises are asserted, and the build stage's exact `go
// build` line is executed (parsed from the file, so the test cannot drift
// from it) and the binary run.

// dockerInstr is one instruction with its continuation lines joined.
type dockerInstr struct {
	op   string // upper case
	args string
}

func parseDockerfile(t *testing.T) [][]dockerInstr {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(repoRoot(t), "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	var stages [][]dockerInstr
	var cur strings.Builder
	flush := func() {
		line := strings.TrimSpace(cur.String())
		cur.Reset()
		if line == "" {
			return
		}
		op, args, _ := strings.Cut(line, " ")
		in := dockerInstr{op: strings.ToUpper(op), args: strings.TrimSpace(args)}
		if in.op == "FROM" {
			stages = append(stages, nil)
		}
		if len(stages) == 0 {
			return // ARG before the first FROM
		}
		stages[len(stages)-1] = append(stages[len(stages)-1], in)
	}
	for _, line := range strings.Split(string(data), "\n") {
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, "#") && cur.Len() == 0 {
			continue
		}
		if s, ok := strings.CutSuffix(trimmed, "\\"); ok {
			cur.WriteString(s + " ")
			continue
		}
		cur.WriteString(trimmed)
		flush()
	}
	flush()
	return stages
}

// shellWords splits a POSIX shell command line (quotes, no expansions).
func shellWords(t *testing.T, s string) []string {
	t.Helper()
	var words []string
	var w strings.Builder
	inWord := false
	var quote rune
	for _, r := range s {
		switch {
		case quote != 0 && r == quote:
			quote = 0
		case quote != 0:
			w.WriteRune(r)
		case r == '"' || r == '\'':
			quote, inWord = r, true
		case r == ' ' || r == '\t':
			if inWord {
				words = append(words, w.String())
				w.Reset()
				inWord = false
			}
		default:
			w.WriteRune(r)
			inWord = true
		}
	}
	if quote != 0 {
		t.Fatalf("unbalanced quote in %q", s)
	}
	if inWord {
		words = append(words, w.String())
	}
	return words
}

func TestDockerfileRuntimeStage(t *testing.T) {
	t.Parallel()
	stages := parseDockerfile(t)
	if len(stages) < 2 {
		t.Fatalf("want a multi-stage build, got %d stage(s)", len(stages))
	}
	final := stages[len(stages)-1]
	if final[0].args != "gcr.io/distroless/static:nonroot" {
		t.Errorf("runtime stage FROM %q, want gcr.io/distroless/static:nonroot", final[0].args)
	}
	var user, entrypoint string
	for _, in := range final {
		switch in.op {
		case "RUN":
			t.Errorf("runtime stage runs %q: distroless has no shell", in.args)
		case "USER":
			user = in.args
		case "ENTRYPOINT":
			entrypoint = in.args
		case "COPY":
			if !strings.Contains(in.args, "--from=") {
				t.Errorf("runtime stage copies from the build context: %q", in.args)
			}
		}
	}
	if u, _, _ := strings.Cut(user, ":"); u != "65532" {
		t.Errorf("USER %q, want 65532", user)
	}
	// The build image's Go matches the module's go line (major.minor).
	df, _ := os.ReadFile(filepath.Join(repoRoot(t), "Dockerfile"))
	gm, _ := os.ReadFile(filepath.Join(repoRoot(t), "go.mod"))
	arg := regexp.MustCompile(`(?m)^ARG GO_VERSION=(\d+\.\d+)`).FindSubmatch(df)
	mod := regexp.MustCompile(`(?m)^go (\d+\.\d+)`).FindSubmatch(gm)
	if arg == nil || mod == nil || string(arg[1]) != string(mod[1]) {
		t.Errorf("Dockerfile ARG GO_VERSION %q does not match go.mod's go %q", arg, mod)
	}
	if entrypoint != `["/tokengate"]` {
		t.Errorf("ENTRYPOINT %s, want the exec form [\"/tokengate\"] (no shell to run a string)", entrypoint)
	}
}

// dockerBuild is the outcome of building tokengate with the Dockerfile's
// exact go build line, shared by the tests that need a binary.
type dockerBuild struct {
	bin, version string
	env          map[string]string
	args         []string
	err          error
}

var (
	dockerBuildOnce sync.Once
	dockerBuilt     dockerBuild
	dockerBuildDir  string // removed by TestMain
)

func TestMain(m *testing.M) {
	code := m.Run()
	if dockerBuildDir != "" {
		os.RemoveAll(dockerBuildDir)
	}
	os.Exit(code)
}

// dockerfileBinary builds tokengate once per test binary exactly as the
// Dockerfile does (its RUN … go build line, parsed, with the build args
// filled in) and returns the result.
func dockerfileBinary(t *testing.T) dockerBuild {
	t.Helper()
	stages := parseDockerfile(t)
	root := repoRoot(t)
	dockerBuildOnce.Do(func() { dockerBuilt = buildLikeDockerfile(t, stages, root) })
	if dockerBuilt.err != nil {
		t.Fatal(dockerBuilt.err)
	}
	return dockerBuilt
}

func buildLikeDockerfile(t *testing.T, stages [][]dockerInstr, root string) dockerBuild {
	var goBuild []string
	for _, stage := range stages {
		for _, in := range stage {
			if in.op == "RUN" && strings.Contains(in.args, "go build") {
				if goBuild != nil {
					return dockerBuild{err: fmt.Errorf("more than one go build in the Dockerfile")}
				}
				goBuild = shellWords(t, in.args)
			}
		}
	}
	if goBuild == nil {
		return dockerBuild{err: fmt.Errorf("no RUN … go build in the Dockerfile")}
	}
	const version = "v9.8.7-dockerfile-test"
	expand := strings.NewReplacer("${VERSION}", version, "$VERSION", version,
		"$TARGETOS", runtime.GOOS, "${TARGETOS}", runtime.GOOS, "$TARGETARCH", runtime.GOARCH, "${TARGETARCH}", runtime.GOARCH)
	env := map[string]string{}
	var args []string
	for i, w := range goBuild {
		w = expand.Replace(w)
		switch {
		case args != nil:
			args = append(args, w)
		case w == "go" && i+1 < len(goBuild) && goBuild[i+1] == "build":
			args = []string{}
		case strings.HasPrefix(w, "--mount="):
		case strings.Contains(w, "="):
			k, v, _ := strings.Cut(w, "=")
			env[k] = v
		default:
			return dockerBuild{err: fmt.Errorf("unexpected word %q before go build", w)}
		}
	}
	args = args[1:] // "build"
	// Write the binary to a temporary folder, not to /out.
	dir, err := os.MkdirTemp("", "tokengate-dockerfile-")
	if err != nil {
		return dockerBuild{err: err}
	}
	dockerBuildDir = dir
	out := filepath.Join(dir, "tokengate")
	runArgs := slices.Clone(args)
	for i := range runArgs {
		if runArgs[i] == "-o" && i+1 < len(runArgs) {
			runArgs[i+1] = out
		}
	}
	cmd := exec.Command("go", append([]string{"build"}, runArgs...)...)
	cmd.Dir = root
	cmd.Env = os.Environ()
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	if b, err := cmd.CombinedOutput(); err != nil {
		return dockerBuild{err: fmt.Errorf("go build %s: %v\n%s", strings.Join(runArgs, " "), err, b)}
	}
	return dockerBuild{bin: out, version: version, env: env, args: args}
}

// TestDockerfileBuild builds tokengate exactly as the Dockerfile does and
// runs `tokengate version`.
func TestDockerfileBuild(t *testing.T) {
	t.Parallel()
	b := dockerfileBinary(t)
	out, version := b.bin, b.version
	if b.env["CGO_ENABLED"] != "0" {
		t.Errorf("CGO_ENABLED=%q, want 0 for a static binary", b.env["CGO_ENABLED"])
	}
	joined := strings.Join(b.args, " ")
	for _, want := range []string{"-trimpath", "-X main.version=" + version, "./cmd/tokengate"} {
		if !strings.Contains(joined, want) {
			t.Errorf("go build %s lacks %q", joined, want)
		}
	}

	got, err := exec.Command(out, "version").CombinedOutput()
	if err != nil {
		t.Fatalf("tokengate version: %v\n%s", err, got)
	}
	if strings.TrimSpace(string(got)) != "tokengate "+version {
		t.Errorf("tokengate version = %q, want %q", got, "tokengate "+version)
	}

	// Static: no dynamic loader, no shared libraries (distroless/static has no libc).
	f, err := elf.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Error("binary has a PT_INTERP: it is dynamically linked")
		}
	}
	if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
		t.Errorf("binary links %v", libs)
	}
	// -trimpath: no build-machine paths inside.
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(data, []byte(repoRoot(t)+"/")) {
		t.Errorf("binary contains the source path %s: -trimpath did not apply", repoRoot(t))
	}
}

// TestDockerignore: the build context keeps what the binary needs and drops
// the rest (.git, charts, tests, node_modules).
func TestDockerignore(t *testing.T) {
	t.Parallel()
	data, err := os.ReadFile(filepath.Join(repoRoot(t), ".dockerignore"))
	if err != nil {
		t.Fatal(err)
	}
	var patterns []string
	for _, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if line != "" && !strings.HasPrefix(line, "#") {
			patterns = append(patterns, strings.TrimPrefix(line, "/"))
		}
	}
	ignored := func(rel string) bool {
		for _, p := range patterns {
			if strings.HasPrefix(p, "!") {
				continue
			}
			suffix, anyDepth := strings.CutPrefix(p, "**/")
			parts := strings.Split(rel, "/")
			for i := range parts {
				prefix := strings.Join(parts[:i+1], "/")
				if ok, _ := filepath.Match(p, prefix); ok {
					return true
				}
				if anyDepth {
					if ok, _ := filepath.Match(suffix, parts[i]); ok {
						return true
					}
				}
			}
		}
		return false
	}
	// Every source directory the binary compiles from must be in the context.
	cmd := exec.Command("go", "list", "-deps", "-f", "{{if not .Standard}}{{.Dir}}{{end}}", "./cmd/tokengate")
	cmd.Dir = repoRoot(t)
	listed, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	need := []string{"go.mod", "go.sum"}
	for _, dir := range strings.Fields(string(listed)) {
		if rel, err := filepath.Rel(repoRoot(t), dir); err == nil && !strings.HasPrefix(rel, "..") {
			need = append(need, rel+"/x.go")
		}
	}
	for _, rel := range need {
		if ignored(rel) {
			t.Errorf("%s is needed by the build but .dockerignore drops it", rel)
		}
	}
	for _, rel := range []string{".git/HEAD", "charts/tokengate/values.yaml", "test/deploy/go.mod", "examples/client/node_modules/x/index.js", ".tokengate/tokengate.db", "bin/tokengate"} {
		if !ignored(rel) {
			t.Errorf("%s is sent to the Docker build context", rel)
		}
	}
}
