"""``python -m crdtmem``: command lines around the library.

``python -m crdtmem keygen NAME --dir DIR [--force]`` draws a CURVE key pair and writes
``DIR/NAME.key`` (secret, mode 0600) and ``DIR/NAME.pub`` (see :mod:`crdtmem.keys`).
Exit status 0 on success, 1 when a key file exists (without ``--force``) or cannot be
written, 2 on a bad command line.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import zmq

from crdtmem.keys import check_key_name, write_key_pair


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m crdtmem", description="crdtmem command lines")
    commands = parser.add_subparsers(dest="command", required=True)
    keygen = commands.add_parser(
        "keygen",
        help="write a CURVE key pair NAME.key (secret, mode 600) and NAME.pub",
        description="Write DIR/NAME.key (the secret key, mode 600: keep it private) and "
        "DIR/NAME.pub (copy it to the trusted folders of NAME's peers).",
    )
    keygen.add_argument("name", metavar="NAME", help="the replica name the key speaks for")
    keygen.add_argument("--dir", default=".", metavar="DIR", help="where to write (default: .)")
    keygen.add_argument("--force", action="store_true", help="replace an existing key pair")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        name = check_key_name(args.name)
    except ValueError as exc:
        parser.error(str(exc))  # exits with status 2
    # The one place that draws randomness: the key pair (libsodium's generator, via libzmq).
    public, secret = zmq.curve_keypair()
    try:
        secret_path, public_path = write_key_pair(name, args.dir, public, secret, force=args.force)
    except OSError as exc:
        print(f"keygen: {exc}", file=sys.stderr)
        return 1
    print(f"secret key: {secret_path} (mode 600: keep it private)")
    print(f"public key: {public_path} (copy it to the trusted folders of {name}'s peers)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
