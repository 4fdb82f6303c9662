"""Prototype, **not wired** into the replica or the gossip: verifiable origins by signing
hash-chained runs of updates.

Problem: updates reach most replicas through third nodes, so the authenticated sender
of a frame (its ZeroMQ ``User-Id``) says who *delivered* an update, not who *made* it.
Signing each update at its origin would prove that, but Ed25519 costs about 20 µs to
sign and 54 µs to verify, ten times a 2 µs local write.

Design (as append-only logs such as Secure Scuttlebutt and Hypercore do): a writer's
updates form a hash chain, each link the hash of the previous link, the writer, the
sequence number and the update's bytes (BLAKE2b-256). The writer signs a *run*: the
statement "writer W's chain went from ``previous`` (after sequence ``first - 1``) to
``head`` (after sequence ``last``)". A receiver recomputes the chain over the run's
updates (one hash each) and verifies one signature per run, whoever relayed it.
Because the run starts from the receiver's verified head of that writer, altering,
dropping, reordering or inserting any update breaks the chain, and a forged run has no
valid signature. A run that fails is rejected whole; other runs of the same message
are unaffected (:meth:`ChainVerifier.accept` is per run).

The signer and verifier are injected (``sign(message) -> signature``,
``verify(public_key, message, signature) -> bool``), so this module draws no randomness
and imports no crypto library: Ed25519 from PyNaCl in production, anything in tests.

>>> import hashlib, hmac
>>> secret = b"k" * 32
>>> sign = lambda message: hmac.new(secret, message, hashlib.sha256).digest()
>>> verify = lambda key, message, sig: hmac.compare_digest(sign(message), sig)
>>> run = sign_run(sign, "researcher", 1, GENESIS, [b"u1", b"u2"])
>>> checker = ChainVerifier({"researcher": b"public key"}, verify)
>>> checker.accept(run, [b"u1", b"u2"])
True
>>> checker.accept(sign_run(sign, "researcher", 3, run.head, [b"u3"]), [b"altered"])
False
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

HASH_BYTES: Final = 32
GENESIS: Final = bytes(HASH_BYTES)  # the chain's value before a writer's first update
# Domain separation: a signature over a run statement cannot be replayed as anything else.
STATEMENT_TAG: Final = b"crdtmem-run-v1\x00"
LINK_TAG: Final = b"crdtmem-link-v1\x00"

Signer = Callable[[bytes], bytes]
Verifier = Callable[[bytes, bytes, bytes], bool]


def _framed(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def link(previous: bytes, writer: str, seq: int, update: bytes) -> bytes:
    """The chain value after ``writer``'s update number ``seq``, whose encoding is
    ``update``, following ``previous``."""
    digest = hashlib.blake2b(digest_size=HASH_BYTES)
    digest.update(LINK_TAG + previous + _framed(writer.encode("utf-8")))
    digest.update(struct.pack(">Q", seq) + _framed(update))
    return digest.digest()


def chain(previous: bytes, writer: str, first: int, updates: Sequence[bytes]) -> bytes:
    """The chain value after ``updates`` (numbered from ``first``), from ``previous``."""
    head = previous
    for offset, update in enumerate(updates):
        head = link(head, writer, first + offset, update)
    return head


def statement(writer: str, first: int, last: int, previous: bytes, head: bytes) -> bytes:
    """The bytes a run's signature covers."""
    return (STATEMENT_TAG + _framed(writer.encode("utf-8")) + struct.pack(">QQ", first, last)) + (
        previous + head
    )


@dataclass(frozen=True)
class SignedRun:
    """``writer``'s updates ``first`` to ``last``, from chain value ``previous`` to
    ``head``, with the writer's ``signature`` over :func:`statement`."""

    writer: str
    first: int
    last: int
    previous: bytes
    head: bytes
    signature: bytes


def sign_run(
    sign: Signer, writer: str, first: int, previous: bytes, updates: Sequence[bytes]
) -> SignedRun:
    """Sign ``updates`` (at least one), numbered from ``first``, continuing the chain
    at ``previous`` (``GENESIS`` before the first)."""
    if not updates:
        raise ValueError("a run has at least one update")
    last = first + len(updates) - 1
    head = chain(previous, writer, first, updates)
    return SignedRun(
        writer, first, last, previous, head, sign(statement(writer, first, last, previous, head))
    )


class ChainVerifier:
    """What a receiver keeps: each writer's verified chain head, and the writers' public
    keys. ``accept`` checks a run and, if it holds, moves the head."""

    def __init__(self, keys: Mapping[str, bytes], verify: Verifier) -> None:
        self._keys = dict(keys)
        self._verify = verify
        self.heads: dict[str, tuple[int, bytes]] = {}  # writer -> (last seq, chain value)
        self.rejected = 0

    def accept(self, run: SignedRun, updates: Sequence[bytes]) -> bool:
        """Whether ``updates`` are ``run``'s, continue the verified chain of its writer,
        and carry the writer's signature. A rejected run is counted and changes nothing."""
        key = self._keys.get(run.writer)
        seen, head = self.heads.get(run.writer, (0, GENESIS))
        ok = (
            key is not None
            and updates
            and run.last == run.first + len(updates) - 1
            and run.first == seen + 1
            and run.previous == head
            and chain(head, run.writer, run.first, updates) == run.head
            and self._verify(
                key,
                statement(run.writer, run.first, run.last, run.previous, run.head),
                run.signature,
            )
        )
        if not ok:
            self.rejected += 1
            return False
        self.heads[run.writer] = (run.last, run.head)
        return True
