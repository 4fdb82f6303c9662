"""Key files: who may speak for which replica name.

Each agent has a CURVE key pair (ZeroMQ's Curve25519 keys, written in Z85, the 40
printable characters ZeroMQ uses). ``python -m crdtmem keygen NAME --dir DIR`` writes:

- ``DIR/NAME.key``: the secret key. Mode 0600, created with that mode (never readable
  by group or others, even for an instant); :func:`load_identity` refuses a secret key
  file that group or others can read. Never copy it to another machine or agent.
- ``DIR/NAME.pub``: the public key, to copy into the ``trusted`` folder of every node
  that should accept NAME. :func:`load_trusted` reads such a folder (or a list of files).

The replica name a key may speak for is bound to it twice: by the file name and by a
``name:`` line inside; a file whose two names differ is refused, so renaming a ``.pub``
file cannot make its key speak for another replica. The format (``#`` lines are
comments; every other line is ``field: value``, each field once, in any order)::

    # crdtmem public key: copy to the trusted folders of the peers of researcher
    crdtmem-key: 1
    name: researcher
    public-key: <40 Z85 characters>

and a ``.key`` file holds the same lines plus ``secret-key: <40 Z85 characters>``. A
``.pub`` file holding a ``secret-key`` line is refused (a secret sent by mistake).

Key names are replica names (:func:`crdtmem.replica.check_replica_id`) that are also safe
file names: 1 to 64 of ``A-Z a-z 0-9 . _ -``, not starting with ``.`` or ``-``.

This module only reads and writes files; drawing a key pair is the caller's
(``zmq.curve_keypair()`` in the command line), so the library itself draws no
randomness.

>>> check_key_name("researcher")
'researcher'
>>> check_key_name("../etc/passwd")
Traceback (most recent call last):
...
ValueError: key name '../etc/passwd': use 1 to 64 of A-Z a-z 0-9 . _ - (not starting with . or -)
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from zmq import curve_public  # the public half of a secret key: no randomness
from zmq.utils import z85

from crdtmem.identity import name_of
from crdtmem.replica import check_replica_id

FORMAT_VERSION: Final = "1"
SECRET_SUFFIX: Final = ".key"
PUBLIC_SUFFIX: Final = ".pub"
# A key file is five short lines; anything much larger is not one (and is not read whole).
MAX_KEY_FILE_BYTES: Final = 4096
# Curve25519 keys are 32 bytes, 40 characters in Z85.
KEY_BYTES: Final = 32
Z85_KEY_CHARS: Final = 40
# Group and other permission bits: none may be set on a secret key file.
PRIVATE_MODE_MASK: Final = 0o077
SECRET_MODE: Final = 0o600
FOLDER_MODE: Final = 0o700
# Names double as file names: no separator, no leading dot (hidden files, "..") or dash
# (options to a shell command).
_NAME: Final = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,63}")
# O_NONBLOCK: opening a FIFO planted where a key should be returns at once (and is then
# refused as not a regular file) instead of waiting for a writer; no effect on files.
_READ_FLAGS: Final = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0)
_PUBLIC_FIELDS: Final = frozenset({"crdtmem-key", "name", "public-key"})
_SECRET_FIELDS: Final = _PUBLIC_FIELDS | {"secret-key"}


class KeyFileError(ValueError):
    """A key file that is malformed, or whose names or keys do not agree."""


@dataclass(frozen=True)
class Identity:
    """A node's own key pair and the replica name it speaks for (from a ``.key`` file).

    ``public`` and ``secret`` are the Z85 text of the keys, as bytes (what pyzmq's CURVE
    socket options take). The secret is left out of ``repr``, so it is not logged by
    accident."""

    name: str
    public: bytes
    secret: bytes = field(repr=False)


def check_key_name(name: object) -> str:
    """``name`` if it can name a key: a replica id that is a safe file name, else
    ``ValueError``."""
    check_replica_id(name)
    if not isinstance(name, str) or _NAME.fullmatch(name) is None or name_of(name) != name:
        raise ValueError(
            f"key name {name!r}: use 1 to 64 of A-Z a-z 0-9 . _ - (not starting with . or -)"
        )
    return name


def _check_z85_key(value: str, what: str, path: Path) -> bytes:
    raw = value.encode("ascii", "replace")
    if len(raw) != Z85_KEY_CHARS:
        raise KeyFileError(f"{path}: {what} must be {Z85_KEY_CHARS} Z85 characters")
    try:
        decoded = z85.decode(raw)
    except (ValueError, KeyError, IndexError) as exc:  # a character outside Z85
        raise KeyFileError(f"{path}: {what} is not Z85 text") from exc
    if len(decoded) != KEY_BYTES:  # pragma: no cover - 40 Z85 characters are 32 bytes
        raise KeyFileError(f"{path}: {what} is not a {KEY_BYTES}-byte key")
    return raw


def _parse(text: str, path: Path, allowed: frozenset[str]) -> dict[str, str]:
    fields: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        key, colon, value = stripped.partition(":")
        key, value = key.strip(), value.strip()
        if not colon or not value:
            raise KeyFileError(f"{path}, line {number}: expected 'field: value'")
        if key == "secret-key" and "secret-key" not in allowed:
            raise KeyFileError(
                f"{path} holds a secret key: a public key file must not (keep the secret "
                f"in a {SECRET_SUFFIX} file of mode 600, and send only the {PUBLIC_SUFFIX})"
            )
        if key not in allowed:
            raise KeyFileError(f"{path}, line {number}: unknown field {key!r}")
        if key in fields:
            raise KeyFileError(f"{path}, line {number}: field {key!r} given twice")
        fields[key] = value
    missing = sorted(allowed - fields.keys())
    if missing:
        raise KeyFileError(f"{path}: missing {', '.join(missing)}")
    if fields["crdtmem-key"] != FORMAT_VERSION:
        raise KeyFileError(
            f"{path}: key file format {fields['crdtmem-key']!r}; this version reads "
            f"{FORMAT_VERSION!r}"
        )
    return fields


def _check_names(fields: dict[str, str], path: Path, suffix: str) -> str:
    """The name stated inside, which must be the file's name: both bind the key."""
    stated = fields["name"]
    try:
        check_key_name(stated)
    except ValueError as exc:
        raise KeyFileError(f"{path}: {exc}") from exc
    if path.name != stated + suffix:
        raise KeyFileError(
            f"{path}: the key speaks for {stated!r} but the file is named {path.name!r}; "
            f"a key file must be named {stated + suffix!r}"
        )
    return stated


def _read_text(fd: int, path: Path) -> str:
    data = os.read(fd, MAX_KEY_FILE_BYTES + 1)
    if len(data) > MAX_KEY_FILE_BYTES:
        raise KeyFileError(f"{path}: larger than {MAX_KEY_FILE_BYTES} bytes: not a key file")
    try:
        return data.decode("ascii")
    except UnicodeDecodeError as exc:
        raise KeyFileError(f"{path}: not a text key file") from exc


def load_identity(path: str | os.PathLike[str]) -> Identity:
    """Read a secret key file (``NAME.key``): the node's own key pair.

    Raises:
        PermissionError: group or others can read or write the file (run ``chmod 600``).
        KeyFileError: a malformed file, file and stated names that differ, or a public
            key that is not the secret key's.
        OSError: the file cannot be read.
    """
    where = Path(path)
    fd = os.open(where, _READ_FLAGS)
    try:
        info = os.fstat(fd)  # of the file opened, not of a path that may be swapped
        if not stat.S_ISREG(info.st_mode):
            raise KeyFileError(f"{where}: not a regular file")
        if os.name == "posix" and info.st_mode & PRIVATE_MODE_MASK:
            raise PermissionError(
                f"{where}: secret key file has mode {stat.S_IMODE(info.st_mode):03o}, "
                f"readable by group or others; refused. Run: chmod 600 {where}"
            )
        text = _read_text(fd, where)
    finally:
        os.close(fd)
    fields = _parse(text, where, _SECRET_FIELDS)
    name = _check_names(fields, where, SECRET_SUFFIX)
    public = _check_z85_key(fields["public-key"], "public-key", where)
    secret = _check_z85_key(fields["secret-key"], "secret-key", where)
    if curve_public(secret) != public:
        raise KeyFileError(f"{where}: public-key is not the public half of secret-key")
    return Identity(name, public, secret)


def load_public(path: str | os.PathLike[str]) -> tuple[str, bytes]:
    """Read a public key file (``NAME.pub``): the name it speaks for and its Z85 key.

    Raises:
        KeyFileError: a malformed file, or file and stated names that differ.
        OSError: the file cannot be read.
    """
    where = Path(path)
    fd = os.open(where, _READ_FLAGS)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise KeyFileError(f"{where}: not a regular file")
        text = _read_text(fd, where)
    finally:
        os.close(fd)
    fields = _parse(text, where, _PUBLIC_FIELDS)
    name = _check_names(fields, where, PUBLIC_SUFFIX)
    return name, _check_z85_key(fields["public-key"], "public-key", where)


def load_trusted(
    source: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
) -> dict[str, bytes]:
    """The trusted public keys: replica name -> Z85 public key.

    ``source`` is a folder (every ``*.pub`` file in it; other files are ignored) or a
    list of ``.pub`` files.

    Raises:
        KeyFileError: no key at all, a bad file, two files for one name, or one key
            under two names (a key speaks for one replica only).
        OSError: a file or the folder cannot be read.
    """
    if isinstance(source, (str, os.PathLike)):
        folder = Path(source)
        if not folder.is_dir():
            raise KeyFileError(f"trusted {folder}: not a folder (pass a list for files)")
        paths = sorted(folder.glob("*" + PUBLIC_SUFFIX))
    elif isinstance(source, bytes):
        raise KeyFileError("trusted is a folder or a list of .pub files, got bytes")
    else:
        paths = [Path(item) for item in source]
    trusted: dict[str, bytes] = {}
    names_by_key: dict[bytes, str] = {}
    for path in paths:
        name, public = load_public(path)
        if name in trusted:
            raise KeyFileError(f"{path}: a second key for {name!r}")
        if public in names_by_key:
            raise KeyFileError(
                f"{path}: the key of {names_by_key[public]!r} again, under {name!r}: "
                "a key speaks for one replica"
            )
        trusted[name] = public
        names_by_key[public] = name
    if not trusted:
        raise KeyFileError(f"trusted {source!r}: no {PUBLIC_SUFFIX} file, so no peer could connect")
    return trusted


def render(name: str, public: bytes, secret: bytes | None = None) -> str:
    """The text of a key file (a ``.key`` one when ``secret`` is given)."""
    check_key_name(name)
    kind = "secret" if secret is not None else "public"
    advice = (
        "keep private: mode 600, never copy it"
        if secret is not None
        else f"copy to the trusted folders of the peers of {name}"
    )
    lines = [
        f"# crdtmem {kind} key (CURVE, Z85): {advice}",
        f"crdtmem-key: {FORMAT_VERSION}",
        f"name: {name}",
        f"public-key: {public.decode('ascii')}",
    ]
    if secret is not None:
        lines.append(f"secret-key: {secret.decode('ascii')}")
    return "\n".join(lines) + "\n"


def _write_new(folder: Path, final: Path, text: str, mode: int, force: bool) -> None:
    """Write ``final`` atomically, created with ``mode`` (a temporary file opened
    ``O_EXCL`` with that mode, so the content is never readable by others, then linked or
    renamed into place). Without ``force`` an existing ``final`` raises
    ``FileExistsError``, even one that appears meanwhile (``link`` never overwrites)."""
    temporary = folder / f".{final.name}.{os.getpid()}.tmp"
    with contextlib.suppress(FileNotFoundError):  # left by a crashed run of this process id
        temporary.unlink()
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.fchmod(fd, mode)  # the umask may have removed bits; it never adds any
        os.write(fd, text.encode("ascii"))
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        temporary.unlink()
        raise
    os.close(fd)
    try:
        if force:
            os.replace(temporary, final)
        else:
            os.link(temporary, final)
    finally:
        with contextlib.suppress(FileNotFoundError):  # replaced: already gone
            temporary.unlink()


def write_key_pair(
    name: str,
    folder: str | os.PathLike[str],
    public: bytes,
    secret: bytes,
    *,
    force: bool = False,
) -> tuple[Path, Path]:
    """Write ``folder/NAME.key`` (mode 0600) and ``folder/NAME.pub`` (mode 0644) for a
    key pair drawn by the caller (``zmq.curve_keypair()``); returns their paths. The
    folder is created (mode 0700) if missing.

    Raises:
        FileExistsError: a key file of that name exists (pass ``force=True`` to replace it).
        ValueError: a bad name, or keys that are not a Z85 CURVE key pair.
    """
    check_key_name(name)
    where = Path(folder)
    _check_z85_key(public.decode("ascii", "replace"), "public key", where)
    _check_z85_key(secret.decode("ascii", "replace"), "secret key", where)
    if curve_public(secret) != public:
        raise ValueError("public is not the public half of secret")
    where.mkdir(mode=FOLDER_MODE, parents=True, exist_ok=True)
    secret_path = where / (name + SECRET_SUFFIX)
    public_path = where / (name + PUBLIC_SUFFIX)
    if not force:
        for path in (secret_path, public_path):
            if path.exists() or path.is_symlink():
                raise FileExistsError(f"{path} exists: pass --force to replace the key pair")
    _write_new(where, secret_path, render(name, public, secret), SECRET_MODE, force)
    try:
        _write_new(where, public_path, render(name, public), 0o644, force)
    except FileExistsError:
        secret_path.unlink()  # ours, just written: do not leave half a pair
        raise
    with contextlib.suppress(OSError):  # not every platform can open a folder
        folder_fd = os.open(where, os.O_RDONLY)
        try:
            os.fsync(folder_fd)  # the new names survive a crash
        finally:
            os.close(folder_fd)
    return secret_path, public_path
