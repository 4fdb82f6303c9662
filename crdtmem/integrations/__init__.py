"""Integrations of crdtmem with agent frameworks, each an optional extra.

- :mod:`crdtmem.integrations.langgraph` (``pip install 'crdtmem[langgraph]'``): a
  LangGraph checkpointer (``CrdtmemSaver``) and store (``CrdtmemStore``) over a replica.

Importing ``crdtmem`` never imports a framework: only importing an integration does.
"""

from __future__ import annotations
