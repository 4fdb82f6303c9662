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


def present_maps(state: ORMap) -> list[tuple[str, ORMap]]:
    """The nested maps under the present keys, by sorted key. (No presence test per
    key: they come from the key set itself, and a test costs an encoding.)"""
    found = []
    for key in present_keys(state):
        nested = state.field(key, ORMap.TAG)
        if isinstance(nested, ORMap):
            found.append((key, nested))
    return found


def present_values(state: ORMap) -> list[tuple[str, Any]]:
    """The register values under the present keys, by sorted key (``None`` values,
    what a remove leaves, left out). The values are the replica's: read only."""
    found = []
    for key in present_keys(state):
        register = state.field(key, LWWRegister.TAG)
        if isinstance(register, LWWRegister) and register.stored is not None:
            found.append((key, register.stored))
    return found
