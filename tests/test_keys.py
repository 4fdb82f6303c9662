"""crdtmem.keys and ``python -m crdtmem keygen``: key files, their modes and their names."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import zmq

from crdtmem.__main__ import main
from crdtmem.keys import (
    KeyFileError,
    check_key_name,
    load_identity,
    load_public,
    load_trusted,
    render,
    write_key_pair,
)

posix_only = pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")


def keygen(folder: Path, name: str, *, force: bool = False) -> tuple[Path, Path]:
    public, secret = zmq.curve_keypair()
    return write_key_pair(name, folder, public, secret, force=force)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@posix_only
def test_keygen_command_writes_a_private_secret_and_a_public_key(tmp_path: Path) -> None:
    folder = tmp_path / "keys"
    result = subprocess.run(
        [sys.executable, "-m", "crdtmem", "keygen", "researcher", "--dir", str(folder)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert mode(folder / "researcher.key") == 0o600
    assert mode(folder) == 0o700
    identity = load_identity(folder / "researcher.key")
    assert identity.name == "researcher"
    assert load_trusted(folder) == {"researcher": identity.public}
    assert identity.secret.decode() not in repr(identity)
    assert "secret" not in (folder / "researcher.pub").read_text().replace("# crdtmem", "")


@posix_only
def test_secret_is_never_readable_by_others_even_with_a_lax_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        secret_path, public_path = keygen(tmp_path, "analyst")
    finally:
        os.umask(old)
    assert mode(secret_path) == 0o600
    assert mode(public_path) == 0o644
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left


def test_existing_keys_are_kept_unless_forced(tmp_path: Path) -> None:
    keygen(tmp_path, "analyst")
    before = load_identity(tmp_path / "analyst.key")
    with pytest.raises(FileExistsError, match="--force"):
        keygen(tmp_path, "analyst")
    assert load_identity(tmp_path / "analyst.key") == before
    assert main(["keygen", "analyst", "--dir", str(tmp_path)]) == 1
    assert load_identity(tmp_path / "analyst.key") == before
    assert main(["keygen", "analyst", "--dir", str(tmp_path), "--force"]) == 0
    after = load_identity(tmp_path / "analyst.key")
    assert after.public != before.public
    assert load_public(tmp_path / "analyst.pub") == ("analyst", after.public)


def test_keygen_refuses_a_bad_name(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["keygen", "../escape", "--dir", str(tmp_path)])
    assert exit_info.value.code == 2
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    "name", ["", ".hidden", "-rf", "a/b", "a b", "x" * 65, "agent~0123abcd", "é"]
)
def test_key_names_are_replica_names_and_safe_file_names(name: str) -> None:
    with pytest.raises(ValueError):
        check_key_name(name)


@posix_only
@pytest.mark.parametrize("lax", [0o640, 0o604, 0o644, 0o660])
def test_a_secret_key_readable_by_others_is_refused(tmp_path: Path, lax: int) -> None:
    secret_path, _ = keygen(tmp_path, "researcher")
    secret_path.chmod(lax)
    with pytest.raises(PermissionError, match="chmod 600"):
        load_identity(secret_path)


def test_names_inside_and_outside_must_agree(tmp_path: Path) -> None:
    secret_path, public_path = keygen(tmp_path, "researcher")
    (tmp_path / "trusted").mkdir()
    renamed = tmp_path / "trusted" / "boss.pub"
    public_path.rename(renamed)
    with pytest.raises(KeyFileError, match="speaks for 'researcher'"):
        load_public(renamed)
    with pytest.raises(KeyFileError, match="speaks for 'researcher'"):
        load_trusted(tmp_path / "trusted")
    moved = tmp_path / "boss.key"
    secret_path.rename(moved)
    with pytest.raises(KeyFileError, match=r"named 'boss\.key'"):
        load_identity(moved)


def test_trusted_folder_or_list(tmp_path: Path) -> None:
    for name in ("a", "b"):
        keygen(tmp_path, name)
    (tmp_path / "notes.txt").write_text("not a key")
    folder = load_trusted(tmp_path)
    assert sorted(folder) == ["a", "b"]
    assert load_trusted([tmp_path / "b.pub"]) == {"b": folder["b"]}
    with pytest.raises(KeyFileError, match="second key"):
        load_trusted([tmp_path / "a.pub", tmp_path / "a.pub"])
    with pytest.raises(KeyFileError, match=r"no \.pub"):
        load_trusted([])
    with pytest.raises(KeyFileError, match="not a folder"):
        load_trusted(tmp_path / "a.pub")


def test_one_key_under_two_names_is_refused(tmp_path: Path) -> None:
    keygen(tmp_path, "a")
    _, public = load_public(tmp_path / "a.pub")
    (tmp_path / "b.pub").write_text(render("b", public))
    with pytest.raises(KeyFileError, match="speaks for one replica"):
        load_trusted(tmp_path)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda t: t.replace("crdtmem-key: 1", "crdtmem-key: 2"), "format"),
        (lambda t: t.replace("name: a\n", ""), "missing name"),
        (lambda t: t + "name: a\n", "given twice"),
        (lambda t: t + "colour: blue\n", "unknown field"),
        (lambda t: t + "just words\n", "field: value"),
        (lambda t: t.replace("public-key: ", "public-key: x"), "40 Z85"),
        (lambda t: t + "secret-key: " + "0" * 40 + "\n", "holds a secret key"),
        (lambda t: t + "#" * 5000, "larger than"),
    ],
)
def test_malformed_public_files_are_refused(
    tmp_path: Path, edit: Callable[[str], str], message: str
) -> None:
    keygen(tmp_path, "a")
    path = tmp_path / "a.pub"
    path.write_text(edit(path.read_text()))
    with pytest.raises(KeyFileError, match=message):
        load_public(path)


def test_a_secret_that_is_not_the_public_keys_half_is_refused(tmp_path: Path) -> None:
    secret_path, _ = keygen(tmp_path, "a")
    other_public, _ = zmq.curve_keypair()
    text = secret_path.read_text()
    public_line = next(line for line in text.splitlines() if line.startswith("public-key"))
    secret_path.write_text(text.replace(public_line, f"public-key: {other_public.decode()}"))
    with pytest.raises(KeyFileError, match="public half"):
        load_identity(secret_path)
    with pytest.raises(ValueError, match="public half"):
        write_key_pair("c", tmp_path, other_public, zmq.curve_keypair()[1])


@posix_only
def test_a_fifo_in_place_of_a_key_is_refused_without_waiting(tmp_path: Path) -> None:
    fifo = tmp_path / "researcher.key"
    os.mkfifo(fifo)
    with pytest.raises(KeyFileError, match="not a regular file"):
        load_identity(fifo)
    with pytest.raises(KeyFileError, match="not a regular file"):
        load_public(fifo)
