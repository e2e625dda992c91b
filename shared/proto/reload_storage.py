"""RELOAD (RFC 6940) section 7 Data Storage Protocol bodies: Store, Fetch, Stat, Find.

Portable like :mod:`sipmesh.proto.reload` (CPython 3.11+ and MicroPython
1.2x), sans-I/O, and with the same error contract: decoding raises only
``ReloadDecodeError`` (offset, RELOAD error code), encoding invalid values
raises ``ReloadEncodeError``, and each value has exactly one accepted
encoding (Booleans 0/1, lengths exact, nothing trailing), so decoding and
re-encoding gives back the same bytes.

Covered (RFC 6940 section numbers):

- 7 StoredData ``length u32 | storage_time u64 | lifetime u32 | value |
  Signature`` (the Signature of 6.3.4, reusing reload.Signature);
  7.1 :func:`stored_data_signed_bytes`.
- 7.2 DataValue ``exists Boolean | value opaque<0..2^32-1>``, ArrayEntry
  ``index u32 | DataValue``, DictionaryEntry ``key opaque<0..2^16-1> |
  DataValue``.
- 7.4.1 StoreReq / StoreKindData / StoreAns / StoreKindResponse, and the
  Error_Unknown_Kind error_info ``KindId unknown_kinds<0..2^8-1>``.
- 7.4.2 FetchReq / StoredDataSpecifier / FetchAns / FetchKindResponse.
  The RFC declares ArrayRange ``first`` and ``last`` as int32 but gives
  0xffffffff as "the final element": they are handled as unsigned 32-bit.
  ``first <= last`` is enforced; non-overlap of ranges is left to the caller.
- 7.4.3 StatReq (same shape as FetchReq), StatAns / StatKindResponse /
  StoredMetaData / MetaData; ArrayEntryMeta and DictionaryEntryMeta are
  ArrayEntry and DictionaryEntry holding a MetaData instead of a DataValue.
- 7.4.4 FindReq ``resource | KindId kinds<0..2^8-1>``, FindAns /
  FindKindData ``kind | closest ResourceId``.

The data model of a kind is not on the wire: decoders that need it take
``models``, a mapping kind id -> MODEL_SINGLE / MODEL_ARRAY /
MODEL_DICTIONARY (from the overlay configuration). A kind missing from it
raises ReloadDecodeError with ``code`` Error_Unknown_Kind (0x0C), ``kinds``
the list of unknown kind ids (the whole body is still checked first) and
``error_info`` the encoded unknown_kinds list to answer with (7.4.1.2).
A kind id repeated in one StoreReq or FindReq is invalid (7.4.1.1,
7.4.4.1); the RFC does not forbid it in FetchReq/StatReq, so it is kept.
"""

from sipmesh.proto.reload import (
    _S,
    ERROR_UNKNOWN_KIND,
    NODE_ID_LEN,
    ReloadDecodeError,
    ReloadEncodeError,
    Signature,
    _boolean,
    _decode_identity,
    _join,
    _list,
    _op8,
    _op16,
    _op32,
    _Reader,
    _u8,
    _u32,
    _u64,
)

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


MODEL_SINGLE = "single"
MODEL_ARRAY = "array"
MODEL_DICTIONARY = "dictionary"

ARRAY_LAST = const(0xFFFFFFFF)

# Counts bound the number of objects one body can make (the byte length is
# bounded by the message limit of reload.py).
MAX_KINDS = const(32)
MAX_VALUES = const(256)
MAX_ITEMS = const(256)
MAX_REPLICAS = const(16)



def _bool(v):
    return b"\x01" if v else b"\x00"


def _enc_values(values):
    return _op32(_join(values))


# ---------------------------------------------------------------- 7.2 values


class DataValue(_S):
    """DataValue (7.2): ``exists`` bool, ``value`` bytes."""

    def __init__(self, exists, value=b""):
        self.exists = bool(exists)
        self.value = bytes(value)

    def encode(self):
        return _bool(self.exists) + _op32(self.value)


class ArrayEntry(_S):
    """ArrayEntry (7.2.2) ``index`` u32 and ``value`` (a DataValue, or a
    MetaData for ArrayEntryMeta in StatAns)."""

    def __init__(self, index, value):
        self.index = index
        self.value = value

    def encode(self):
        return _u32(self.index) + self.value.encode()


class DictionaryEntry(_S):
    """DictionaryEntry (7.2.3) ``key`` bytes and ``value`` (a DataValue, or a
    MetaData for DictionaryEntryMeta in StatAns)."""

    def __init__(self, key, value):
        self.key = bytes(key)
        self.value = value

    def encode(self):
        return _op16(self.key) + self.value.encode()


class MetaData(_S):
    """MetaData (7.4.3.2): ``exists``, ``value_length`` u32, ``hash_algorithm``
    u8, ``hash_value`` bytes (0..255)."""

    def __init__(self, exists, value_length, hash_algorithm, hash_value=b""):
        self.exists = bool(exists)
        self.value_length = value_length
        self.hash_algorithm = hash_algorithm
        self.hash_value = bytes(hash_value)

    def encode(self):
        return (
            _bool(self.exists)
            + _u32(self.value_length)
            + _u8(self.hash_algorithm)
            + _op8(self.hash_value)
        )


def _data_value(r):
    return DataValue(_boolean(r, "exists"), r.opaque32("value"))


def _meta_data(r):
    e = _boolean(r, "exists")
    n = r.u32("value_length")
    return MetaData(e, n, r.u8("hash_algorithm"), r.opaque8("hash_value"))


def _model_value(r, model, leaf):
    # StoredDataValue / MetaDataValue of one data model (7.2, 7.4.3.2).
    if model == MODEL_SINGLE:
        return leaf(r)
    if model == MODEL_ARRAY:
        i = r.u32("index")
        return ArrayEntry(i, leaf(r))
    k = r.opaque16("key")
    return DictionaryEntry(k, leaf(r))


# ---------------------------------------------------------------- 7 StoredData


class StoredData(_S):
    """StoredData (7): ``storage_time`` u64 (ms), ``lifetime`` u32 (s),
    ``value`` (DataValue / ArrayEntry / DictionaryEntry), ``signature``
    (reload.Signature)."""

    def __init__(self, storage_time, lifetime, value, signature):
        self.storage_time = storage_time
        self.lifetime = lifetime
        self.value = value
        self.signature = signature

    def encode(self):
        return _op32(
            _u64(self.storage_time)
            + _u32(self.lifetime)
            + self.value.encode()
            + self.signature.encode()
        )


def _stored_data(r, model):
    p = r.pos
    n = r.u32("StoredData length")
    end = r.sub_end(n, "StoredData")
    outer = r.end
    r.end = end
    t = r.u64("storage_time")
    life = r.u32("lifetime")
    v = _model_value(r, model, _data_value)
    h = r.u8("hash algorithm")
    s = r.u8("signature algorithm")
    ident = _decode_identity(r)
    sig = Signature(ident, r.opaque16("signature_value"), h, s)
    if r.pos != end:
        raise ReloadDecodeError("StoredData length disagrees with its contents", p)
    r.end = outer
    return StoredData(t, life, v, sig)


def stored_data_signed_bytes(resource_id, kind, storage_time, value, identity):
    """The input of a stored value's signature (7.1):
    ``resource_id || kind || storage_time || StoredDataValue || SignerIdentity``.

    ``resource_id`` is the Resource-ID's bytes (its value, without the
    ResourceId length byte: the RFC names "the Resource-ID", not its
    encoding), ``kind`` u32, ``storage_time`` u64; ``value`` and
    ``identity`` are objects or their encoded bytes. An ArrayEntry object
    is signed with its index set to zero (7.4.2.2), so that an appended
    value (index 0xffffffff) still verifies at the index it was given.
    """
    if isinstance(value, ArrayEntry):
        value = ArrayEntry(0, value.value)
    if not isinstance(value, (bytes, bytearray, memoryview)):
        value = value.encode()
    if not isinstance(identity, (bytes, bytearray, memoryview)):
        identity = identity.encode()
    return bytes(resource_id) + _u32(kind) + _u64(storage_time) + bytes(value) + bytes(identity)


# ---------------------------------------------------------------- helpers


class _Kinds:
    # Kind ids seen in one body: duplicates are invalid, unknown ones are
    # collected and reported once the whole body has been checked.
    def __init__(self, models):
        self.models = models
        self.seen = []
        self.unknown = []
        self.first = 0

    def model(self, r, dup_ok=False):
        p = r.pos
        k = r.u32("kind")
        if not dup_ok:
            if k in self.seen:
                raise ReloadDecodeError("kind %d repeated" % k, p)
            self.seen.append(k)
        m = None if self.models is None else self.models.get(k)
        if self.models is not None and m is None:
            if not self.unknown:
                self.first = p
            if k not in self.unknown:
                self.unknown.append(k)
        return k, m

    def check(self):
        if self.unknown:
            e = ReloadDecodeError(
                "unknown kind %d" % self.unknown[0], self.first, ERROR_UNKNOWN_KIND
            )
            e.kinds = self.unknown
            e.error_info = unknown_kinds_info(self.unknown)
            raise e


def unknown_kinds_info(kinds):
    """error_info of Error_Unknown_Kind (7.4.1.2): ``KindId unknown_kinds<0..2^8-1>``."""
    b = b"".join([_u32(k) for k in kinds])
    if len(b) > 255:
        raise ReloadEncodeError("more than 63 unknown kinds")
    return _op8(b)


def _skip(r, width, what):
    if width == 4:
        n = r.u32(what + " length")
    else:
        n = r.u16(what + " length")
    r.take(n, what)


def _resource(rid):
    if len(rid) > 255:
        raise ReloadEncodeError("ResourceId longer than 255 bytes")
    return _op8(rid)


# ---------------------------------------------------------------- 7.4.1 Store


class StoreKindData(_S):
    """StoreKindData (7.4.1.1): ``kind`` u32, ``generation_counter`` u64,
    ``values`` list of StoredData."""

    def __init__(self, kind, generation_counter, values=()):
        self.kind = kind
        self.generation_counter = generation_counter
        self.values = list(values)

    def encode(self):
        return _u32(self.kind) + _u64(self.generation_counter) + _enc_values(self.values)


class StoreReq(_S):
    """StoreReq (7.4.1.1): ``resource`` bytes, ``replica_number`` u8,
    ``kind_data`` list of StoreKindData."""

    def __init__(self, resource, replica_number=0, kind_data=()):
        self.resource = bytes(resource)
        self.replica_number = replica_number
        self.kind_data = list(kind_data)

    def encode(self):
        return _resource(self.resource) + _u8(self.replica_number) + _op32(_join(self.kind_data))


def _store_kind_data(r, kinds):
    k, m = kinds.model(r)
    g = r.u64("generation_counter")
    if m is None:
        _skip(r, 4, "values")
        return None
    return StoreKindData(k, g, _list(r, 4, "values", MAX_VALUES, _stored_data, m))


def decode_store_req(body, models):
    """Decode a StoreReq body; ``models`` maps kind id -> data model."""
    r = _Reader(body)
    res = r.opaque8("resource")
    rep = r.u8("replica_number")
    kinds = _Kinds(models)
    kd = _list(r, 4, "kind_data", MAX_KINDS, _store_kind_data, kinds)
    r.done("StoreReq")
    kinds.check()
    return StoreReq(res, rep, kd)


class StoreKindResponse(_S):
    """StoreKindResponse (7.4.1.2): ``kind``, ``generation_counter``,
    ``replicas`` list of 16-byte Node-IDs."""

    def __init__(self, kind, generation_counter, replicas=()):
        self.kind = kind
        self.generation_counter = generation_counter
        self.replicas = [bytes(x) for x in replicas]

    def encode(self):
        for n in self.replicas:
            if len(n) != NODE_ID_LEN:
                raise ReloadEncodeError("Node-ID must be %d bytes" % NODE_ID_LEN)
        return _u32(self.kind) + _u64(self.generation_counter) + _op16(b"".join(self.replicas))


class StoreAns(_S):
    """StoreAns (7.4.1.2): ``kind_responses`` list of StoreKindResponse."""

    def __init__(self, kind_responses=()):
        self.kind_responses = list(kind_responses)

    def encode(self):
        return _op16(_join(self.kind_responses))


def _node_id(r):
    return r.take(NODE_ID_LEN, "Node-ID")


def _store_kind_response(r):
    k = r.u32("kind")
    g = r.u64("generation_counter")
    return StoreKindResponse(k, g, _list(r, 2, "replicas", MAX_REPLICAS, _node_id))


def decode_store_ans(body):
    r = _Reader(body)
    kr = _list(r, 2, "kind_responses", MAX_KINDS, _store_kind_response)
    r.done("StoreAns")
    return StoreAns(kr)


# ---------------------------------------------------------------- 7.4.2 Fetch


class StoredDataSpecifier(_S):
    """StoredDataSpecifier (7.4.2.1): ``kind``, ``generation`` u64, ``model``
    and ``items``: for MODEL_ARRAY a list of (first, last) ArrayRanges, for
    MODEL_DICTIONARY a list of keys (empty: all), for MODEL_SINGLE empty."""

    def __init__(self, kind, generation, model, items=()):
        self.kind = kind
        self.generation = generation
        self.model = model
        self.items = (
            [tuple(x) for x in items] if model == MODEL_ARRAY else [bytes(x) for x in items]
        )

    def encode(self):
        m = self.model
        if m == MODEL_SINGLE:
            if self.items:
                raise ReloadEncodeError("single value specifier with items")
            spec = b""
        elif m == MODEL_ARRAY:
            for a, b in self.items:
                if a > b:
                    raise ReloadEncodeError("ArrayRange first > last")
            spec = _op16(b"".join([_u32(a) + _u32(b) for a, b in self.items]))
        elif m == MODEL_DICTIONARY:
            spec = _op16(b"".join([_op16(k) for k in self.items]))
        else:
            raise ReloadEncodeError("unknown data model %r" % (m,))
        return _u32(self.kind) + _u64(self.generation) + _op16(spec)


def _array_range(r):
    p = r.pos
    a = r.u32("first")
    b = r.u32("last")
    if a > b:
        raise ReloadDecodeError("ArrayRange first > last", p)
    return (a, b)


def _key(r):
    return r.opaque16("key")


def _specifier(r, kinds):
    k, m = kinds.model(r, True)
    g = r.u64("generation")
    p = r.pos
    n = r.u16("specifier length")
    end = r.sub_end(n, "model_specifier")
    if m is None:
        r.pos = end
        return None
    outer = r.end
    r.end = end
    items = ()
    if m == MODEL_ARRAY:
        items = _list(r, 2, "indices", MAX_ITEMS, _array_range)
    elif m == MODEL_DICTIONARY:
        items = _list(r, 2, "keys", MAX_ITEMS, _key)
    if r.pos != end:
        raise ReloadDecodeError("specifier length disagrees with its contents", p)
    r.end = outer
    return StoredDataSpecifier(k, g, m, items)


class FetchReq(_S):
    """FetchReq (7.4.2.1): ``resource`` bytes, ``specifiers`` list."""

    def __init__(self, resource, specifiers=()):
        self.resource = bytes(resource)
        self.specifiers = list(specifiers)

    def encode(self):
        return _resource(self.resource) + _op16(_join(self.specifiers))


class StatReq(FetchReq):
    """StatReq (7.4.3.1): the same fields as FetchReq."""


def _decode_specifiers(body, models, cls, what):
    r = _Reader(body)
    res = r.opaque8("resource")
    kinds = _Kinds(models)
    sp = _list(r, 2, "specifiers", MAX_KINDS, _specifier, kinds)
    r.done(what)
    kinds.check()
    return cls(res, sp)


def decode_fetch_req(body, models):
    return _decode_specifiers(body, models, FetchReq, "FetchReq")


def decode_stat_req(body, models):
    return _decode_specifiers(body, models, StatReq, "StatReq")


class FetchKindResponse(_S):
    """FetchKindResponse (7.4.2.2): ``kind``, ``generation`` u64, ``values``
    list of StoredData."""

    def __init__(self, kind, generation, values=()):
        self.kind = kind
        self.generation = generation
        self.values = list(values)

    def encode(self):
        return _u32(self.kind) + _u64(self.generation) + _enc_values(self.values)


class FetchAns(_S):
    """FetchAns (7.4.2.2): ``kind_responses`` list of FetchKindResponse."""

    def __init__(self, kind_responses=()):
        self.kind_responses = list(kind_responses)

    def encode(self):
        return _op32(_join(self.kind_responses))


def _kind_responses(body, models, name, ans_cls, resp_cls, value):
    """FetchAns and StatAns share a layout (7.4.2.2, 7.4.3.2): kind responses of values."""

    def one(r, kinds):
        k, m = kinds.model(r, True)
        g = r.u64("generation")
        if m is None:
            _skip(r, 4, "values")
            return None
        return resp_cls(k, g, _list(r, 4, "values", MAX_VALUES, value, m))

    r = _Reader(body)
    kinds = _Kinds(models)
    kr = _list(r, 4, "kind_responses", MAX_KINDS, one, kinds)
    r.done(name)
    kinds.check()
    return ans_cls(kr)


def decode_fetch_ans(body, models):
    return _kind_responses(body, models, "FetchAns", FetchAns, FetchKindResponse, _stored_data)


# ---------------------------------------------------------------- 7.4.3 Stat


class StoredMetaData(_S):
    """StoredMetaData (7.4.3.2): ``value_length`` u32, ``storage_time`` u64,
    ``lifetime`` u32, ``metadata`` (MetaData / ArrayEntry / DictionaryEntry
    holding a MetaData)."""

    def __init__(self, value_length, storage_time, lifetime, metadata):
        self.value_length = value_length
        self.storage_time = storage_time
        self.lifetime = lifetime
        self.metadata = metadata

    def encode(self):
        return (
            _u32(self.value_length)
            + _u64(self.storage_time)
            + _u32(self.lifetime)
            + self.metadata.encode()
        )


def _stored_meta_data(r, model):
    n = r.u32("value_length")
    t = r.u64("storage_time")
    life = r.u32("lifetime")
    return StoredMetaData(n, t, life, _model_value(r, model, _meta_data))


class StatKindResponse(FetchKindResponse):
    """StatKindResponse (7.4.3.2): ``kind``, ``generation``, ``values`` list
    of StoredMetaData."""


class StatAns(FetchAns):
    """StatAns (7.4.3.2): ``kind_responses`` list of StatKindResponse."""


def decode_stat_ans(body, models):
    return _kind_responses(body, models, "StatAns", StatAns, StatKindResponse,
                           _stored_meta_data)


# ---------------------------------------------------------------- 7.4.4 Find


class FindReq(_S):
    """FindReq (7.4.4.1): ``resource`` bytes, ``kinds`` list of kind ids (<= 63)."""

    def __init__(self, resource, kinds=()):
        self.resource = bytes(resource)
        self.kinds = list(kinds)

    def encode(self):
        b = b"".join([_u32(k) for k in self.kinds])
        if len(b) > 255:
            raise ReloadEncodeError("more than 63 kinds")
        return _resource(self.resource) + _op8(b)


def _kind_id(r, kinds):
    return kinds.model(r)[0]


def decode_find_req(body):
    r = _Reader(body)
    res = r.opaque8("resource")
    ks = _list(r, 1, "kinds", MAX_KINDS * 2, _kind_id, _Kinds(None))
    r.done("FindReq")
    return FindReq(res, ks)


class FindKindData(_S):
    """FindKindData (7.4.4.2): ``kind`` and ``closest`` ResourceId bytes."""

    def __init__(self, kind, closest):
        self.kind = kind
        self.closest = bytes(closest)

    def encode(self):
        return _u32(self.kind) + _resource(self.closest)


class FindAns(_S):
    """FindAns (7.4.4.2): ``results`` list of FindKindData."""

    def __init__(self, results=()):
        self.results = list(results)

    def encode(self):
        return _op16(_join(self.results))


def _find_kind_data(r):
    k = r.u32("kind")
    return FindKindData(k, r.opaque8("closest"))


def decode_find_ans(body):
    r = _Reader(body)
    res = _list(r, 2, "results", MAX_KINDS * 2, _find_kind_data)
    r.done("FindAns")
    return FindAns(res)
