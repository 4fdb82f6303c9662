"""Collaborative text on pycrdt (Yjs' algorithm, YATA, in Rust).

The state is one pycrdt ``Doc`` holding one ``Text``; a delta is a list of pycrdt updates,
each with the state vector it was cut from (what it depends on). An update is applied
only once the document covers its state vector, and held until then: yrs can lose a
delete whose target items are still pending, so causal order is kept here, as the
replica keeps it for every other type.
Positions are Python ``str`` positions (code points), while pycrdt counts UTF-8 bytes and
misplaces inserts at offsets inside a multi-byte character, so every position is
translated. While the text is pure ASCII (the usual case) the translation is the identity;
otherwise a mirror of the text turns code points into byte offsets.

pycrdt's ``Doc`` needs a client id; it is derived from the replica id (never random) so
that a replica always writes as the same pycrdt client.

>>> from crdtmem.crdt import Writer
>>> t = TextCRDT.empty(); w = Writer.fixed("a")
>>> t.absorb(t.insert_delta(w, 0, "héllo")); t.absorb(t.insert_delta(w, 5, " wörld"))
>>> t.absorb(t.delete_delta(w, 0, 1)); t.value()
'éllo wörld'
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable
from typing import Any, Self, final

import pycrdt

from crdtmem.codec import as_bytes, as_list
from crdtmem.crdt import CrdtBase, Writer, register_type
from crdtmem.errors import DecodeError

_FIELD = "text"


@functools.lru_cache(maxsize=1024)
def client_id_for(actor: str) -> int:
    """pycrdt client id for a replica id: 53 bits of its BLAKE2b hash (fits a JS number)."""
    digest = hashlib.blake2b(actor.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 11


def parse_state_vector(encoded: bytes) -> dict[int, int]:
    """Decode a Yjs state vector (varuint count, then client and clock varuints)."""
    numbers: list[int] = []
    value = shift = 0
    for byte in encoded:
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            numbers.append(value)
            value = shift = 0
        elif shift > 63:
            raise DecodeError("text state vector: varuint too long")
    if shift or not numbers or len(numbers) != 1 + 2 * numbers[0]:
        raise DecodeError("text state vector: malformed")
    return dict(zip(numbers[1::2], numbers[2::2], strict=True))


def _covers(have: dict[int, int], need: dict[int, int]) -> bool:
    return all(have.get(client, 0) >= clock for client, clock in need.items())


Update = tuple[bytes, bytes]  # (state vector it depends on, yrs update)
_NO_DEPS: bytes = b"\x00"


def _new_doc(client_id: int | None) -> tuple[pycrdt.Doc[Any], pycrdt.Text]:
    doc: pycrdt.Doc[Any] = pycrdt.Doc(client_id=client_id if client_id is not None else 0)
    return doc, doc.get(_FIELD, type=pycrdt.Text)


@final
@register_type
class TextCRDT(CrdtBase):
    """Collaborative text with code-point positions; backed by a pycrdt ``Doc``."""

    TAG = 8
    KIND = "text"
    __slots__ = (
        "_captured",
        "_capturing",
        "_client",
        "_doc",
        "_length",
        "_mirror",
        "_source",
        "_subscription",
        "_text",
        "held",
        "updates",
    )

    def __init__(self, updates: list[Update] | None = None) -> None:
        # A delta is just its updates; a state materialises a Doc on first use. Updates
        # whose dependencies the Doc lacks wait in ``held``.
        self.updates: list[Update] = updates if updates is not None else []
        self.held: list[Update] = []
        self._doc: pycrdt.Doc[Any] | None = None
        self._text: pycrdt.Text | None = None
        self._client: int | None = None
        self._length: int | None = None  # code points, None when stale
        self._mirror: str | None = None  # the text, kept only while it is not pure ASCII
        self._captured: list[bytes] = []
        self._capturing = False
        self._subscription: pycrdt.Subscription | None = None
        # The state a local delta was cut from already holds its edit (see insert_delta).
        self._source: TextCRDT | None = None

    @classmethod
    def empty(cls) -> Self:
        return cls()

    # --- the document -----------------------------------------------------------------

    def _ytext(self, client_id: int | None = None) -> pycrdt.Text:
        """The pycrdt Text, with a Doc of ``client_id`` when one is asked for."""
        return self._open(client_id)[1]

    def _open(self, client_id: int | None = None) -> tuple[pycrdt.Doc[Any], pycrdt.Text]:
        """The pycrdt Doc and its Text (made on first use, and made again under
        ``client_id`` when one is asked for that the Doc does not have)."""
        doc, text = self._doc, self._text
        reuse = client_id is None or client_id == self._client
        if doc is not None and text is not None and reuse:
            return doc, text
        old = doc
        doc, text = _new_doc(client_id)
        if old is not None:
            doc.apply_update(old.get_update())
        self._doc, self._text, self._client = doc, text, client_id
        # Each local edit is one transaction; its update is caught here at commit, which
        # is cheaper than diffing the document against a state vector afterwards.
        self._subscription = doc.observe(self._on_commit)
        pending, self.updates = self.updates, []
        self._integrate(doc, pending)
        return doc, text

    def _on_commit(self, event: pycrdt.TransactionEvent) -> None:
        if self._capturing:
            self._captured.append(event.update)

    def _integrate(self, doc: pycrdt.Doc[Any], incoming: list[Update]) -> None:
        """Apply what ``doc`` has the dependencies for; hold the rest, retrying as it grows."""
        waiting = self.held + incoming
        progress = True
        while waiting and progress:
            progress = False
            have = parse_state_vector(doc.get_state())
            still: list[Update] = []
            for needs, update in waiting:
                if _covers(have, parse_state_vector(needs)):
                    doc.apply_update(update)
                    progress = True
                else:
                    still.append((needs, update))
            waiting = still
        self.held = waiting
        self._length = self._mirror = None

    def _document(self) -> pycrdt.Doc[Any]:
        return self._open()[0]

    def value(self) -> str:
        return str(self._ytext())

    def __len__(self) -> int:
        return self._refresh()

    def _refresh(self) -> int:
        """The length, recomputed with the mirror (for non-ASCII text) if stale."""
        length = self._length
        if length is None:
            current = str(self._ytext())
            length = self._length = len(current)
            self._mirror = None if current.isascii() else current
        return length

    def _byte_offset(self, position: int) -> int:
        mirror = self._mirror
        return position if mirror is None else len(mirror[:position].encode("utf-8"))

    # --- delta mutators -----------------------------------------------------------------

    def _capture(self, writer: Writer, edit: Callable[[pycrdt.Text], None]) -> TextCRDT:
        doc, text = self._open(client_id_for(writer.actor))
        self._captured = []
        self._capturing = True
        try:
            # One transaction for reading the state vector and making the edit (pycrdt
            # nests the inner ones in it): one commit per edit instead of two.
            with doc.transaction():
                before = bytes(doc.get_state())
                edit(text)
        finally:
            self._capturing = False
        updates, self._captured = self._captured, []
        update = updates[0] if len(updates) == 1 else pycrdt.merge_updates(*updates)
        # Re-read rather than compute the new vector: pycrdt.get_state(update) omits
        # clients whose structs do not start at clock 0, and guessing yrs's clock units
        # could over-claim a dependency, which would hold the update back forever.
        delta = TextCRDT([(before, update)])
        delta._source = self
        return delta

    def insert_delta(self, writer: Writer, position: int, chunk: str) -> TextCRDT:
        """A delta inserting ``chunk`` at code-point ``position``.

        Unlike other mutators this one applies the edit to ``self`` as it builds the delta
        (pycrdt produces an update only by editing a document); absorbing the returned
        delta afterwards is a no-op, so the usual ``state.absorb(m_delta(state))`` holds.
        """
        if type(chunk) is not str:
            raise TypeError(f"text inserts take str, got {type(chunk).__name__}")
        length = self._length
        if length is None:
            length = len(self)
        if type(position) is not int or not 0 <= position <= length:
            raise IndexError(f"text position {position!r} out of range for length {length}")
        if not chunk:
            return TextCRDT()  # nothing to insert: an empty delta
        offset = position if self._mirror is None else self._byte_offset(position)
        if self._mirror is None and not chunk.isascii():
            self._mirror = str(self._ytext())
        if self._mirror is not None:
            self._mirror = self._mirror[:position] + chunk + self._mirror[position:]
        self._length = length + len(chunk)
        return self._capture(writer, lambda t: t.insert(offset, chunk))

    def delete_delta(self, writer: Writer, position: int, count: int) -> TextCRDT:
        """A delta deleting ``count`` code points from ``position`` (applied to ``self``)."""
        if type(position) is not int or type(count) is not int:
            raise TypeError("text delete takes int position and count")
        length = self._length
        if length is None:
            length = len(self)
        if count < 0 or not 0 <= position <= length or position + count > length:
            raise IndexError(f"text range {position}+{count} out of range for length {length}")
        if count == 0:
            return TextCRDT()
        start, end = self._byte_offset(position), self._byte_offset(position + count)
        if self._mirror is not None:
            self._mirror = self._mirror[:position] + self._mirror[position + count :]
        self._length = length - count

        def edit(text: pycrdt.Text) -> None:
            del text[start:end]

        return self._capture(writer, edit)

    def reset_delta(self, writer: Writer) -> TextCRDT:
        length = len(self)
        return self.delete_delta(writer, 0, length) if length else TextCRDT()

    # --- join -----------------------------------------------------------------------------

    def absorb(self, other: TextCRDT) -> None:
        if other._source is self:
            return
        incoming = other._as_updates()
        if not incoming:
            return
        doc = self._doc
        if doc is None:
            self.updates.extend(incoming)
        else:
            self._integrate(doc, incoming)

    def _as_updates(self) -> list[Update]:
        if self._doc is None:
            return list(self.updates)
        return [(_NO_DEPS, bytes(self._doc.get_update())), *self.held]

    def copy(self) -> Self:
        return type(self)(self._as_updates())

    def state_vector(self) -> bytes:
        return bytes(self._document().get_state())

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TextCRDT):
            return NotImplemented
        return (
            self.value() == other.value()
            and parse_state_vector(self.state_vector()) == parse_state_vector(other.state_vector())
            and sorted(self.held) == sorted(other.held)
        )

    __hash__ = None

    def to_wire(self) -> list[Any]:
        updates = self.updates if self._doc is None and len(self.updates) <= 1 else None
        if updates is None:
            updates = [(_NO_DEPS, bytes(self._document().get_update())), *sorted(self.held)]
        return [[needs, update] for needs, update in updates]

    @classmethod
    def from_wire(cls, obj: object, depth: int = 0) -> Self:
        updates: list[Update] = []
        for item in as_list(obj, "text"):
            needs, update = as_list(item, "text update", 2)
            parse_state_vector(as_bytes(needs, "text update dependencies"))
            updates.append((needs, as_bytes(update, "text update")))
        if updates:
            # pycrdt raises on malformed updates; find out now, before any replica state
            # is touched, rather than when the update is applied.
            try:
                probe, _ = _new_doc(None)
                for _, update in updates:
                    probe.apply_update(update)
                str(probe.get(_FIELD, type=pycrdt.Text))
            except (ValueError, TypeError) as exc:  # what pycrdt raises for bad updates
                raise DecodeError(f"text update rejected by pycrdt: {exc}") from None
        return cls(updates)
