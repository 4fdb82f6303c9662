"""LangGraph over crdtmem: a checkpointer and a store whose data live in a replica.

``pip install 'crdtmem[langgraph]'``, then::

    from crdtmem.integrations.langgraph import CrdtmemSaver, CrdtmemStore

    saver = CrdtmemSaver(replica)   # a BaseCheckpointSaver
    store = CrdtmemStore(replica)   # a BaseStore

Every replica that gossips with ``replica`` sees the same checkpoints and items, so a
thread checkpointed by one process resumes in another, and agents share long-term
memory without a server. See docs/api.md, "LangGraph".
"""

from __future__ import annotations

# First: when LangGraph is missing, this says which extra to install.
from crdtmem.integrations.langgraph import requirements  # noqa: F401
from crdtmem.integrations.langgraph.reducers import merge
from crdtmem.integrations.langgraph.saver import CrdtmemSaver
from crdtmem.integrations.langgraph.store import CrdtmemStore

__all__ = ["CrdtmemSaver", "CrdtmemStore", "merge"]
