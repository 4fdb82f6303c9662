"""crdtmem: shared memory for multi-agent AI systems.

Every agent holds a local replica of the shared state, built from delta-state CRDTs:
reads and writes are local, concurrent writes never conflict, and replicas converge by
exchanging ``delta_since``/``merge`` messages, over any transport or none.

>>> from crdtmem import Replica
>>> researcher, writer = Replica("researcher"), Replica("writer")
>>> researcher.list("findings").append("GDP growth at 7.2%")
>>> writer.merge(researcher.delta_since(writer.version()))
>>> writer.list("findings").value
['GDP growth at 7.2%']
"""

from __future__ import annotations

from crdtmem.causality import Dot, DotContext, Order, VersionVector
from crdtmem.crdt import CRDT, Writer
from crdtmem.errors import (
    CrdtmemError,
    DecodeError,
    ReplicaClosed,
    ReplicaLeft,
    StorageError,
    StorageLocked,
    TypeMismatch,
    UnsupportedValue,
    ValueOutOfRange,
    ValueTooLarge,
)
from crdtmem.fields import (
    CounterField,
    Field,
    GCounterField,
    ListField,
    MapField,
    MVRegisterField,
    RegisterField,
    SetField,
    TextField,
)
from crdtmem.gcounter import GCounter
from crdtmem.hlc import HybridLogicalClock, Timestamp
from crdtmem.lwwregister import LWWRegister
from crdtmem.mvregister import MVRegister
from crdtmem.ormap import ORMap
from crdtmem.orset import ORSet
from crdtmem.pncounter import PNCounter
from crdtmem.registry import ALL_TYPES  # every type: the tag table is complete, and checked
from crdtmem.replica import ChangeEvent, Replica
from crdtmem.rga import RGA
from crdtmem.text import TextCRDT

__version__ = "0.1.0"

__all__ = [
    "ALL_TYPES",
    "CRDT",
    "RGA",
    "ChangeEvent",
    "CounterField",
    "CrdtmemError",
    "DecodeError",
    "Dot",
    "DotContext",
    "Field",
    "GCounter",
    "GCounterField",
    "HybridLogicalClock",
    "LWWRegister",
    "ListField",
    "MVRegister",
    "MVRegisterField",
    "MapField",
    "ORMap",
    "ORSet",
    "Order",
    "PNCounter",
    "RegisterField",
    "Replica",
    "ReplicaClosed",
    "ReplicaLeft",
    "SetField",
    "StorageError",
    "StorageLocked",
    "TextCRDT",
    "TextField",
    "Timestamp",
    "TypeMismatch",
    "UnsupportedValue",
    "ValueOutOfRange",
    "ValueTooLarge",
    "VersionVector",
    "Writer",
]
