# Multi-stage build: compile with the Rust toolchain, run on a slim base as a non-root user.
# Build:  docker build -t tollgate .
# Run:    docker run -p 8080:8080 -v $PWD/config:/etc/tollgate:ro tollgate
#         (the mounted config must listen on 0.0.0.0 and therefore have auth enabled; the
#         folder mounted over /etc/tollgate replaces the image's, so it holds the prompt
#         folder too: `prompts.dir` is relative to the config file, /etc/tollgate/prompts)

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock clippy.toml ./
COPY src ./src
COPY config ./config
COPY benches ./benches
COPY loadtest/mock ./loadtest/mock
COPY loadtest/load ./loadtest/load
RUN cargo build --release --locked --bin tollgate

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin tollgate
COPY --from=build /src/target/release/tollgate /usr/local/bin/tollgate
COPY config/tollgate.yaml /etc/tollgate/tollgate.yaml
COPY config/prompts /etc/tollgate/prompts
USER tollgate
VOLUME ["/etc/tollgate"]
EXPOSE 8080 9090
ENV TOLLGATE_CONFIG=/etc/tollgate/tollgate.yaml TOLLGATE_LOG_FORMAT=json
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/tollgate"]
CMD ["serve"]
