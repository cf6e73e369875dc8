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
# The Python runtime embeds CPython 3.11 through pyo3, which builds against its headers.
RUN apt-get update && apt-get install -y --no-install-recommends python3.11-dev \
 && rm -rf /var/lib/apt/lists/*
RUN cargo build --release --locked -p squall-dispatcher -p squall-worker -p squall-cli \
      -p squall-runtime-python -p squall-runtime-javascript \
 && mkdir -p /out \
 && cp target/release/squall-dispatcher target/release/squall-worker target/release/squall \
      target/release/libsquall_runtime_python.so target/release/libsquall_runtime_javascript.so /out/

# Runtime: slim Debian. glibc, libm and libgcc_s are what the binaries and the function
# libraries the worker loads (Rust cdylibs, C) need; libpython3.11 (with its standard library)
# is what the Python runtime embeds. The runtimes' libraries sit beside the worker, where it
# looks for them.
FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends libpython3.11 \
 && rm -rf /var/lib/apt/lists/*
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
