"""docs/api.md names only what exists, and names everything public.

Every ``crdtmem.X`` / ``transport.X`` (dotted to any depth) and every
``from crdtmem... import X`` in the code of docs/api.md must resolve; its "Planned"
section, which lists what is not built yet, is left out. Every name in
``crdtmem.__all__`` and ``transport.__all__`` must be mentioned, and so must every
public method and property of the classes a user calls.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path
from typing import Any

import pytest

import crdtmem
import transport
from crdtmem.checkpoints import Checkpoint, View
from crdtmem.gossip import GossipNode

API = Path(__file__).resolve().parent.parent / "docs" / "api.md"
PLANNED = "\n## Planned"
DOTTED = re.compile(r"\b(?:crdtmem|transport|simulations)(?:\.[A-Za-z_]\w*)+")
FROM_IMPORT = re.compile(
    r"\bfrom\s+((?:crdtmem|transport)(?:\.\w+)*)\s+import\s+(\w+(?:\s*,\s*\w+)*)"
)


def text() -> str:
    return API.read_text(encoding="utf-8")


def built_part() -> str:
    whole = text()
    assert PLANNED in whole
    return whole[: whole.index(PLANNED)]


def code_of(markdown: str) -> list[str]:
    """Fenced blocks and inline code spans."""
    fenced = re.findall(r"^```[^\n]*\n(.*?)^```", markdown, flags=re.S | re.M)
    rest = re.sub(r"^```[^\n]*\n.*?^```", "", markdown, flags=re.S | re.M)
    return fenced + re.findall(r"`([^`]+)`", rest)


def referenced_names() -> set[str]:
    names: set[str] = set()
    for code in code_of(built_part()):
        names.update(DOTTED.findall(code))
        for module, imported in FROM_IMPORT.findall(code):
            names.update(f"{module}.{name.strip()}" for name in imported.split(","))
    return names


def resolve(dotted: str) -> Any:
    """The object ``dotted`` names: the longest importable prefix, then attributes."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            found: Any = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for attribute in parts[cut:]:
            found = getattr(found, attribute)
        return found
    raise ModuleNotFoundError(dotted)


def test_the_reference_names_enough_to_be_checked() -> None:
    names = referenced_names()
    assert {"crdtmem.Replica", "transport.ZmqGossip", "crdtmem.gossip.GossipNode"} <= names


@pytest.mark.parametrize("dotted", sorted(referenced_names()))
def test_every_name_the_reference_gives_exists(dotted: str) -> None:
    try:
        resolve(dotted)
    except (AttributeError, ModuleNotFoundError) as error:
        pytest.fail(f"docs/api.md names {dotted}, which does not exist: {error}")


@pytest.mark.parametrize(
    "dotted",
    [f"crdtmem.{n}" for n in crdtmem.__all__] + [f"transport.{n}" for n in transport.__all__],
)
def test_every_exported_name_is_documented(dotted: str) -> None:
    name = dotted.split(".")[1]
    assert re.search(rf"\b{name}\b", built_part()), f"docs/api.md does not mention {dotted}"


USER_CLASSES = [
    crdtmem.Replica,
    crdtmem.ChangeEvent,
    crdtmem.Field,
    crdtmem.GCounterField,
    crdtmem.CounterField,
    crdtmem.RegisterField,
    crdtmem.MVRegisterField,
    crdtmem.SetField,
    crdtmem.ListField,
    crdtmem.MapField,
    crdtmem.TextField,
    Checkpoint,
    View,
    GossipNode,
    transport.ZmqGossip,
    transport.AsyncZmqGossip,
    transport.SimNetwork,
    transport.SimNode,
]


@pytest.mark.parametrize(
    ("owner", "member"),
    [
        (cls.__name__, member)
        for cls in USER_CLASSES
        for member in sorted(set(dir(cls)) - set(dir(object)))
        if not member.startswith("_")
    ],
)
def test_every_public_member_is_documented(owner: str, member: str) -> None:
    assert re.search(rf"[.`]{member}\b", built_part()), (
        f"docs/api.md does not mention {owner}.{member}"
    )
