# A stand-in for the official nats image, for machines without a registry, built by
# scripts/docker-images from the static nats-server binary (>= 2.14). It has the official
# image's layout: the server at /nats-server as the entrypoint, so docker-compose.yml passes the
# same flags to either.
FROM scratch
COPY nats-server /nats-server
EXPOSE 4222 6222 8222
ENTRYPOINT ["/nats-server"]
