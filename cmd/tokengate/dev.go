package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"text/template"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/tokengate/tokengate/extauthz"
	"github.com/tokengate/tokengate/internal/envflag"
	"github.com/tokengate/tokengate/refresher/store"
)

// devAudienceBoth is the aud of tokens in `tokengate dev`, shared by both halves.
const devAudienceBoth = "tokengate"

// runDev runs the refresher and extauthz in one process on embedded
// defaults: a bolt store, signing key and admin token under --dir, extauthz
// trusting the refresher's key and denying revoked sessions. It prints a
// walkthrough with curl commands that work as printed.
func runDev(ctx context.Context, e env) error {
	fs := flag.NewFlagSet("dev", flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	fs.Usage = envflag.Usage(fs, "TOKENGATE_")
	var (
		listen, grpcListen, httpListen, dir, logLevel, cors, transport string
		accessTTL, grace                                               time.Duration
	)
	fs.StringVar(&listen, "listen", ":8080", "refresher HTTP address")
	fs.StringVar(&grpcListen, "grpc-listen", ":9001", "extauthz gRPC address")
	fs.StringVar(&httpListen, "http-listen", ":9002", "extauthz HTTP (forward-auth) address")
	fs.StringVar(&dir, "dir", ".tokengate", "directory for the bolt store, signing key and admin token")
	fs.StringVar(&logLevel, "log-level", "warn", "log level (logs go to stderr, the walkthrough to stdout)")
	fs.StringVar(&cors, "cors-allowed-origins", "", "browser origins allowed to call /v1/token and /v1/revoke")
	fs.StringVar(&transport, "refresh-token-transport", "body", "body, cookie or both")
	fs.DurationVar(&accessTTL, "access-ttl", 15*time.Minute, "access-token lifetime")
	fs.DurationVar(&grace, "reuse-grace", 30*time.Second, "reuse grace window")
	if done, err := parseFlags(fs, e); done || err != nil {
		return err
	}
	log, err := newLogger(e.stderr, logLevel)
	if err != nil {
		return fmt.Errorf("%w: %w", errUsage, err)
	}

	// The refresher half: the refresher's own flags with dev defaults.
	var rf refresherFlags
	rf.register(flag.NewFlagSet("refresher", flag.ContinueOnError))
	rf.dev = true
	rf.listen, rf.cors, rf.transport = listen, cors, transport
	rf.store = "bolt://" + filepath.Join(dir, "tokengate.db")
	rf.audience = devAudienceBoth
	rf.cfg.AccessTTL, rf.cfg.ReuseGrace = accessTTL, grace
	rf.shutdown.drainPeriod = 0 // no load balancer to drain in dev: Ctrl-C stops at once
	rln, err := net.Listen("tcp", listen)
	if err != nil {
		return fmt.Errorf("--listen: %w", err)
	}
	refresherURL := "http://" + localAddr(rln.Addr())
	rf.issuer = refresherURL
	app, err := rf.build(ctx, log.With("service", "refresher"), prometheus.NewRegistry())
	if err != nil {
		rln.Close()
		return err
	}
	defer app.store.Close()

	// The extauthz half trusts the refresher's keys (inline: no fetch from
	// ourselves before we listen) and asks the store about revocations.
	jwks := app.srv.JWKS()
	cfg := extauthz.Config{Providers: []extauthz.Provider{{Issuer: app.cfg.Issuer, Audiences: app.cfg.Audience, JWKS: jwks}}}
	if err := cfg.Validate(); err != nil {
		rln.Close()
		return fmt.Errorf("dev extauthz config: %w", err)
	}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return app.serve(gctx, rln) })
	g.Go(func() error {
		return serveExtauthz(gctx, cfg, extauthzRun{
			GRPCListen: grpcListen, HTTPListen: httpListen, Reflection: true,
			Logger: log.With("service", "extauthz"), Registry: prometheus.NewRegistry(),
			Denylist: storeDenylist{st: app.store},
			OnListening: func(grpcAddr, httpAddr net.Addr) {
				printWalkthrough(e.stdout, walkthrough{
					Refresher: refresherURL, GRPC: localAddr(grpcAddr), HTTP: "http://" + localAddr(httpAddr),
					Dir: dir, AdminTokenFile: app.adminTokenPath,
				})
			},
		})
	})
	return g.Wait()
}

// localAddr names a bound address the way a user on this machine types it.
func localAddr(a net.Addr) string {
	_, port, _ := net.SplitHostPort(a.String())
	return "localhost:" + port
}

// storeDenylist is extauthz's revocation check in dev mode: one process, so
// it reads the session straight from the store (a bolt read, microseconds),
// and a sign-out is refused on the very next request.
type storeDenylist struct{ st store.Store }

var _ extauthz.Denylist = storeDenylist{}

func (d storeDenylist) Revoked(sid string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	s, err := d.st.GetSession(ctx, sid)
	return err == nil && !s.RevokedAt.IsZero()
}

func (d storeDenylist) Ready() bool {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	return d.st.Ping(ctx) == nil
}

type walkthrough struct {
	Refresher, GRPC, HTTP, Dir, AdminTokenFile string
}

var walkthroughText = template.Must(template.New("walkthrough").Parse(`tokengate dev is running: refresher and extauthz in one process.
  refresher  {{.Refresher}}   (bolt store, signing key and admin token in {{.Dir}}/)
  extauthz   gRPC {{.GRPC}}, forward-auth {{.HTTP}}/authz/
  JWKS       {{.Refresher}}/.well-known/jwks.json

Try it (needs curl and jq):
# --- walkthrough ---
# 1. Start a session: what your login backend does after checking a password.
ADMIN=$(cat {{.AdminTokenFile}})
PAIR=$(curl -s -X POST {{.Refresher}}/v1/sessions -H "Authorization: Bearer $ADMIN" -H 'Content-Type: application/json' -d '{"sub":"alice","claims":{"name":"Alice","roles":["admin"]}}')
AT=$(echo "$PAIR" | jq -r .access_token); RT=$(echo "$PAIR" | jq -r .refresh_token)

# 2. Call your API through forward-auth (what nginx auth_request / Envoy ask extauthz): 200 with x-user-id.
curl -i {{.HTTP}}/authz/api/hello -H "Authorization: Bearer $AT"

# 3. Refresh: the browser client does this when an API answers 401 token_expired.
PAIR=$(curl -s -X POST {{.Refresher}}/v1/token -d grant_type=refresh_token -d "refresh_token=$RT")
AT=$(echo "$PAIR" | jq -r .access_token); RT=$(echo "$PAIR" | jq -r .refresh_token)
curl -i {{.HTTP}}/authz/api/hello -H "Authorization: Bearer $AT"

# 4. Sign out: the session is revoked, and its access token is refused (401 token_revoked).
curl -s -X POST {{.Refresher}}/v1/revoke -d "token=$RT"
curl -i {{.HTTP}}/authz/api/hello -H "Authorization: Bearer $AT"
# --- end ---

Ctrl-C stops both services.
`))

func printWalkthrough(w io.Writer, wt walkthrough) {
	_ = walkthroughText.Execute(w, wt)
}
