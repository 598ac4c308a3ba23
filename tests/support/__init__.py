"""Code the tests and the load scripts share: processes on loopback (harness), sipp
scenarios, verifier answer shapes, a scripted fake verifier, the end-to-end edge, and
polling. Imported as ``tests.support.<module>`` from the repository root, which pytest
puts on the path (``pythonpath`` in pyproject.toml) and scripts/bootstrap puts on the
virtual environment's (a ``.pth`` file), so that ``.venv/bin/python tests/load/ramp.py``
imports it too."""
