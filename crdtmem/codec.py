"""msgpack framing, size limits, and the checks every decoder shares.

Every message starts with a 3-byte header, ``b"CM"`` and a format version byte, then one
msgpack object. Wire format 2 (crdtmem 0.2) carries writer ids (``NAME~TOKEN``, up to 73
characters, :mod:`crdtmem.identity`); a peer of another wire format is refused with a
message that says which side to upgrade. Stored data keeps its own versioning (the
storage manifest): messages stored under wire format 1 are still read from disk
(:func:`unpack_stored`, :func:`stored`), never from the network.

Decoding never trusts the peer: each limit below is enforced by the msgpack unpacker
before objects are built, and each structure is checked by the type that owns it.
Whatever goes wrong comes out as :class:`~crdtmem.errors.DecodeError`.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, NoReturn

import msgpack

from crdtmem.errors import DecodeError, UnsupportedValue, ValueOutOfRange, ValueTooLarge
from crdtmem.identity import MAX_NAME, MAX_WRITER_ID, TOKEN_DIGITS, is_writer_id

MAGIC: Final = b"CM"
FORMAT_VERSION: Final = 2
HEADER: Final = MAGIC + bytes([FORMAT_VERSION])
# Wire formats whose bodies this build reads from its own disk: format 1 differs from 2
# only in the actors it may carry (2 allows writer ids), so its bodies read unchanged.
STORED_VERSIONS: Final = frozenset({1, FORMAT_VERSION})

# A full state of a few million list elements fits; anything larger is almost certainly
# hostile, and refusing it keeps a single message from exhausting memory.
MAX_MESSAGE_BYTES: Final = 256 * 1024 * 1024
# msgpack lets a 5-byte header declare 2**32-1 elements; the unpacker checks this bound
# before it allocates, so a tiny message cannot ask for gigabytes.
MAX_CONTAINER_LEN: Final = 16 * 1024 * 1024
# Strings and byte strings are user values or pycrdt updates; 64 MiB is generous for both.
MAX_BLOB_BYTES: Final = 64 * 1024 * 1024
# User values nest lists and dicts; beyond this they are a stack-exhaustion attempt, not data.
MAX_VALUE_DEPTH: Final = 32
# OR-maps nest CRDT fields; the same reasoning, with a lower bound because each level of
# map costs a causal context.
MAX_MAP_DEPTH: Final = 16

INT_MIN: Final = -(2**63)
INT_MAX: Final = 2**64 - 1

# Bounds on the integers that later arithmetic or encoding depends on, checked at decode.
# Each sits far below INT_MAX (2**64 - 1, the largest int msgpack encodes), so that
# whatever a node does with the largest accepted value (+1 for the next sequence number,
# dot or lamport, a sum of increments) still encodes, and far above anything honest use
# reaches (2**62 events at a million a second take 146,000 years).
# The largest sequence number, version-vector entry or dot counter accepted.
MAX_SEQ: Final = 2**62
# The largest list (RGA) lamport accepted; a local insert past it raises ValueError.
MAX_LAMPORT: Final = 2**62
# The largest per-actor counter entry accepted; a local increment past it raises
# ValueError (crdtmem.ValueOutOfRange).
MAX_COUNT: Final = 2**62
# The largest HLC wall time accepted, in microseconds (year ~148,000): no physical clock
# gets there, and a clock that observed it still issues (wall, logical + 1).
MAX_WALL: Final = 2**62
# The largest HLC logical counter accepted; past it the clock moves on to (wall + 1, 0),
# so only the single timestamp (MAX_WALL, MAX_LOGICAL) has no successor.
MAX_LOGICAL: Final = 2**62

_SCALARS: Final = frozenset({type(None), bool, int, float, str, bytes})
# The scalars whose every value is valid (an int must also be in range).
UNBOUNDED_SCALARS: Final = frozenset({type(None), bool, float, str, bytes})


# ``msgpack.packb`` builds a Packer, and allocates and frees its 256 KiB buffer, on every
# call: most of the cost of packing a small delta. Packers are reused instead, from a
# pool: a Packer is not thread-safe, and a thread takes one out (``list.pop`` is atomic)
# for the time of one call. Same options, so the same bytes.
_PACKERS: Final[list[Callable[[object], bytes]]] = []
# A Packer keeps its buffer at the largest size it has packed; past this it is dropped,
# so that encoding one large state does not pin that much memory.
_KEEP_PACKER_BYTES: Final = 1024 * 1024


def pack_body(obj: object) -> bytes:
    """Encode a wire object without the header (for storage records and hashing); the
    same bytes as ``msgpack.packb(obj, use_bin_type=True)``."""
    try:
        packer = _PACKERS.pop()
    except IndexError:
        packer = msgpack.Packer(use_bin_type=True).pack
    data = packer(obj)  # (a packer that raised is dropped: it may hold a partial buffer)
    if len(data) <= _KEEP_PACKER_BYTES:
        _PACKERS.append(packer)
    return data


def pack(obj: object) -> bytes:
    """Encode a wire object (already in deterministic, sorted form) behind the header."""
    return HEADER + pack_body(obj)


_CURRENT: Final = frozenset({FORMAT_VERSION})


def unpack(data: bytes) -> Any:
    """Check the header and limits of ``data`` (a message from the network) and return
    the msgpack object inside it (see :func:`unpack_network_body`).

    Raises:
        DecodeError: not bytes, wrong header or version, malformed or oversized msgpack,
            or not an array of at most ``MAX_TOP_ITEMS`` items.
    """
    body = _body(data, _CURRENT)
    if len(body) <= SHRINK_ABOVE or type(data) is not bytes:
        return unpack_network_body(body)
    # (bytes.count runs at memchr speed: it decides whether the hook is worth its cost)
    return unpack_network_body(body, data.count(_EMPTY_ARRAY))


def unpack_stored(data: bytes) -> Any:
    """:func:`unpack` for data this build (or an older one) stored on disk: also reads
    the older wire formats in ``STORED_VERSIONS``; arrays come back as lists."""
    return unpack_body(_body(data, STORED_VERSIONS))


def stored(message: bytes) -> bytes:
    """A stored message in the current wire format, for decoders that take a message:
    an older stored header is replaced (the bodies are the same); anything else is
    returned as it is, for :func:`unpack` to judge."""
    if len(message) >= len(HEADER) and message[:2] == MAGIC and message[2] in STORED_VERSIONS:
        return HEADER + message[len(HEADER) :]
    return message


def _body(data: bytes, versions: frozenset[int]) -> memoryview:
    """The msgpack body of ``data`` once its type, size and header are checked."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise DecodeError(f"a crdtmem message is bytes, got {type(data).__name__}")
    if len(data) > MAX_MESSAGE_BYTES:
        raise DecodeError(f"message of {len(data)} bytes exceeds the {MAX_MESSAGE_BYTES} limit")
    view = bytes(data[: len(HEADER)])
    if len(view) < len(HEADER) or view[:2] != MAGIC:
        raise DecodeError("not a crdtmem message: it does not start with b'CM'")
    if view[2] not in versions:
        side = "the peer (crdtmem >= 0.2)" if view[2] < FORMAT_VERSION else "this node"
        raise DecodeError(
            f"peer speaks crdtmem wire format {view[2]}, this node speaks "
            f"{FORMAT_VERSION}: upgrade {side}"
        )
    return memoryview(data)[len(HEADER) :]


# Every message crdtmem sends is an array of a few items (a gossip frame 5, a replica
# message 2 or 4, a standalone state 2): the unpacker is not even started on anything
# else, so a message that is one long array (of empty arrays or maps, the cheapest
# objects per byte) costs nothing to refuse.
MAX_TOP_ITEMS: Final = 15


# The empty-array hook (:func:`_shrink`) is a Python call per array: ~5% of decoding an
# honest message. It is used only where it pays: in a message over SHRINK_ABOVE bytes
# (below, whatever it holds costs at most ~80 bytes per byte: a few hundred KiB) with
# more than one 0x90 byte (the empty array) in EMPTY_ARRAY_SHARE of its bytes (fewer
# empty arrays than that cost at most 64 / EMPTY_ARRAY_SHARE = 4 bytes per byte as lists).
SHRINK_ABOVE: Final = 4096
EMPTY_ARRAY_SHARE: Final = 16
_EMPTY_ARRAY: Final = 0x90


def unpack_network_body(data: bytes | memoryview, empties: int | None = None) -> Any:
    """Decode one msgpack object from the network under the crdtmem limits.

    It must be an array of at most ``MAX_TOP_ITEMS`` items (a fixarray), checked on its
    first byte before anything is built. In a message over ``SHRINK_ABOVE`` bytes with
    many ``0x90`` bytes (``empties``, when the caller counted them; else assumed many),
    empty arrays come back as the empty tuple (:func:`_shrink`); decoders take either,
    and :func:`wire_value` turns user values back into lists.
    """
    if not data or not 0x90 <= data[0] <= 0x90 + MAX_TOP_ITEMS:
        raise DecodeError(f"malformed message: not an array of at most {MAX_TOP_ITEMS} items")
    size = len(data)
    many = empties is None or empties * EMPTY_ARRAY_SHARE > size
    return _unpackb(data, _shrink if size > SHRINK_ABOVE and many else None)


def _shrink(items: list[Any]) -> Sequence[Any]:
    """The unpacker's hook for each array it builds: an empty one becomes ``()``, one
    shared object, instead of a list of its own (64 bytes for 1 byte of msgpack: what
    made a run of ``0x90`` bytes cost 58x its size). Non-empty arrays stay lists, so a
    user value is turned into lists in place, never copied whole."""
    return items or ()


# What peek() decodes of a string: enough for an address or a writer id in a log line.
MAX_PEEK_STR: Final = 1024


def peek(data: bytes, count: int) -> list[Any] | None:
    """The first ``count`` items of a network message's top-level array, when each is a
    scalar (a string of at most ``MAX_PEEK_STR`` bytes), decoding nothing past them:
    ``None`` otherwise. For log lines about a frame that did not decode: what it claims,
    at a cost that does not grow with the frame."""
    if not isinstance(data, bytes) or len(data) > MAX_MESSAGE_BYTES:
        return None
    stream = io.BytesIO(data)  # (shares the bytes, and the unpacker reads a chunk at a time)
    stream.seek(len(HEADER))
    unpacker = msgpack.Unpacker(
        stream,
        read_size=4096,
        raw=False,
        max_str_len=MAX_PEEK_STR,
        max_bin_len=0,
        max_array_len=0,
        max_map_len=0,
        max_ext_len=0,
    )
    try:
        if data[: len(HEADER)] != HEADER or unpacker.read_array_header() < count:
            return None
        return [unpacker.unpack() for _ in range(count)]
    except (msgpack.UnpackException, ValueError, TypeError, OverflowError, StopIteration):
        return None


def unpack_body(data: bytes | memoryview) -> Any:
    """Decode one msgpack object under the crdtmem limits, arrays as lists (for data
    read from storage and for checks of local writes); see :func:`unpack`."""
    return _unpackb(data, None)


def _unpackb(data: bytes | memoryview, list_hook: Callable[[list[Any]], Any] | None) -> Any:
    try:
        return msgpack.unpackb(
            data,
            raw=False,
            use_list=True,
            list_hook=list_hook,
            strict_map_key=True,
            max_str_len=MAX_BLOB_BYTES,
            max_bin_len=MAX_BLOB_BYTES,
            max_array_len=MAX_CONTAINER_LEN,
            max_map_len=MAX_CONTAINER_LEN,
            max_ext_len=0,
        )
    # msgpack signals bad input with ValueError and its subclasses (ExtraData,
    # FormatError, StackError, UnicodeDecodeError), UnpackException (OutOfData,
    # BufferFull), TypeError (unhashable map keys) and OverflowError.
    except msgpack.StackError as exc:
        raise DecodeError("malformed msgpack: nested too deeply") from exc
    except msgpack.FormatError as exc:
        raise DecodeError("malformed msgpack: a byte that is not a msgpack type code") from exc
    except (msgpack.UnpackException, ValueError, TypeError, OverflowError) as exc:
        detail = str(exc) or "no detail"
        raise DecodeError(f"malformed msgpack ({type(exc).__name__}: {detail})") from exc


# --- user values -------------------------------------------------------------------


def check_value(value: object, depth: int = 0) -> None:
    """Raise unless ``value`` round-trips exactly through the wire format.

    Allowed: None, bool, int in [-2**63, 2**64), float, str, bytes, and lists and
    str-keyed dicts of these, nested at most ``MAX_VALUE_DEPTH`` deep. Subclasses (an
    ``IntEnum``, a ``tuple``) are refused because they would come back as something else.
    """
    kind = type(value)
    if kind in _SCALARS:
        if kind is int and not INT_MIN <= value <= INT_MAX:  # type: ignore[operator]
            raise ValueOutOfRange(f"int {value} is outside the 64-bit range crdtmem stores")
        return
    if depth >= MAX_VALUE_DEPTH:
        raise UnsupportedValue(f"value nested deeper than {MAX_VALUE_DEPTH} levels")
    if kind is list:
        for item in value:  # type: ignore[attr-defined]
            check_value(item, depth + 1)
        return
    if kind is dict:
        for key, item in value.items():  # type: ignore[attr-defined]
            if type(key) is not str:
                raise UnsupportedValue(f"dict keys must be str, got {type(key).__name__}")
            check_value(item, depth + 1)
        return
    raise UnsupportedValue(
        f"cannot store a {kind.__name__}: values are None, bool, int, float, str, bytes, "
        "and lists and str-keyed dicts of these"
        + ("; use a list instead of a tuple" if kind is tuple else "")
    )


def detach(value: Any) -> Any:
    """A copy of ``value`` sharing no list or dict with it (scalars are returned as is).

    Stored values are detached on the way in and on the way out, so that mutating a list
    a caller passed to ``set`` or got from ``value`` never changes replica state behind
    the CRDT's back.
    """
    kind = type(value)
    if kind is list:
        return [detach(item) for item in value]
    if kind is dict:
        return {key: detach(item) for key, item in value.items()}
    return value


def checked(value: Any) -> Any:
    """Validate a user value (see :func:`check_value`) and return a detached copy."""
    if type(value) in UNBOUNDED_SCALARS or (type(value) is int and INT_MIN <= value <= INT_MAX):
        return value  # the usual value: a valid scalar, nothing to detach
    check_value(value)
    return detach(value)


def wire_value(obj: object, what: str) -> Any:
    """Validate a user value that came off the wire and return it with every array a
    list (the network decoder makes empty ones ``()``); raise DecodeError if it is not
    one."""
    kind = type(obj)
    if kind in UNBOUNDED_SCALARS or (kind is int and INT_MIN <= obj <= INT_MAX):  # type: ignore[operator]
        return obj  # the usual value: a valid scalar
    try:
        return _listed(obj, 0)
    except UnsupportedValue as exc:
        raise DecodeError(f"{what}: {exc}") from None


def _listed(value: Any, depth: int) -> Any:
    """:func:`check_value` for a decoded value, which may hold ``()`` (an empty msgpack
    array): each comes back a list. Lists and dicts are the decoder's own (no one else
    holds them), changed in place."""
    kind = type(value)
    if kind in _SCALARS:
        if kind is int and not INT_MIN <= value <= INT_MAX:
            raise ValueOutOfRange(f"int {value} is outside the 64-bit range crdtmem stores")
        return value
    if depth >= MAX_VALUE_DEPTH:
        raise UnsupportedValue(f"value nested deeper than {MAX_VALUE_DEPTH} levels")
    if kind is tuple:
        return [_listed(item, depth + 1) for item in value]
    if kind is list:
        for index, item in enumerate(value):
            value[index] = _listed(item, depth + 1)
        return value
    if kind is dict:
        for key, item in value.items():
            if type(key) is not str:
                raise UnsupportedValue(f"dict keys must be str, got {type(key).__name__}")
            listed = _listed(item, depth + 1)
            if listed is not item:
                value[key] = listed  # (an existing key: the dict keeps its size)
        return value
    raise UnsupportedValue(f"cannot store a {kind.__name__}")


# A canonical byte key for a value (sets and MV-register ordering): its encoding. (The
# packer itself, not a function calling it: set elements and map keys are keyed per write.)
value_key: Final = pack_body


# --- structural checks for decoders ----------------------------------------------


def brief(value: object, limit: int = 40) -> str:
    """A short repr of an untrusted value, for an error message: about ``limit``
    characters at most, whatever the value (a container is named by its type only, so
    that a hostile message never makes a log line, or the error, as large as itself)."""
    if type(value) is str:
        return repr(value[:limit]) + ("..." if len(value) > limit else "")
    if type(value) in (int, float, bool, type(None)):
        return repr(value)[:limit]
    return f"a {type(value).__name__}"


def fail(what: str, expected: str, got: object) -> NoReturn:
    # (an array decodes to a list, or to () when empty: either way it is an array)
    shown = "an array" if type(got) is tuple or type(got) is list else type(got).__name__
    raise DecodeError(f"{what}: expected {expected}, got {shown}")


def as_list(obj: object, what: str, length: int | None = None) -> Sequence[Any]:
    """A msgpack array: a ``list``, or ``()`` for an empty one from :func:`unpack`."""
    if type(obj) is not tuple and type(obj) is not list:
        fail(what, "an array", obj)
    if length is not None and len(obj) != length:
        raise DecodeError(f"{what}: expected {length} items, got {len(obj)}")
    return obj


def as_dict(obj: object, what: str) -> dict[str, Any]:
    if type(obj) is not dict:
        fail(what, "a map", obj)
    return obj


def as_int(obj: object, what: str, lo: int = 0, hi: int = INT_MAX) -> int:
    if type(obj) is not int:
        fail(what, "an integer", obj)
    if not lo <= obj <= hi:
        raise DecodeError(f"{what}: {obj} is outside [{lo}, {hi}]")
    return obj


def as_str(obj: object, what: str) -> str:
    if type(obj) is not str:
        fail(what, "a string", obj)
    return obj


def as_bytes(obj: object, what: str) -> bytes:
    if type(obj) is not bytes:
        fail(what, "bytes", obj)
    return obj


def as_actor(obj: object, what: str) -> str:
    """A writer id (:mod:`crdtmem.identity`): a non-empty str of at most 73 characters
    (a replica name of up to 64, then ``~`` and an 8-digit token)."""
    actor = as_str(obj, what)
    # (a bare name of up to 64 is valid as it is; past that only NAME~TOKEN is)
    if not 0 < len(actor) <= MAX_NAME and not (len(actor) <= MAX_WRITER_ID and is_writer_id(actor)):
        raise DecodeError(
            f"{what}: writer id must be a name of 1 to {MAX_NAME} characters, "
            f"with or without ~ and an {TOKEN_DIGITS}-digit token"
        )
    return actor


def sorted_map(items: Mapping[str, Any]) -> dict[str, Any]:
    """A dict with keys in sorted order, so that msgpack output is deterministic."""
    if len(items) < 2:  # the usual delta: already in order
        return dict(items)
    return {key: items[key] for key in sorted(items)}


# The largest packed update a write may make: a push carries its message as one byte
# string of a gossip frame, which peers accept up to MAX_BLOB_BYTES; the margin leaves
# room for the message's header, origin and dependency vector.
MAX_UPDATE_BYTES: Final = MAX_BLOB_BYTES - 1024 * 1024
# Below this many packed bytes no decoding limit can be reached (a container past
# MAX_CONTAINER_LEN items takes at least that many bytes), so writes this small skip
# the check below.
SMALLEST_LIMIT: Final = min(MAX_CONTAINER_LEN, MAX_UPDATE_BYTES)


def check_replicable(payload: bytes) -> None:
    """Raise :class:`~crdtmem.errors.ValueTooLarge` unless the packed update
    ``payload`` is one every peer would accept (size, and each string, byte string and
    container within the decoding limits): a write no peer accepts would block every
    later update of its writer behind it."""
    if len(payload) > MAX_UPDATE_BYTES:
        raise ValueTooLarge(
            f"this write makes an update of {len(payload)} bytes; peers accept updates of "
            f"at most {MAX_UPDATE_BYTES} bytes: split the value, or store it elsewhere "
            "and keep a reference"
        )
    try:
        unpack_body(payload)
    except DecodeError as exc:
        raise ValueTooLarge(f"this write could not be replicated: {exc}") from None
