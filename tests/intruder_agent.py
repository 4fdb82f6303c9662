"""An intruder process for tests/test_secure_gossip.py: a ZeroMQ gossip node that tries
to join a secured group, without keys or with a key the group does not trust.

It writes the field ``intruder`` (an attempt to write), gossips with the given peers
(each SYNC it sends is an attempt to read), prints ``READY`` once bound, and when its
stdin closes prints ``SAW <json list of the fields it holds>`` and exits.
"""

from __future__ import annotations

import argparse
import json
import sys

from crdtmem import Replica
from transport import ZmqGossip


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("name")
    parser.add_argument("bind")
    parser.add_argument("peers", nargs="*")
    parser.add_argument("--key", default=None, help="its own .key file (none: no keys)")
    parser.add_argument("--trusted", default=None, help="a folder of .pub files")
    args = parser.parse_args()
    replica = Replica(args.name)
    replica.register("intruder").set(f"written by {args.name}")
    gossip = ZmqGossip(
        replica,
        bind=args.bind,
        peers=args.peers,
        interval=0.05,
        identity=args.key,
        trusted=args.trusted,
    )
    with gossip:
        replica.counter("attempts").increment()  # a write after start too
        print("READY", flush=True)
        sys.stdin.read()  # until the test closes our stdin
        print("SAW", json.dumps(sorted(replica.value())), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
