"""Every CRDT type, imported so that each has entered the one tag table
(:func:`crdtmem.crdt.register_type`): the wire format names a type by its tag."""

from __future__ import annotations

from typing import Final

from crdtmem.crdt import CRDT, crdt_type, registered_types
from crdtmem.gcounter import GCounter
from crdtmem.lwwregister import LWWRegister
from crdtmem.mvregister import MVRegister
from crdtmem.ormap import ORMap
from crdtmem.orset import ORSet
from crdtmem.pncounter import PNCounter
from crdtmem.rga import RGA
from crdtmem.text import TextCRDT

ALL_TYPES: Final[tuple[type[CRDT], ...]] = (
    GCounter,
    PNCounter,
    LWWRegister,
    MVRegister,
    ORSet,
    RGA,
    ORMap,
    TextCRDT,
)
TYPES: Final[dict[int, type[CRDT]]] = registered_types()
__all__ = ["ALL_TYPES", "TYPES", "crdt_type"]
if set(TYPES.values()) != set(ALL_TYPES):  # a new type module must be listed above
    raise ImportError(f"registered types {TYPES} differ from ALL_TYPES")
