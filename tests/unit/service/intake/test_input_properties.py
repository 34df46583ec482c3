"""Any value in any field of any kind's payload gives a 2xx or a 4xx, never a 5xx (issue 9a).

Each kind's golden fixture has a few values (at any depth) replaced by generated JSON (NUL,
lone surrogates, 5000-digit integers, deep nesting, wrong types), is signed with the kind's
own `sign` and posted to the real app on a SQLite ledger. The PostgreSQL run of the same
bodies (NUL and column lengths are only enforced there) is tests/integration/
test_input_properties_pg.py.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.sources import KINDS
from tests.helpers.input_world import SOURCES, KindsWorld, failure, mutated_bodies


@pytest.fixture(scope="module")
def kinds_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KindsWorld]:
    yield KindsWorld(tmp_path_factory.mktemp("kinds"))


def test_every_kind_is_covered() -> None:
    assert set(SOURCES) == set(KINDS)


@pytest.mark.parametrize("kind", sorted(SOURCES))
@given(data=st.data())
def test_any_value_anywhere_is_never_a_server_error(
    kinds_world: KindsWorld, kind: str, data: st.DataObject
) -> None:
    body, content_type = data.draw(mutated_bodies(kind))
    response = kinds_world.send(kind, body, content_type)
    assert response.status_code < 500, failure(response, kinds_world)
