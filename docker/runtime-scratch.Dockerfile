# The squall:local image for machines without a registry, built by scripts/docker-images from
# a staged folder: the release binaries of this machine and the shared libraries they need,
# copied from this machine at the paths the dynamic loader looks for them.
#
# Why FROM scratch rather than a Debian base made with debootstrap: it builds in seconds with no
# network, needs no root filesystem tool on the host, and the libraries are by construction the
# ones the binaries were linked against. The set is glibc (libc, libm, libpthread, libdl, librt,
# the loader) and libgcc_s: what the binaries need and what function libraries (Rust cdylibs, C)
# that the worker loads with dlopen need. A function that needs more than that needs the Debian
# image built from ./Dockerfile.
FROM scratch
# Binaries, libraries, /etc/passwd and /etc/group naming the squall user, and /tmp.
COPY rootfs/ /
# The state folders belong to the unprivileged user the services run as; named volumes mounted
# on them take this ownership when they are created.
COPY --chown=10001:10001 state/ /var/lib/squall/
ENV PATH=/usr/local/bin
USER 10001:10001
WORKDIR /var/lib/squall
EXPOSE 8080
CMD ["squall", "--help"]
