"""Run one witness of a VVP checkout bound to 127.0.0.1 instead of every interface.

keripy's ``setupWitness`` binds its HTTP and TCP servers to ``0.0.0.0`` with no option to
change it; a test stack must stay on loopback. This wrapper runs under the VVP stack's own
Python (it imports keripy and hio, not this project), forces the host of the two server
constructors that ``keri.app.indirecting`` uses, then runs the checkout's
``services/witness/start-witness.py`` unchanged.

    python witness.py VVP_SRC/services/witness/start-witness.py
"""

from __future__ import annotations

import runpy
import sys
from typing import Any

from hio.core.tcp import serving
from keri.app import indirecting

LOOPBACK = "127.0.0.1"

_create_http_server = indirecting.createHttpServer


def _loopback_http_server(host: str, port: int, app: Any, *args: Any, **kwargs: Any) -> Any:
    return _create_http_server(LOOPBACK, port, app, *args, **kwargs)


class _LoopbackServing:
    """Stands in for ``hio.core.tcp.serving`` inside ``keri.app.indirecting`` only.

    hio's own module is left alone: its classes call ``super(Server, self)`` by name.
    """

    def __getattr__(self, name: str) -> Any:
        return getattr(serving, name)

    @staticmethod
    def Server(*args: Any, **kwargs: Any) -> Any:
        kwargs["host"] = LOOPBACK
        return serving.Server(*args, **kwargs)


def main() -> None:
    script = sys.argv[1]
    indirecting.createHttpServer = _loopback_http_server
    indirecting.serving = _LoopbackServing()
    sys.argv = [script]
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main()
