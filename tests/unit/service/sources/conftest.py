"""Fixtures for the source-kind tests: `source_world`, a relay whose one source
(`[sources.src]`) is the test module's `CONFIG` table (tests.helpers.source_world)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.source_world import SourceWorld


@pytest.fixture
def source_world(request: pytest.FixtureRequest, tmp_path: Path) -> SourceWorld:
    return SourceWorld(tmp_path, request.module.CONFIG)
