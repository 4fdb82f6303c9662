"""Names and incarnations: who wrote an update.

A replica is named by its user (``replica_id``, 1 to 64 characters, stable across
restarts). Each *life* of a replica writes under its own *writer id*, so that no dot or
sequence number is ever minted twice, whatever happens to the process (Akka's
``UniqueAddress``, Riak's actor epochs, Yjs's client id per session):

- ``NAME~TOKEN``, ``TOKEN`` being eight lowercase hex digits drawn at random when the
  life starts (an in-memory replica at every construction; a durable one whenever it
  cannot prove its log holds every update it ever made);
- ``NAME`` alone for the one life of a durable folder written before incarnations
  existed (storage format 2 and older), whose records name the bare name.

Version vectors, update logs and dots are keyed by writer id; the name is what users,
manifests and change events see.

>>> import random
>>> writer = writer_id("analyst", new_token(random.Random(7)))
>>> writer, name_of(writer), name_of("analyst")
('analyst~52e6b438', 'analyst', 'analyst')
"""

from __future__ import annotations

import random
import re
from typing import Final

MAX_NAME: Final = 64
TOKEN_DIGITS: Final = 8
SEPARATOR: Final = "~"
# A name, then optionally the separator and a token. Names may themselves contain the
# separator: only a final "~" + 8 hex digits is a token.
_TOKEN_SUFFIX: Final = re.compile(rf"{SEPARATOR}[0-9a-f]{{{TOKEN_DIGITS}}}\Z")
MAX_WRITER_ID: Final = MAX_NAME + len(SEPARATOR) + TOKEN_DIGITS


def new_token(rng: random.Random) -> str:
    """A fresh incarnation token from ``rng`` (inject a seeded one in tests)."""
    return f"{rng.getrandbits(4 * TOKEN_DIGITS):0{TOKEN_DIGITS}x}"


def writer_id(name: str, token: str | None) -> str:
    """The writer id of the life ``token`` of replica ``name`` (``None``: the legacy,
    bare-name life)."""
    if token is None:
        return name
    if len(token) != TOKEN_DIGITS or _TOKEN_SUFFIX.search(SEPARATOR + token) is None:
        raise ValueError(f"an incarnation token is {TOKEN_DIGITS} lowercase hex digits")
    return f"{name}{SEPARATOR}{token}"


def name_of(writer: str) -> str:
    """The replica name a writer id belongs to."""
    if _TOKEN_SUFFIX.search(writer) is not None and len(writer) > TOKEN_DIGITS + 1:
        return writer[: -TOKEN_DIGITS - 1]
    return writer


def token_of(writer: str) -> str | None:
    """The incarnation token of a writer id (``None`` for a bare name)."""
    if _TOKEN_SUFFIX.search(writer) is not None and len(writer) > TOKEN_DIGITS + 1:
        return writer[-TOKEN_DIGITS:]
    return None


def is_writer_id(candidate: str) -> bool:
    """Whether ``candidate`` has the form of a writer id: a name of 1 to 64 characters,
    alone or with a token."""
    return 0 < len(name_of(candidate)) <= MAX_NAME and len(candidate) <= MAX_WRITER_ID
