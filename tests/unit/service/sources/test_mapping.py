"""The shared mapping from a source event's answers to a canonical decision, and the config
checks of `source`/`source_id` templates."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from relay.config.loader import load_settings
from relay.config.mapping import DEFAULT_VALUES, MappingSettings
from relay.domain import Decision, Evidence
from service.sources.base import SourceEvent
from service.sources.mapping import render, resolve
from tests.helpers.source_world import config_error, world_config

SKEW = dt.timedelta(minutes=5)
WHEN = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)


def event(**answers: object) -> SourceEvent:
    return SourceEvent(
        "evt_1",
        "form_response",
        email="ann@example.com",
        answers=answers,
        variables={"form_id": "F1", "response_id": "R9"},
        occurred_at=WHEN,
    )


def mapping(**overrides: object) -> MappingSettings:
    base: dict[str, object] = {"source": "form:{form_id}", "consent": "agree"}
    return MappingSettings(**{**base, **overrides})  # type: ignore[arg-type]  # test data


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (True, "granted"),
        (False, "denied"),
        ("Yes", "granted"),
        (" no ", "denied"),
        ("on", "granted"),
        (1, "granted"),
        (0, "denied"),
        ("withdrawn", "withdrawn"),
        (["Something else", "true"], "granted"),
    ],
)
def test_default_values(answer: object, expected: str) -> None:
    decision = resolve(event(agree=answer), mapping(), "{form_id}:{response_id}", SKEW)
    assert decision == Decision("ann@example.com", expected, "form:F1", "F1:R9", WHEN)


def test_configured_values_replace_the_defaults() -> None:
    settings = mapping(values={"i agree": "granted", "stop": "withdrawn"})
    stop = resolve(event(agree="STOP"), settings, None, SKEW)
    assert isinstance(stop, Decision) and stop.tracking_consent == "withdrawn"
    assert resolve(event(agree="yes"), settings, None, SKEW) == (
        "Consent answer 'yes' is not in the mapping's values."
    )


@pytest.mark.parametrize("answer", [None, "", [], "  "])
def test_absent_answer_is_ignored_or_unknown(answer: object) -> None:
    assert resolve(event(agree=answer), mapping(), None, SKEW) == "No consent answer in 'agree'."
    unknown = resolve(event(agree=answer), mapping(when_missing="unknown"), None, SKEW)
    assert isinstance(unknown, Decision) and unknown.tracking_consent == "unknown"


def test_email_from_a_named_answer_and_its_absence() -> None:
    settings = mapping(email="work_email")
    found = resolve(event(agree=True, work_email=" bob@example.org "), settings, None, SKEW)
    assert isinstance(found, Decision) and found.email == "bob@example.org"
    assert resolve(event(agree=True), settings, None, SKEW) == (
        "No e-mail address in the answer 'work_email'."
    )


def test_an_invalid_address_is_ignored_with_the_schema_message() -> None:
    settings = mapping(email="work_email")
    reason = resolve(event(agree=True, work_email="not-an-address"), settings, None, SKEW)
    assert isinstance(reason, str) and reason.startswith("The mapped decision is invalid (email:")


def test_a_future_decision_time_is_ignored() -> None:
    future = SourceEvent(
        "e",
        "t",
        email="a@example.com",
        answers={"agree": True},
        occurred_at=dt.datetime.now(dt.UTC) + dt.timedelta(days=1),
    )
    reason = resolve(future, mapping(source="literal"), None, SKEW)
    assert isinstance(reason, str) and "occurred_at" in reason


def test_a_template_naming_an_absent_variable_is_ignored() -> None:
    reason = resolve(event(agree=True), mapping(source_id="{form_id}:{missing}"), None, SKEW)
    assert reason == "Template '{form_id}:{missing}' needs missing, absent here."


def test_templates_cannot_reach_into_values() -> None:
    with pytest.raises(ValueError, match="plain name"):
        render("{form_id.__class__}", {"form_id": "x"})


def test_kind_decisions_and_ignored_events_pass_through() -> None:
    decided = Decision("a@example.com", "denied", "s", None, None)
    assert resolve(SourceEvent("e", "t", decision=decided), mapping(), None, SKEW) is decided
    assert resolve(SourceEvent("e", "t", ignored="why"), mapping(), None, SKEW) == "why"


def test_defaults_cover_every_state() -> None:
    assert set(DEFAULT_VALUES.values()) == {"granted", "denied", "withdrawn", "unknown"}


TYPEFORM = 'kind = "typeform"\nsecrets = ["typeform-secret"]\n'


@pytest.mark.parametrize(
    ("source_toml", "expected"),
    [
        (
            TYPEFORM + 'source = "tf:{nope}"\n[sources.forms.mapping]\nconsent = "c"',
            "sources.forms.source: Unknown template field(s) ['nope']",
        ),
        (
            TYPEFORM
            + 'source = "tf"\nsource_id = "{a[0]}"\n[sources.forms.mapping]\nconsent = "c"',
            "sources.forms.source_id: Template field {a[0]} must be a plain name.",
        ),
        (TYPEFORM + 'source = "tf"', "sources.forms.mapping.consent: Required by kind 'typeform'."),
        (
            TYPEFORM + 'source = "tf"\nusername = "x"\n[sources.forms.mapping]\nconsent = "c"',
            "sources.forms.username: Not used by kind 'typeform'.",
        ),
        (
            TYPEFORM + 'source = "tf"\n[sources.forms.mapping]\nconsent = "c"\n'
            'values = { "x" = "maybe" }',
            "sources.forms.mapping.values",
        ),
        (
            'kind = "token"\nsecrets = ["short"]\nsource = "s"',
            "sources.forms.secrets.0: Secret must be at least 32 characters.",
        ),
        (
            'kind = "token"\nsecrets = ["' + "t" * 40 + '"]\nsource = "s"\n'
            '[sources.forms.mapping]\nconsent = "c"',
            "sources.forms.mapping: Kind 'token' sends canonical decisions: no mapping.",
        ),
    ],
    ids=[
        "unknown-field",
        "indexing",
        "no-consent",
        "foreign-option",
        "bad-state",
        "short-token",
        "canonical-mapping",
    ],
)
def test_config_errors_name_the_key(tmp_path: Path, source_toml: str, expected: str) -> None:
    assert expected in config_error(tmp_path, source_toml, name="forms")


# --- evidence fields (issue 17, section 1) -------------------------------------------------------

EVIDENCE_TEMPLATES = {
    "notice_version": "form-{form_id}-v2",
    "notice_url": "https://example.com/privacy/{form_id}",
    "purposes": ("newsletter", "profiling:{form_id}"),
    "collection_method": "form",
    "lawful_basis": "consent",
    "jurisdiction": "EU",
    "language": "de-DE",
}


def test_evidence_templates_render_from_the_events_variables() -> None:
    decision = resolve(event(agree=True), mapping(evidence=EVIDENCE_TEMPLATES), None, SKEW)
    assert isinstance(decision, Decision)
    assert decision.evidence == Evidence(
        notice_version="form-F1-v2",
        notice_url="https://example.com/privacy/F1",
        purposes=("newsletter", "profiling:F1"),
        collection_method="form",
        lawful_basis="consent",
        jurisdiction="EU",
        language="de-DE",
    )


def test_without_evidence_templates_a_decision_carries_none() -> None:
    decision = resolve(event(agree=True), mapping(), None, SKEW)
    assert isinstance(decision, Decision) and decision.evidence == Evidence()


def test_a_canonical_payloads_own_evidence_wins_over_the_config() -> None:
    own = Decision(
        "ann@example.com",
        "granted",
        "api",
        None,
        WHEN,
        Evidence(notice_version="v9", purposes=("ads",)),
    )
    canonical = SourceEvent("evt_2", "decision", decision=own)
    settings = mapping(evidence={"notice_version": "v1", "jurisdiction": "EU"})
    decision = resolve(canonical, settings, None, SKEW)
    assert isinstance(decision, Decision)
    assert decision.evidence == Evidence(notice_version="v9", purposes=("ads",), jurisdiction="EU")


def test_an_evidence_template_that_renders_invalid_ignores_the_event() -> None:
    settings = mapping(evidence={"notice_url": "not a url {form_id}"})
    reason = resolve(event(agree=True), settings, None, SKEW)
    assert isinstance(reason, str) and "notice_url" in reason


def test_an_evidence_template_needing_an_absent_variable_ignores_the_event() -> None:
    settings = mapping(evidence={"notice_version": "{response_id}"})
    bare = SourceEvent(
        "e", "f", email="a@example.com", answers={"agree": True}, variables={"form_id": "F"}
    )
    reason = resolve(bare, settings, None, SKEW)
    assert reason == "Template '{response_id}' needs response_id, absent here."


@pytest.mark.parametrize(
    ("evidence_toml", "expected"),
    [
        ('collection_method = "carrier-pigeon"', "sources.forms.evidence.collection_method"),
        ('lawful_basis = "because"', "sources.forms.evidence.lawful_basis"),
        ('notice_url = "ftp://example.com/x"', "sources.forms.evidence.notice_url"),
        ('language = "not a tag"', "sources.forms.evidence.language"),
        ('notice_version = "{nope}"', "sources.forms.evidence.notice_version: Unknown template"),
        ('purposes = ["a", "{nope}"]', "sources.forms.evidence.purposes: Unknown template"),
        ('colour = "red"', "sources.forms.evidence.colour: Unknown field."),
    ],
)
def test_evidence_config_errors_name_the_key(
    tmp_path: Path, evidence_toml: str, expected: str
) -> None:
    source_toml = (
        TYPEFORM
        + 'source = "tf"\n[sources.forms.mapping]\nconsent = "c"\n[sources.forms.evidence]\n'
        + evidence_toml
    )
    assert expected in config_error(tmp_path, source_toml, name="forms")


def test_canonical_kinds_take_evidence_constants(tmp_path: Path) -> None:
    source_toml = (
        'kind = "token"\nsecrets = ["' + "t" * 40 + '"]\nsource = "s"\n'
        '[sources.forms.evidence]\ncollection_method = "api"\npurposes = ["newsletter"]'
    )
    path = tmp_path / "consent-relay.toml"
    path.write_text(world_config(tmp_path / "data", "forms", source_toml))
    mapping_settings = load_settings(path, environ={}).sources["forms"].effective_mapping
    assert mapping_settings.evidence == {"collection_method": "api", "purposes": ("newsletter",)}
