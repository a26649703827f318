# syntax=docker/dockerfile:1
# r2 serve, the R2-Router gateway, as a container image.
#
#   docker build -t r2 .
#   docker run --rm -p 8000:8000 -e OPENROUTER_API_KEY --stop-timeout 40 r2 \
#       serve --host 0.0.0.0 --port 8000 --llm-api-base https://openrouter.ai/api/v1
#
# What the container reads (see "## Scale out" in README.md and deploy/kubernetes/):
# - The pool: /etc/r2/r2.json ($R2_CONFIG), a copy of config/r2.json. Mount your own over it
#   (`-v ./pool.json:/etc/r2/r2.json:ro`) or mount a folder at /etc/r2 that holds r2.json.
# - The router: by default the released checkpoints, fetched, checked and converted on first
#   start into $XDG_CACHE_HOME/r2/checkpoints (in the /var/lib/r2 volume: keep the volume and the
#   next start needs no network). Your own router folder: mount it (`-v ./my-router:/etc/r2/router:ro
#   -e R2_CHECKPOINTS=/etc/r2/router`, and `-e R2_CONFIG=/etc/r2/router/config.json` when the folder
#   carries its own pool) or bake it into a derived image:
#       FROM r2
#       COPY my-router/ /etc/r2/router/
#       ENV R2_CHECKPOINTS=/etc/r2/router R2_CONFIG=/etc/r2/router/config.json R2_OFFLINE=1
# - Keys: OPENROUTER_API_KEY (provider) and R2_SERVER_API_KEY (clients), from the environment.
# - Embeddings: in-process Qwen3-0.6B by default (fetched into $HF_HOME, ~1.5 GB, 3.5 GB RAM at
#   load); for throughput pass `--embed-url http://<vllm>:8000` to use a vLLM server instead.

# Build with the toolchain the workspace is tested with (Cargo.lock is version 4).
ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
# The whole workspace: cargo reads every member's manifest (crates/*, xtask), and r2-router
# include_str!s config/r2.json. .dockerignore keeps target/, .git and the rest out.
COPY . .
# Cache mounts keep the crates.io downloads and the build between builds (BuildKit); the binary
# is copied out of the cached target folder, which does not end up in the image.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p r2-cli \
    && install -D -m 0755 target/release/r2 /out/r2

FROM debian:bookworm-slim AS runtime
# ca-certificates: HTTPS to the provider, the Hub and the checkpoint download (rustls reads the
# system roots). curl: the HEALTHCHECK below. curl rather than a bash /dev/tcp one-liner: it
# speaks real HTTP (status code via --fail, redirects, timeouts) and works for any host or port
# in $R2_HEALTH_URL; it costs a few MB. Versions are the release's (pinned ones would break with
# each Debian security update).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/*

# A fixed numeric uid, so Kubernetes' runAsNonRoot can verify it without a runAsUser.
RUN groupadd --system --gid 10001 r2 \
    && useradd --system --uid 10001 --gid r2 --home-dir /var/lib/r2 --shell /usr/sbin/nologin r2 \
    && mkdir -p /etc/r2 /var/lib/r2/huggingface /var/lib/r2/cache \
    && chown -R r2:r2 /var/lib/r2

COPY --from=build /out/r2 /usr/local/bin/r2
COPY config/r2.json /etc/r2/r2.json

ENV R2_CONFIG=/etc/r2/r2.json \
    HF_HOME=/var/lib/r2/huggingface \
    XDG_CACHE_HOME=/var/lib/r2/cache \
    HOME=/var/lib/r2 \
    R2_HEALTH_URL=http://127.0.0.1:8000/healthz
# Downloads (the embedding model in HF_HOME, the released router in XDG_CACHE_HOME) live here;
# a named volume or a persistent disk keeps them across restarts.
VOLUME ["/var/lib/r2"]

USER 10001:10001
WORKDIR /var/lib/r2
EXPOSE 8000

# /healthz answers once the router and embedder are loaded (the first start may download them:
# hence the start period). Change R2_HEALTH_URL when you change --port. Shell form, so that the
# variable is expanded when the check runs.
# hadolint ignore=DL3025
HEALTHCHECK --interval=15s --timeout=3s --start-period=120s --retries=3 \
    CMD curl --fail --silent --show-error --max-time 2 --output /dev/null "$R2_HEALTH_URL" || exit 1

# r2 runs as PID 1 and drains on SIGTERM for --drain-timeout (30 s): give `docker stop` more
# than that (`--stop-timeout 40` / `docker stop -t 40`; Docker's default is 10 s).
STOPSIGNAL SIGTERM
ENTRYPOINT ["r2"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000", "--drain-timeout", "30", "--log-format", "json"]
