# The one test command (see README): every suite, against real redis-server,
# nginx and Chromium. .ci/run installs those first and then runs `make test`.
GO ?= go

.PHONY: test test-go test-fuzz test-deploy test-client test-e2e build run bench

test: lint test-go test-fuzz test-client test-e2e test-deploy

# golangci-lint (version pinned here and in .ci/run; config in .golangci.yml)
# over both modules. Install: go install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_LINT_VERSION)
GOLANGCI_LINT_VERSION ?= v2.15.0
GOLANGCI_LINT ?= golangci-lint
.PHONY: lint
lint:
	@$(GOLANGCI_LINT) version | grep -q "version $(GOLANGCI_LINT_VERSION:v%=%) " || { echo "lint: need golangci-lint $(GOLANGCI_LINT_VERSION), found: $$($(GOLANGCI_LINT) version 2>&1)"; exit 1; }
	$(GOLANGCI_LINT) run ./...
	cd test/deploy && $(GOLANGCI_LINT) run --config ../../.golangci.yml ./...

# Unit, integration and conformance tests of the product module.
test-go:
	$(GO) vet ./...
	$(GO) test -race -count=1 ./...

# Fuzz targets of extauthz (token extraction, claim-to-header mapping, Check
# on arbitrary headers, the canonical token parser, the JSON parser against
# encoding/json), each for a short fixed time (FUZZTIME, default 10s).
test-fuzz:
	GO=$(GO) scripts/fuzz.sh

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "-s -w -X main.version=$$(git describe --tags --always --dirty 2>/dev/null || echo dev)" -o bin/tokengate ./cmd/tokengate

run:
	$(GO) run ./cmd/tokengate dev

# Load harness: tokengate extauthz vs a no-op Authorization server,
# same generator, interleaved rounds; see test/load/README.md. Not part of test.
.PHONY: bench-load bench-load-smoke
bench-load:
	test/load/run.sh

bench-load-smoke:
	test/load/run.sh --smoke

# The TypeScript client (examples/client): type check, unit tests (vitest,
# fake timers), and the package as users install it (npm pack's tarball in
# throwaway projects with and without axios, require() and import, tsc with
# skipLibCheck false, bundle sizes, installs from a directory and a git URL).
# Needs `npm ci` in examples/client (.ci/run does it).
test-client:
	cd examples/client && npm run typecheck && npm test && npm run test:package

# The browser end-to-end proof: headless Chromium drives the demo
# page against tokengate refresher + extauthz behind nginx configured by
# examples/nginx/tokengate.conf. Needs `npm ci` in examples/client and
# test/e2e/browser. A screenshot lands in test-output/.
test-e2e:
	cd examples/client && npm run build
	cd test/e2e/browser && node --test --test-concurrency=1 e2e.test.mjs

# Deployment: the Dockerfile's build line, the Helm chart (helm lint
# --strict, helm template for four values sets, strict client-go decoding) and
# every Envoy / Istio / Envoy Gateway / compose example, checked in their own
# module (test/deploy) so helm's and client-go's dependencies stay out of the
# product's go.mod. Needs helm (.ci/run installs the pinned version).
test-deploy:
	cd test/deploy && $(GO) vet ./... && $(GO) test -count=1 -timeout 20m ./...

# The fault suite's long variants (docs/operations.md, "Fault suite"): 20 kill -9 of the refresher under 50 clients, a 10-minute soak,
# the disk-full test, and a 40 s Redis pause under 50 clients with a 30 s
# grace. The short variants run in test-go. Not part of test.
.PHONY: test-fault-long
test-fault-long:
	TOKENGATE_FAULT_LONG=1 $(GO) test -count=1 -v -timeout 60m ./test/fault/
	TOKENGATE_STALL_CLIENTS=50 TOKENGATE_STALL=40s TOKENGATE_STALL_GRACE=30s \
		$(GO) test -count=1 -v -timeout 10m -run TestStallLongerThanGrace ./refresher/store/redisstore/
