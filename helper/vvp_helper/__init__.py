"""VVP edge routing helper: decides what Kamailio answers to each INVITE."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

# One version source: pyproject.toml. An installed package (pip, the VM's venv, the
# container image, an editable checkout) carries it in its metadata.
try:
    __version__ = version("vvp-edge")
except PackageNotFoundError:  # imported from a source tree that was never installed
    __version__ = "0+unknown"
