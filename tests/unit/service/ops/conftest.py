"""Fixtures for the operator page's tests: `ops`, one relay with /ops (tests.helpers.ops_world)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.ops_world import Ops, build_ops


@pytest.fixture
def ops(tmp_path: Path) -> Iterator[Ops]:
    built = build_ops(tmp_path)
    yield built
    built.app.extensions["consent_relay"].engine.dispose()
