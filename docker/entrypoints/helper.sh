#!/bin/sh
# Start the helper; refuse to start without a verifier, unless this is the demo.
#
# Production: VVP_VERIFIER_URL is the real VVP Verifier (from .env or the environment).
# Demo: compose passes COMPOSE_PROFILES through as VVP_COMPOSE_PROFILES; when it names
# the "demo" profile and no URL is set, the bundled SIMULATOR (service "simulator") is
# used, and the log says so on every start. Anything else without a URL is a
# configuration error: exit 2 (the helper's own code for a bad setting).
set -eu
if [ -z "${VVP_VERIFIER_URL:-}" ]; then
    case ",${VVP_COMPOSE_PROFILES:-}," in
        *,demo,*)
            VVP_VERIFIER_URL=http://simulator:8090
            export VVP_VERIFIER_URL
            echo "vvp-helper-entrypoint: DEMO profile: verdicts come from the verifier SIMULATOR at $VVP_VERIFIER_URL, not a real verifier" >&2
            ;;
        *)
            echo "vvp-helper-entrypoint: error: VVP_VERIFIER_URL is not set." >&2
            echo "  production: set VVP_VERIFIER_URL (in .env or the environment) to the VVP Verifier's base URL" >&2
            echo "  demo:       COMPOSE_PROFILES=demo docker compose up -d   (bundled verifier SIMULATOR)" >&2
            exit 2
            ;;
    esac
fi
exec vvp-helper serve "$@"
