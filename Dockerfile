# The Squall runtime image (tag squall:local in docker-compose.yml): the dispatcher, the worker
# and the `squall` CLI, built from this source tree.
#
#   docker build -t squall:local .      # or let `docker compose up` build it when missing
#
# Machines with a Docker Engine but no registry to pull the base images from build an image with
# the same tag from locally compiled binaries instead: scripts/docker-images.

# Builder: the stable Rust toolchain on Debian bookworm, the same Debian release as the runtime
# below, so the binaries link against the glibc they will run with.
FROM rust:1-bookworm AS builder
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p squall-dispatcher -p squall-worker -p squall-cli \
 && mkdir -p /out \
 && cp target/release/squall-dispatcher target/release/squall-worker target/release/squall /out/

# Runtime: slim Debian. glibc, libm and libgcc_s are what the binaries and the function
# libraries the worker loads (Rust cdylibs, C) need; nothing else is installed.
FROM debian:bookworm-slim
RUN groupadd --system --gid 10001 squall \
 && useradd --system --uid 10001 --gid squall --home-dir /var/lib/squall --no-create-home \
      --shell /usr/sbin/nologin squall \
 && install -d -o squall -g squall /var/lib/squall /var/lib/squall/dispatcher /var/lib/squall/worker
COPY --from=builder /out/ /usr/local/bin/
# Functions run inside the worker process; run it unprivileged. Named volumes mounted on
# /var/lib/squall/* take this ownership from the image when they are created.
USER squall
WORKDIR /var/lib/squall
EXPOSE 8080
# docker-compose.yml picks the program per service: squall-dispatcher or squall-worker.
CMD ["squall", "--help"]
