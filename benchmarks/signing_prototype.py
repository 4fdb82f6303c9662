"""Cost per update of verifiable origins as prototyped in crdtmem.signing (not wired):
Ed25519 (PyNaCl) over hash-chained runs of 1, 16 and 256 updates.

    python -m benchmarks.signing_prototype     # needs PyNaCl: pip install pynacl

Not part of ``python -m benchmarks``: PyNaCl is not a dependency until origins are
wired. Prints, per run size, the microseconds per update to sign and to verify.
"""

from __future__ import annotations

import importlib
import sys
import time
from typing import Any

from crdtmem.signing import GENESIS, ChainVerifier, sign_run

UPDATE_BYTES = 100  # a small field write, encoded
TOTAL_UPDATES = 4096  # per measurement: 4096 runs of 1, 256 of 16, 16 of 256
REPEATS = 5  # the best of these is reported (least disturbed by other load)


def main() -> int:
    try:
        signing: Any = importlib.import_module("nacl.signing")
    except ModuleNotFoundError:
        print("needs PyNaCl: pip install pynacl", file=sys.stderr)
        return 2
    key = signing.SigningKey(b"\x01" * 32)
    verify_key = signing.VerifyKey(bytes(key.verify_key))

    def sign(message: bytes) -> bytes:
        return bytes(key.sign(message).signature)

    def verify(public: bytes, message: bytes, signature: bytes) -> bool:
        verify_key.verify(message, signature)  # raises on a bad signature
        return True

    updates = [bytes([i % 251]) * UPDATE_BYTES for i in range(TOTAL_UPDATES)]
    print(f"{'run':>5} {'sign us/update':>15} {'verify us/update':>17}")
    for size in (1, 16, 256):
        best_sign = best_verify = float("inf")
        for _ in range(REPEATS):
            runs, head, start = [], GENESIS, time.perf_counter()
            for first in range(0, TOTAL_UPDATES, size):
                run = sign_run(sign, "researcher", first + 1, head, updates[first : first + size])
                runs.append(run)
                head = run.head
            signed = time.perf_counter()
            checker = ChainVerifier({"researcher": b""}, verify)
            for run in runs:
                if not checker.accept(run, updates[run.first - 1 : run.last]):
                    raise AssertionError("a valid run was rejected")
            done = time.perf_counter()
            best_sign = min(best_sign, (signed - start) / TOTAL_UPDATES)
            best_verify = min(best_verify, (done - signed) / TOTAL_UPDATES)
        print(f"{size:>5} {best_sign * 1e6:>15.2f} {best_verify * 1e6:>17.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
