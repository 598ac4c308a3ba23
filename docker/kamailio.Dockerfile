# Kamailio for the vvp-edge: Debian 12, Debian's Kamailio packages, and the
# http_async_client module built by kamailio/install.sh - the same script CI runs natively
# and deploy/install-vm.sh runs on VMs, so image, CI and VMs cannot drift.
#
#   docker build -f docker/kamailio.Dockerfile -t vvp-edge/kamailio .
#
# Settings: the VVP_* environment variables listed in kamailio/kamailio.cfg's header.
# Build argument: KAMAILIO_BASE_IMAGE (a mirror's copy of debian:12-slim, say).
ARG KAMAILIO_BASE_IMAGE=debian:12-slim
FROM ${KAMAILIO_BASE_IMAGE}

# install.sh installs sipp and kamcli too (KAMAILIO_SKIP_TOOLS unset): kamcli is how
# operators look inside (docker compose exec kamailio kamcli rpc htable.dump vvp), and sipp
# is handy for checks from inside the edge's network namespace.
COPY kamailio/install.sh /tmp/vvp-edge/kamailio/install.sh
COPY kamailio/patches/ /tmp/vvp-edge/kamailio/patches/
RUN set -eux; \
    bash /tmp/vvp-edge/kamailio/install.sh; \
    # netbase: /etc/protocols, without which Kamailio cannot look up TCP's protocol
    # number and sets no TCP_NODELAY on SIP over TCP (tcp_init() says so at start).
    apt-get install -y --no-install-recommends netbase >/dev/null; \
    # Keep what the built module links against, then drop the build tool chain and the
    # source package: they are only needed to build it.
    so=$(find /usr/lib -path '*kamailio/modules/http_async_client.so' | head -n1); \
    for lib in $(ldd "$so" | awk '/=> \//{print $3}'); do \
        real=$(readlink -f "$lib"); \
        pkg=$(dpkg -S "$real" 2>/dev/null || dpkg -S "${real#/usr}" 2>/dev/null || true); \
        [ -z "$pkg" ] || apt-mark manual "${pkg%%:*}" >/dev/null; \
    done; \
    apt-get purge -y --auto-remove dpkg-dev build-essential bison flex pkg-config patch \
        libcurl4-openssl-dev libevent-dev libssl-dev >/dev/null; \
    rm -rf /var/lib/apt/lists/* /tmp/vvp-edge; \
    test -f "$so"

COPY kamailio/kamailio.cfg /etc/kamailio/kamailio.cfg
COPY kamailio/kamcli.ini /etc/kamcli/kamcli.ini
COPY docker/entrypoints/kamailio.sh /usr/local/bin/vvp-kamailio
COPY docker/entrypoints/sip-options-check.py /usr/local/bin/vvp-sip-check

# The module really loads and the config parses (fails the build otherwise).
RUN kamailio -c -f /etc/kamailio/kamailio.cfg \
    && install -d -o kamailio -g kamailio -m 0770 /run/kamailio

# In a container SIP and HTTP must listen beyond loopback: Docker publishes 5060 from
# the container's interface, and Prometheus scrapes /metrics over the compose network.
# (/RPC still answers loopback only: kamailio.cfg.)
ENV VVP_SIP_ADDR=0.0.0.0 \
    VVP_SIP_PORT=5060 \
    VVP_HTTP_ADDR=0.0.0.0 \
    VVP_HTTP_PORT=8060 \
    SHM_MEMORY=512 \
    PKG_MEMORY=16

USER kamailio
EXPOSE 5060/udp 5060/tcp 8060/tcp
# A SIP OPTIONS over UDP must get 200 (kamailio.cfg answers OPTIONS itself).
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["vvp-sip-check"]
ENTRYPOINT ["vvp-kamailio"]
