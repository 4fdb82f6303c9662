"""Reading and naming entries of nested OR-maps, for the LangGraph integration.

The saver and the store keep their records in nested maps of a replica (one register
per record, so that each record is written by one update and peers see all of it or
none). Map keys are field names (1 to 256 characters); names chosen by users (thread
ids, namespaces, item keys) can be longer or empty, so every key carries a kind
prefix, and a name that does not fit is replaced by a digest of it (the record itself
holds the real name).
"""

from __future__ import annotations

import hashlib
from typing import Any, Final

from crdtmem.host import Path
from crdtmem.lwwregister import LWWRegister
from crdtmem.ormap import ORMap

# Map keys are field names: at most 256 characters (crdtmem.messages.MAX_FIELD_NAME).
# Longer names go by digest; 200 leaves room for the prefix and keeps keys short.
MAX_PLAIN_KEY: Final = 200


def map_key(kind: str, name: str) -> str:
    """The map key of ``name``: ``kind:name``, or ``kind#digest`` when too long.

    The two forms cannot collide: a plain key has ``:`` right after the kind, a
    digest key ``#``.
    """
    if len(name) <= MAX_PLAIN_KEY:
        return f"{kind}:{name}"
    return f"{kind}#{hashlib.sha256(name.encode('utf-8', 'surrogatepass')).hexdigest()}"


def map_path(field: str, *keys: str) -> Path:
    """The path of the map ``field``, then of the nested maps under ``keys``."""
    return ((field, ORMap.TAG), *((key, ORMap.TAG) for key in keys))


def register_path(parent: Path, key: str) -> Path:
    """The path of the register ``key`` in the map at ``parent``."""
    return (*parent, (key, LWWRegister.TAG))


def present_keys(state: ORMap) -> list[str]:
    """The keys present in the map state, sorted."""
    return sorted(key for key in state.keys.elements.values() if key in state.fields)


def submap(state: ORMap, key: str) -> ORMap | None:
    """The nested map under ``key``, if the key is present."""
    if key not in state:
        return None
    nested = state.field(key, ORMap.TAG)
    return nested if isinstance(nested, ORMap) else None


def stored(state: ORMap, key: str) -> Any:
    """The value of the register under ``key`` (``None`` when absent or removed).

    The value is the replica's own object: read it, never change it.
    """
    if key not in state:
        return None
    register = state.field(key, LWWRegister.TAG)
    return register.value() if isinstance(register, LWWRegister) else None
