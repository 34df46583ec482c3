"""Which source_ids a HubSpot object's privacy deletion matches (service/intake/erasures.py)."""

from __future__ import annotations

import re

import pytest

from service.intake.erasures import AMBIGUOUS_TEMPLATE, NO_OBJECT_IN_TEMPLATE, object_pattern


def _pattern(template: str, object_id: str) -> re.Pattern[str]:
    found = object_pattern(template, object_id)
    assert isinstance(found, re.Pattern), found
    return found


def test_the_default_template_matches_every_change_of_the_object_and_no_other_object() -> None:
    pattern = _pattern("{object_id}:{change_id}", "71")
    assert pattern.match("71:consent-1325633423000")
    assert pattern.match("71:1912000001")
    assert not pattern.match("171:1912000001")
    assert not pattern.match("71x:1")
    assert not pattern.match("7:1:1")


def test_literal_text_and_regex_characters_are_taken_literally() -> None:
    pattern = _pattern("hs.{portal_id}/{object_id}", "1+1")
    assert pattern.match("hs.62515/1+1")
    assert not pattern.match("hsX62515/1+1")
    assert not pattern.match("hs.62515/11")


@pytest.mark.parametrize(
    ("template", "reason"),
    [
        ("{portal_id}:{change_id}", NO_OBJECT_IN_TEMPLATE),
        ("fixed", NO_OBJECT_IN_TEMPLATE),
        ("{object_id}{change_id}", AMBIGUOUS_TEMPLATE),
        ("x-{change_id}{object_id}", AMBIGUOUS_TEMPLATE),
    ],
)
def test_a_template_that_cannot_identify_the_object_gives_the_reason(
    template: str, reason: str
) -> None:
    assert object_pattern(template, "71") == reason
