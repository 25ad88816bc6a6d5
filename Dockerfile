# syntax=docker/dockerfile:1
# One image for both services; the subcommand chooses:
#   docker run IMAGE refresher --store bolt:///data/tokengate.db ...
#   docker run IMAGE extauthz  --jwks-url http://refresher:8080/.well-known/jwks.json ...
# Build: docker build --build-arg VERSION=$(git describe --tags --always) -t tokengate .
# The build flags below are parsed by test/deploy (TestDockerfileBuild), which
# builds with exactly them and runs `tokengate version`; keep them on the
# `go build` line.

ARG GO_VERSION=1.26

FROM --platform=$BUILDPLATFORM golang:${GO_VERSION} AS build
ARG TARGETOS
ARG TARGETARCH
ARG VERSION=dev
WORKDIR /src
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH \
    go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/tokengate ./cmd/tokengate
# An empty /data owned by nonroot: a named volume mounted there (compose,
# `docker run -v`) starts writable for the bolt store.
RUN mkdir -p /out/data

# distroless/static: CA certificates, /etc/passwd with nonroot, tzdata; no
# shell, no package manager. Probes use `tokengate healthcheck`.
FROM gcr.io/distroless/static:nonroot
COPY --from=build /out/tokengate /tokengate
COPY --from=build --chown=65532:65532 /out/data /data
# 65532 is distroless's "nonroot"; numeric so runAsNonRoot can verify it.
USER 65532:65532
# refresher HTTP, extauthz gRPC, extauthz HTTP
EXPOSE 8080 9001 9002
ENTRYPOINT ["/tokengate"]
CMD ["--help"]
