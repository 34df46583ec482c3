"""Hypothesis strategies: e-mail addresses the intake accepts, in any script and form."""

from __future__ import annotations

from hypothesis import strategies as st
from marshmallow import ValidationError

from schemas.consent import ConsentDecisionSchema

_EMAIL_FIELD = ConsentDecisionSchema().fields["email"]
_LETTERS = st.characters(categories=("Lu", "Ll", "Lt", "Lm", "Lo", "Nd"))
_ATEXT = st.sampled_from(list("-!#$%&'*+/=?^`{}|~_"))
_ATOM = st.text(st.one_of(_LETTERS, _LETTERS, _ATEXT), min_size=1, max_size=12)
_DOT_ATOM = st.lists(_ATOM, min_size=1, max_size=3).map(".".join)
_QUOTED = st.lists(
    st.sampled_from([chr(c) for c in range(0x21, 0x7F) if chr(c) not in '"\\'] + ["\\ "]),
    min_size=1,
    max_size=12,
).map(lambda inner: '"' + "".join(inner) + '"')
_LABEL = st.text(
    st.one_of(st.characters(min_codepoint=0xA1, max_codepoint=0xFFFF, categories=("L",)), _LETTERS),
    min_size=1,
    max_size=10,
)
_DOMAIN = st.one_of(
    st.tuples(st.lists(_LABEL, min_size=1, max_size=3), st.sampled_from(["de", "com", "广告"])).map(
        lambda parts: ".".join([*parts[0], parts[1]])
    ),
    st.just("localhost"),
    st.tuples(*[st.integers(0, 255)] * 4).map(lambda ip: "[{}.{}.{}.{}]".format(*ip)),
)


def _accepted(address: str) -> bool:
    try:
        _EMAIL_FIELD.deserialize(address)
    except ValidationError:
        return False
    return True


accepted_emails = (
    st.tuples(st.one_of(_DOT_ATOM, _DOT_ATOM, _QUOTED), _DOMAIN)
    .map(lambda parts: f"{parts[0]}@{parts[1]}")
    .filter(_accepted)
)
