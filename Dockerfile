# wshub container image.
#
#   docker build -t wshub:latest .
#   docker run -p 8080:8080 wshub:latest                      # the baked deploy/config/wshub.yaml
#   docker run wshub:latest check-config /etc/wshub/wshub.yaml
#
# deploy/docker-compose.yml builds this for its three nodes; deploy/k8s/ runs it as wshub:latest.
# crates/wshub/tests/deploy.rs checks what can be checked without a Docker engine (files copied
# exist and are not .dockerignored, non-root user, toolchain new enough for Cargo.lock, ...).

# ---------------------------------------------------------------------------------------------
# Build stage. The toolchain is the one the workspace is tested with; it must be at least the
# newest `rust-version` among the binary's locked dependencies (1.91 at the time of writing),
# which is newer than the workspace's own `rust-version = "1.85"`. Bookworm, like the runtime
# stage, so the binary links against the same glibc.
FROM rust:1.95-bookworm AS build
WORKDIR /src

# Dependency cache: with only the manifests, the lock file and empty targets, build every
# dependency once. This layer is reused until a Cargo.toml or Cargo.lock changes, so editing
# sources rebuilds only the workspace's own crates. Every workspace member's manifest must be
# here (cargo loads the whole workspace), and each needs a target to parse.
COPY Cargo.toml Cargo.lock ./
COPY crates/wshub/Cargo.toml crates/wshub/Cargo.toml
COPY crates/wshub-protocol/Cargo.toml crates/wshub-protocol/Cargo.toml
COPY crates/wshub-client/Cargo.toml crates/wshub-client/Cargo.toml
COPY crates/wshub-bench/Cargo.toml crates/wshub-bench/Cargo.toml
RUN mkdir -p crates/wshub/src crates/wshub-protocol/src crates/wshub-client/src \
        crates/wshub-bench/src examples \
 && echo 'fn main() {}' > crates/wshub/src/main.rs \
 && echo 'fn main() {}' > crates/wshub-bench/src/main.rs \
 && echo 'fn main() {}' > examples/custom_handler.rs \
 && touch crates/wshub/src/lib.rs crates/wshub-protocol/src/lib.rs crates/wshub-client/src/lib.rs \
 && cargo build --locked --release -p wshub --bin wshub \
 && rm -rf crates examples

# The real sources. They are touched so cargo sees them as newer than the stub artifacts above
# (COPY keeps the build context's modification times, which can be older).
COPY crates crates
COPY examples examples
RUN find crates examples -name '*.rs' -exec touch {} + \
 && cargo build --locked --release -p wshub --bin wshub \
 && cp target/release/wshub /usr/local/bin/wshub \
 && /usr/local/bin/wshub --version

# ---------------------------------------------------------------------------------------------
# Runtime stage: the binary, its config and CA certificates (TLS to brokers and webhooks).
FROM debian:bookworm-slim

RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 wshub \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin wshub

COPY --from=build /usr/local/bin/wshub /usr/local/bin/wshub
COPY deploy/config/wshub.yaml /etc/wshub/wshub.yaml

# Numeric, so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 10001:10001

# server.addr in deploy/config/wshub.yaml: /ws, /health, /health/ready, /metrics, /api/*.
EXPOSE 8080

# No HEALTHCHECK: the image has no curl or wget, and wshub has no probe subcommand.
# Orchestrators probe over HTTP instead: GET /health (liveness; 503 once draining) and
# GET /health/ready (readiness; 503 while the bus is degraded or the node drains), as
# deploy/k8s/deployment.yaml does.
#
# wshub is PID 1 (exec form) and handles SIGTERM itself: it stops accepting, closes clients
# with 1001 and leaves the cluster cleanly. SIGHUP reloads the config file.
ENTRYPOINT ["wshub"]
CMD ["serve", "--config", "/etc/wshub/wshub.yaml"]
