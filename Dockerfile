# One image with all three binaries; compose and Kubernetes pick the command.
#
# Dependencies are compiled in a layer of their own (cargo-chef), keyed on the lockfile and
# manifests only: an edit to hepdb's own code rebuilds hepdb, not the dependency tree.
FROM rust:1.95-slim-bookworm AS chef
RUN apt-get update && apt-get install -y --no-install-recommends cmake gcc g++ make \
 && rm -rf /var/lib/apt/lists/* \
 && cargo install cargo-chef --locked --version ^0.1
WORKDIR /src

FROM chef AS plan
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS build
COPY --from=plan /src/recipe.json recipe.json
RUN cargo chef cook --release --locked --recipe-path recipe.json
COPY . .
RUN cargo build --release --locked --bin hepdb-gateway --bin hepdb-worker --bin hepdb-admin

# Slim and non-root; bash stays for compose's healthchecks (/dev/tcp), nothing else is added.
FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 hepdb \
 && useradd --system --uid 10001 --gid 10001 --no-create-home hepdb
COPY --from=build /src/target/release/hepdb-gateway /src/target/release/hepdb-worker /src/target/release/hepdb-admin /usr/local/bin/
USER 10001:10001
ENV HEPDB__GATEWAY__LISTEN=0.0.0.0:8080 HEPDB__PLATFORM__LISTEN=0.0.0.0:8081 \
    HEPDB__GATEWAY__METRICS_LISTEN=0.0.0.0:9090 HEPDB__WORKER__ADMIN_LISTEN=0.0.0.0:9091 \
    HEPDB__TELEMETRY__LOG_FORMAT=json
EXPOSE 8080 8081 9090 9091
CMD ["hepdb-gateway"]
