"""Run the checkout's ``scripts/bootstrap-issuer.py``, optionally with other vetter scopes.

The repository's bootstrap gives its organisation a vetter certification for country codes
44 and 1 (jurisdictions GBR, USA), so every number it maps verifies VALID. To get the
verifier's WARNING answer (a vetter not authorised for the number's jurisdiction), the
interop stack bootstraps a second organisation whose vetter certification covers other
country codes; ``--vetter-ecc`` and ``--vetter-jurisdiction`` replace the two lists in the
request the bootstrap sends, nothing else changes. Runs under the VVP stack's Python.

    python bootstrap.py BOOTSTRAP_SCRIPT [--vetter-ecc 33 --vetter-jurisdiction FRA] -- ARGS...
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from typing import Any


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("script")
    parser.add_argument("--vetter-ecc", action="append", default=[])
    parser.add_argument("--vetter-jurisdiction", action="append", default=[])
    argv = sys.argv[1:]
    cut = argv.index("--") if "--" in argv else len(argv)
    args = parser.parse_args(argv[:cut])
    rest = argv[cut + 1 :]

    spec = importlib.util.spec_from_file_location("bootstrap_issuer", args.script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    if args.vetter_ecc or args.vetter_jurisdiction:
        original_call = module.api_call

        def api_call(method: str, url: str, data: Any = None, **kwargs: Any) -> Any:
            if url.endswith("/vetter-certifications") and isinstance(data, dict):
                data = dict(data)
                if args.vetter_ecc:
                    data["ecc_targets"] = args.vetter_ecc
                if args.vetter_jurisdiction:
                    data["jurisdiction_targets"] = args.vetter_jurisdiction
            return original_call(method, url, data, **kwargs)

        module.api_call = api_call

    sys.argv = [args.script, *rest]
    module.main()


if __name__ == "__main__":
    main()
