"""Two wheels compared file by file; ELF read defensively (an index's wheel is untrusted)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from monorepo.building.reproducible import WheelContents
from monorepo.building.wheeldiff import compare_wheels, dynamic_symbols, elf_sections

D = "x-1.dist-info"


def contents(files: dict[str, bytes], executable: frozenset[str] = frozenset()) -> WheelContents:
    return WheelContents(files, executable, tuple(files))


def test_text_added_removed_mode_and_metadata() -> None:
    a = contents({"x/a.py": b"A = 1\nB = 2\n", "x/gone.txt": b"", f"{D}/RECORD": b"1"})
    b = contents(
        {"x/a.py": b"A = 1\nB = 3\n", "x/new.txt": b"", "x/gone.txt": b"", f"{D}/RECORD": b"2"},
        frozenset({"x/gone.txt"}),
    )
    diffs = {d.path: d for d in compare_wheels(a, b)}
    assert diffs["x/a.py"].kind == "text" and "+B = 3" in diffs["x/a.py"].detail
    assert diffs["x/new.txt"].change == "added"
    assert diffs["x/gone.txt"].change == "mode"
    assert diffs[f"{D}/RECORD"].area == "metadata"
    assert diffs["x/a.py"].area == "code"
    renamed = compare_wheels(
        a,
        contents({"X-1.dist-info/RECORD": b"1", **dict(list(a.files.items())[:2])}),
        renames={"X-1.dist-info/RECORD": f"{D}/RECORD"},
    )
    assert renamed == []


def test_huge_text_files_are_compared_by_size_only() -> None:
    big = b"x\n" * (1 << 20)
    (diff,) = compare_wheels(contents({"x/big.txt": big}), contents({"x/big.txt": big + b"y\n"}))
    assert diff.kind == "binary" and diff.detail == () and diff.sizes == (len(big), len(big) + 2)


@pytest.mark.skipif(shutil.which("cc") is None, reason="needs a C compiler")
def test_elf_sections_and_symbols_of_real_objects(tmp_path: Path) -> None:
    def compile_(name: str, source: str, *flags: str) -> bytes:
        (tmp_path / f"{name}.c").write_text(source)
        out = tmp_path / f"{name}.so"
        subprocess.run(
            ["cc", "-shared", "-fPIC", *flags, str(tmp_path / f"{name}.c"), "-o", str(out)],
            check=True,
        )
        return out.read_bytes()

    one = compile_("one", "int keep(void) { return 1; }\nint gone(void) { return 2; }\n")
    two = compile_("two", "int keep(void) { return 3; }\nint added(void) { return 4; }\n")
    assert {"keep", "gone"} <= dynamic_symbols(one)
    assert ".text" in elf_sections(one)
    (diff,) = compare_wheels(contents({"x/m.so": one}), contents({"x/m.so": two}))
    assert diff.kind == "elf"
    assert ".text" in diff.sections
    assert diff.symbols_added == ("added",) and diff.symbols_missing == ("gone",)
    assert "symbols missing: gone" in diff.summary()
    # Truncated or garbage ELF files are read as far as they make sense, never crash.
    for broken in (one[:64], one[:200], b"\x7fELF" + b"\xff" * 100, one[:-500]):
        elf_sections(broken)
        dynamic_symbols(broken)
    assert elf_sections(b"not elf") == {} and dynamic_symbols(b"\x7fELF") == set()
