# The vvp-edge routing helper (and the bundled verifier SIMULATOR, same package):
# python:3.11-slim, runtime dependencies only, non-root.
#
#   docker build -f docker/helper.Dockerfile -t vvp-edge/helper .
#
# Settings: the VVP_* environment variables of helper/vvp_helper/config.py.
# Build arguments: PYTHON_BASE_IMAGE (a mirror's copy of python:3.11-slim, say), and
# EXTRA_CA_CERTS: PEM certificates pip must also trust while building, for networks that
# intercept TLS (corporate proxies). They stay in the build stage, not in the image.
ARG PYTHON_BASE_IMAGE=python:3.11-slim
FROM ${PYTHON_BASE_IMAGE} AS build
ARG EXTRA_CA_CERTS=""
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 \
    PIP_CERT=/etc/ssl/certs/ca-certificates.crt
RUN if [ -n "$EXTRA_CA_CERTS" ]; then \
        printf '%s\n' "$EXTRA_CA_CERTS" >> /etc/ssl/certs/ca-certificates.crt; fi
RUN python -m venv /opt/vvp-edge/venv
COPY pyproject.toml README.md /src/
COPY helper /src/helper
# Runtime extras only: fast (uvloop, orjson) and redis (replay detection shared between
# edge nodes, VVP_REPLAY_REDIS_URL). No test tools.
RUN /opt/vvp-edge/venv/bin/pip install "/src[fast,redis]"

FROM ${PYTHON_BASE_IMAGE}
RUN useradd --system --user-group --home-dir /nonexistent --no-create-home \
        --shell /usr/sbin/nologin vvp-edge
COPY --from=build /opt/vvp-edge/venv /opt/vvp-edge/venv
# The default policy; compose bind-mounts the operator's ./policy over /etc/vvp-edge/policy.
COPY policy/ /etc/vvp-edge/policy/
COPY docker/entrypoints/helper.sh /usr/local/bin/vvp-helper-entrypoint
ENV PATH=/opt/vvp-edge/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    VVP_HELPER_HOST=0.0.0.0 \
    VVP_HELPER_PORT=8480 \
    VVP_POLICY=/etc/vvp-edge/policy/default.yaml
USER vvp-edge
EXPOSE 8480/tcp
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('VVP_HELPER_PORT', '8480'), timeout=2)"]
ENTRYPOINT ["vvp-helper-entrypoint"]
