# One image with all three binaries; compose and Kubernetes pick the command.
FROM rust:1.95-slim-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends cmake gcc g++ make && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --bin hepdb-gateway --bin hepdb-worker --bin hepdb-admin

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home hepdb
COPY --from=build /src/target/release/hepdb-gateway /src/target/release/hepdb-worker /src/target/release/hepdb-admin /usr/local/bin/
USER 10001
ENV HEPDB__GATEWAY__LISTEN=0.0.0.0:8080 HEPDB__PLATFORM__LISTEN=0.0.0.0:8081 \
    HEPDB__WORKER__ADMIN_LISTEN=0.0.0.0:9091 \
    HEPDB__TELEMETRY__LOG_FORMAT=json
EXPOSE 8080 8081 9091
CMD ["hepdb-gateway"]
