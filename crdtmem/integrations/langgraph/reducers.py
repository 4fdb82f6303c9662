"""``merge``: a LangGraph reducer that merges concurrent updates instead of refusing them.

LangGraph raises ``InvalidUpdateError`` when parallel branches write one state key that
has no reducer. ``Annotated[dict, merge]`` (or ``list``, ``set``) merges the branches'
updates the way crdtmem's types merge replicas: idempotently (applying an update twice
changes nothing, so a replayed write after a resume does no harm) and the same way
whatever the order of the branches for maps and sets.

>>> merge({"facts": ["a"], "votes": 1}, {"facts": ["b", "a"], "votes": 2})
{'facts': ['a', 'b'], 'votes': 2}
>>> sorted(merge({"x"}, {"y"}))
['x', 'y']
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def merge(current: Any, update: Any) -> Any:
    """Merge ``update`` into ``current`` (neither is changed; a new value is returned).

    - dicts merge key by key, recursively (an OR-map of the keys written);
    - lists keep ``current`` and append the items of ``update`` not already in it, in
      order (an add-only list: an item written by two branches appears once);
    - sets and frozensets: the union (an add-only set);
    - ``None`` on either side: the other side;
    - anything else (two scalars, or different kinds): ``update`` wins, like a
      last-writer-wins register; LangGraph applies a step's writes in task order, so
      the result is the same on every run.
    """
    if current is None:
        return update
    if update is None:
        return current
    if isinstance(current, Mapping) and isinstance(update, Mapping):
        merged = dict(current)
        for key, value in update.items():
            merged[key] = merge(current.get(key), value)
        return merged
    if isinstance(current, list) and isinstance(update, list):
        result = list(current)
        for item in update:
            if item not in result:
                result.append(item)
        return result
    if isinstance(current, set | frozenset) and isinstance(update, set | frozenset):
        return type(current)(current | update)
    return update
