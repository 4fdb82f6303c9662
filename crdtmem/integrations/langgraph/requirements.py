"""Fail early, and say which extra to install, when LangGraph is missing.

Imported first by :mod:`crdtmem.integrations.langgraph`, before anything that imports
LangGraph, so that a user without the extra gets this message rather than a bare
``ModuleNotFoundError`` from deep inside.
"""

from __future__ import annotations

from importlib.util import find_spec

# What the integration imports; `pip install 'crdtmem[langgraph]'` brings them all.
REQUIRED = ("langgraph", "langchain_core")
MISSING = [name for name in REQUIRED if find_spec(name) is None]
if MISSING:
    raise ImportError(
        f"crdtmem.integrations.langgraph needs {', '.join(MISSING)}: "
        "pip install 'crdtmem[langgraph]'"
    )
