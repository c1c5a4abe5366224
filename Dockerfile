# The concord image: one statically linked binary and nothing else. Build the binary first (no musl target
# needed; a separate target dir keeps the normal build cache intact):
#
#   RUSTFLAGS="-C target-feature=+crt-static" CARGO_TARGET_DIR=target/static \
#     cargo build --release --target x86_64-unknown-linux-gnu -p concord
#   docker build -t concord:dev .
#
# `docker compose up` (compose.yaml) builds it the same way.
FROM scratch
COPY target/static/x86_64-unknown-linux-gnu/release/concord /concord
# HTTP API, server RPC, LAN and WAN gossip, DNS.
EXPOSE 8500 8300 8301 8301/udp 8302 8302/udp 8600 8600/udp
ENTRYPOINT ["/concord"]
