"""cbor2 (an implementation we did not write) judges our CBOR, byte for byte.

Our encoder must equal ``cbor2.dumps(value, canonical=True)`` (RFC 8949
§4.2.3 length-first deterministic encoding) and our decoder must read
whatever cbor2 writes, canonical or not.
"""

from __future__ import annotations

import math
import struct

import cbor2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sipmesh.proto import cbor
from sipmesh.proto.cbor import UNDEFINED, Simple, Tag

# Tag numbers cbor2 leaves as CBORTag on decode (no semantic conversion):
# unassigned or application-specific ranges.
TAG_NUMBERS = st.one_of(
    st.integers(min_value=6, max_value=15),
    st.integers(min_value=1000, max_value=2**32),
    st.integers(min_value=2**32 + 1, max_value=2**64 - 1),
)

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**64), max_value=2**64 - 1),
    st.integers(min_value=-(2**200), max_value=2**200),
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(width=16),
    st.floats(width=32),
    st.text(max_size=40),
    st.binary(max_size=40),
    st.just(UNDEFINED),
    st.sampled_from([Simple(0), Simple(19), Simple(32), Simple(255)]),
)
keys = st.one_of(
    st.integers(min_value=-(2**64), max_value=2**64 - 1),
    st.text(max_size=12),
    st.binary(max_size=12),
    st.floats(allow_nan=False),
    st.booleans(),
    st.none(),
)
values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=8),
        st.dictionaries(keys, children, max_size=8),
        st.builds(Tag, TAG_NUMBERS, children),
    ),
    max_leaves=40,
)


def to_cbor2(v):
    """The same value in cbor2's types."""
    if isinstance(v, Tag):
        return cbor2.CBORTag(v.tag, to_cbor2(v.value))
    if isinstance(v, Simple):
        return cbor2.CBORSimpleValue(v.value)
    if v is UNDEFINED:
        return cbor2.undefined
    if isinstance(v, list):
        return [to_cbor2(x) for x in v]
    if isinstance(v, dict):
        return {k: to_cbor2(x) for k, x in v.items()}
    return v


def same(a, b) -> bool:
    """Equality that tells 0.0 from -0.0 and accepts NaN == NaN."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return (math.isnan(a) and math.isnan(b)) or struct.pack(">d", a) == struct.pack(">d", b)
    if isinstance(a, list):
        return len(a) == len(b) and all(map(same, a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, Tag):
        return a.tag == b.tag and same(a.value, b.value)
    return a == b


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(values)
def test_encoding_equals_cbor2_canonical(value) -> None:
    assert cbor.dumps(value) == cbor2.dumps(to_cbor2(value), canonical=True)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(values, st.booleans())
def test_decoder_reads_what_cbor2_writes(value, canonical: bool) -> None:
    decoded = cbor.loads(cbor2.dumps(to_cbor2(value), canonical=canonical))
    assert same(decoded, value)


@settings(max_examples=1000, deadline=None)
@given(st.binary(max_size=64))
def test_random_bytes_raise_only_decode_error(data: bytes) -> None:
    try:
        value = cbor.loads(data)
    except cbor.CBORDecodeError as e:
        assert 0 <= e.offset <= len(data)
    else:
        # Whatever we accept is well-formed: cbor2 must decode it too, unless it
        # refuses a tag's semantics (cbor2 interprets tags 0-5, 30, 258, ...),
        # and our value must survive our own round trip.
        try:
            cbor2.loads(data)
        except cbor2.CBORDecodeError as e:
            assert "tag" in str(e) or any(isinstance(x, Tag) for x in _walk(value)), e
        again = cbor.dumps(value)
        assert cbor.dumps(cbor.loads(again)) == again


def _walk(v):
    yield v
    if isinstance(v, list | tuple):
        for x in v:
            yield from _walk(x)
    elif isinstance(v, dict):
        for k, x in v.items():
            yield from _walk(k)
            yield from _walk(x)
    elif isinstance(v, Tag):
        yield from _walk(v.value)
