"""crdtmem.signing (prototype, not wired): hash-chained runs, one signature each."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from crdtmem.signing import GENESIS, ChainVerifier, SignedRun, Signer, sign_run

KEYS = {"researcher": b"r" * 32, "analyst": b"a" * 32}


def signer(writer: str) -> Signer:
    def sign(message: bytes) -> bytes:
        return hmac.new(KEYS[writer], message, hashlib.sha256).digest()

    return sign


def verify(key: bytes, message: bytes, signature: bytes) -> bool:
    return hmac.compare_digest(hmac.new(key, message, hashlib.sha256).digest(), signature)


def run_of(writer: str, first: int, previous: bytes, updates: list[bytes]) -> SignedRun:
    return sign_run(signer(writer), writer, first, previous, updates)


def test_runs_chain_and_verify() -> None:
    checker = ChainVerifier(KEYS, verify)
    first = run_of("researcher", 1, GENESIS, [b"a", b"b"])
    second = run_of("researcher", 3, first.head, [b"c"])
    assert checker.accept(first, [b"a", b"b"])
    assert checker.accept(second, [b"c"])
    assert checker.heads["researcher"] == (3, second.head)
    assert checker.rejected == 0


@pytest.mark.parametrize(
    "tamper",
    ["altered", "dropped", "reordered", "inserted", "wrong-writer", "forged", "replayed"],
)
def test_any_tampering_is_rejected_and_changes_nothing(tamper: str) -> None:
    checker = ChainVerifier(KEYS, verify)
    updates = [b"a", b"b", b"c"]
    run = run_of("researcher", 1, GENESIS, updates)
    if tamper == "altered":
        given = [b"a", b"B", b"c"]
    elif tamper == "dropped":
        given = [b"a", b"c"]
    elif tamper == "reordered":
        given = [b"b", b"a", b"c"]
    elif tamper == "inserted":
        given = [b"a", b"x", b"b", b"c"]
    elif tamper == "wrong-writer":  # analyst signs updates claiming researcher's origin
        honest = run_of("analyst", 1, GENESIS, updates)
        run = SignedRun("researcher", 1, 3, GENESIS, run.head, honest.signature)
        given = updates
    elif tamper == "forged":  # a relay rewrites the run and its head
        fake = run_of("researcher", 1, GENESIS, [b"evil", b"b", b"c"])
        run = SignedRun(run.writer, 1, 3, GENESIS, fake.head, run.signature)
        given = [b"evil", b"b", b"c"]
    else:  # the same run twice: the second does not continue the verified chain
        assert checker.accept(run, updates)
        given = updates
    before = dict(checker.heads)
    assert not checker.accept(run, given)
    assert checker.heads == before
    assert checker.rejected == 1


def test_an_unknown_writer_and_an_empty_run_are_refused() -> None:
    checker = ChainVerifier({"analyst": KEYS["analyst"]}, verify)
    assert not checker.accept(run_of("researcher", 1, GENESIS, [b"a"]), [b"a"])
    with pytest.raises(ValueError):
        run_of("researcher", 1, GENESIS, [])


def test_with_ed25519() -> None:
    signing = pytest.importorskip("nacl.signing")
    exceptions = pytest.importorskip("nacl.exceptions")
    key = signing.SigningKey(b"\x01" * 32)

    def ed_verify(public: bytes, message: bytes, signature: bytes) -> bool:
        try:
            signing.VerifyKey(public).verify(message, signature)
        except exceptions.BadSignatureError:
            return False
        return True

    def ed_sign(message: bytes) -> bytes:
        return bytes(key.sign(message).signature)

    checker = ChainVerifier({"researcher": bytes(key.verify_key)}, ed_verify)
    run = sign_run(ed_sign, "researcher", 1, GENESIS, [b"a", b"b"])
    assert checker.accept(run, [b"a", b"b"])
    assert not checker.accept(sign_run(ed_sign, "researcher", 3, run.head, [b"c"]), [b"d"])
