"""Field handles are generic over their state type, so mypy checks every mutator they
pass: a misspelled or wrong-type mutator is a type error, not a runtime surprise."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from mypy import api

ROOT = Path(__file__).resolve().parent.parent

PROBE = textwrap.dedent(
    """
    from crdtmem.fields import GCounterField, ListField


    class Misspelled(GCounterField):
        __slots__ = ()

        def bump(self, n: int) -> None:
            writer = self._writer
            self._update(self._path, lambda s: s.incremnt_delta(writer, n))


    class WrongType(ListField):
        __slots__ = ()

        def bump(self) -> None:
            writer = self._writer
            self._update(self._path, lambda s: s.increment_delta(writer, 1))
    """
)


def test_mypy_rejects_a_misspelled_or_wrong_type_mutator(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text(PROBE)
    monkeypatch.setenv("MYPYPATH", str(ROOT))
    # A cache of its own (so the project's is left as it is): a few seconds the first
    # time, about one after.
    cache = ROOT / ".mypy_cache" / "test_typing"
    out, _, status = api.run(["--strict", "--cache-dir", str(cache), str(probe)])
    assert status == 1, out
    assert '"GCounter" has no attribute "incremnt_delta"' in out
    assert '"RGA" has no attribute "increment_delta"' in out
    assert "Found 2 errors in 1 file" in out
