"""The end-to-end edge shared by the e2e modules: one edge per module, on the policy the
module names by overriding ``edge_policy`` (tests/e2e/policy.yaml otherwise)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.edge import Edge, running_edge
from tests.support.harness import Simulator

E2E_POLICY = Path(__file__).parent / "policy.yaml"


@pytest.fixture(scope="module")
def edge_policy() -> Path:
    """The policy the module's edge runs; a module overrides this fixture to change it."""
    return E2E_POLICY


@pytest.fixture(scope="module")
def edge(edge_policy: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Edge]:
    """Simulator, helper and Kamailio with test-sized timeouts, shared by a module's
    tests (a module that needs other settings overrides this fixture with Edge.start)."""
    with running_edge(tmp_path_factory.mktemp("edge"), edge_policy) as started:
        yield started


@pytest.fixture
def sim(edge: Edge) -> Iterator[Simulator]:
    """The edge's simulator, healthy and with zeroed counters before and after a test."""
    edge.simulator.reset()
    yield edge.simulator
    edge.simulator.reset()
