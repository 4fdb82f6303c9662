"""The one tag table for all types: the wire format names a type by its tag."""

from __future__ import annotations

from typing import Final

from crdtmem.crdt import CRDT
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
TYPES: Final[dict[int, type[CRDT]]] = {kind.TAG: kind for kind in ALL_TYPES}
