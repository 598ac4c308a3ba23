# sipp load generator for the compose "load" profile: Debian's sipp plus the simulator's
# identity minting tool (a fresh PASSporT per call, as tests/load/ramp.py sends) and the
# repo's scenario builder (tests/support/sipp_scenarios.py).
#
#   docker compose --profile load run --rm sipp          # settings: VVP_LOAD_* in
#                                                        # docker/entrypoints/sipp-load.sh
# Build arguments: as docker/helper.Dockerfile (PYTHON_BASE_IMAGE, EXTRA_CA_CERTS).
ARG PYTHON_BASE_IMAGE=python:3.11-slim
FROM ${PYTHON_BASE_IMAGE}
ARG EXTRA_CA_CERTS=""
RUN apt-get update \
    && apt-get install -y --no-install-recommends sip-tester \
    && rm -rf /var/lib/apt/lists/*
COPY pyproject.toml README.md /src/
COPY helper /src/helper
# The extra certificates are trusted only while pip runs, then dropped with the copy.
RUN cp /etc/ssl/certs/ca-certificates.crt /tmp/ca.crt \
    && if [ -n "$EXTRA_CA_CERTS" ]; then printf '%s\n' "$EXTRA_CA_CERTS" >> /tmp/ca.crt; fi \
    && python -m venv /opt/vvp-load/venv \
    && PIP_CERT=/tmp/ca.crt /opt/vvp-load/venv/bin/pip install --no-cache-dir \
        --disable-pip-version-check /src \
    && rm -rf /src /tmp/ca.crt
ENV PATH=/opt/vvp-load/venv/bin:$PATH
COPY tests/support/sipp_scenarios.py /opt/vvp-load/sipp_scenarios.py
COPY docker/entrypoints/sipp-load.sh /usr/local/bin/vvp-load
RUN useradd --system --user-group --create-home --home-dir /home/load load
USER load
WORKDIR /home/load
ENTRYPOINT ["vvp-load"]
