"""The test suite; a package so that shared test code imports as ``tests.support``."""
