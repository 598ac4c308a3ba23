# sipp load generator for the compose "load" profile: Debian's sipp plus the simulator's
# identity minting tool (a fresh PASSporT per call, as tests/load/ramp.py sends) and the
# repo's scenario builder (tests/sipp_scenarios.py).
#
#   docker compose --profile load run --rm sipp          # settings: VVP_LOAD_* below
FROM python:3.11-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends sip-tester \
    && rm -rf /var/lib/apt/lists/*
COPY pyproject.toml README.md /src/
COPY helper /src/helper
RUN pip install --no-cache-dir --disable-pip-version-check /src && rm -rf /src
COPY tests/sipp_scenarios.py /opt/vvp-load/sipp_scenarios.py
COPY docker/entrypoints/sipp-load.sh /usr/local/bin/vvp-load
RUN useradd --system --user-group --create-home --home-dir /home/load load
USER load
WORKDIR /home/load
ENTRYPOINT ["vvp-load"]
