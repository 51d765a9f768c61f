"""Tests for monorepo.sysroot: Debian target sysroots for cross builds.

Everything but the ``network`` test runs offline: indices, Release files and .debs
are built here (real ``ar`` and tar bytes) and served from a file:// mirror.  The
network test builds the real bookworm arm64 sysroot (run it with
``MONOREPO_TEST_INDEX_URL=1 pytest -m network tests/test_sysroot.py``); the cross
test compiles and imports an extension under qemu when the cross toolchain is
installed and ``MONOREPO_TEST_SYSROOT`` names a sysroot (``.ci/run`` sets it up).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import lzma
import os
import re
import shutil
import subprocess
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from fixtures import hostile
from monorepo._core.reporter import RecordingReporter
from monorepo.errors import HashMismatchError
from monorepo.extract.rules import RawMember
from monorepo.sysroot.apt import (
    DebPackage,
    debian_mirror,
    parse_depends,
    parse_packages,
    parse_release,
    resolve_closure,
    root_packages,
)
from monorepo.sysroot.deb import (
    ar_members,
    deb_data_member,
    plan_deb,
    relativise_ld_script,
    unpack_deb,
)
from monorepo.sysroot.discover import read_sysroot
from monorepo.sysroot.info import TOML_NAME, SysrootError
from monorepo.sysroot.make import make_sysroot

# --------------------------------------------------------------------------- builders


def ar_bytes(members: list[tuple[str, bytes]], *, bsd: bool = False) -> bytes:
    """A System V/GNU ``ar`` archive (names end in '/'), or BSD long names (#1/N)."""
    out = bytearray(b"!<arch>\n")
    for name, data in members:
        if bsd:
            raw = name.encode()
            field, data = f"#1/{len(raw)}", raw + data
        else:
            field = name + "/"
        header = f"{field:<16}{0:<12}{0:<6}{0:<6}{'100644':<8}{len(data):<10}".encode() + b"`\n"
        assert len(header) == 60
        out += header + data
        if len(data) % 2:
            out += b"\n"
    return bytes(out)


Member = tuple[str, str, bytes | str]  # (kind, name, data or link target)


def tar_xz(members: list[Member]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for kind, name, payload in members:
            info = tarfile.TarInfo(name)
            if kind == "dir":
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            elif kind == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, str(payload)
                tar.addfile(info)
            elif kind == "hardlink":
                info.type, info.linkname = tarfile.LNKTYPE, str(payload)
                tar.addfile(info)
            elif kind == "fifo":
                info.type = tarfile.FIFOTYPE
                tar.addfile(info)
            else:
                data = payload if isinstance(payload, bytes) else payload.encode()
                info.size, info.mode = len(data), 0o755 if kind == "exe" else 0o644
                tar.addfile(info, io.BytesIO(data))
    return lzma.compress(buf.getvalue())


def deb_bytes(members: list[Member]) -> bytes:
    control = tar_xz([("file", "./control", b"Package: x\n")])
    return ar_bytes(
        [("debian-binary", b"2.0\n"), ("control.tar.xz", control), ("data.tar.xz", tar_xz(members))]
    )


def stanza(name: str, **fields: str) -> str:
    lines = [f"Package: {name}", f"Version: {fields.pop('version', '1.0-1')}"]
    lines += [f"{k.replace('_', '-').title()}: {v}" for k, v in fields.items()]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- Packages


def test_parse_packages_fields_continuations_and_first_wins() -> None:
    text = (
        stanza("libfoo1", version="2.0-1", architecture="arm64", depends="libc6 (>= 2.34)")
        + "Description: foo\n a long\n .\n description\nSHA256: ABCDEF\nSize: 12\n"
        + "Filename: pool/main/f/foo/libfoo1_2.0-1_arm64.deb\n\n"
        + stanza("libfoo1", version="1.0-1")
        + "\n"
        + stanza("x", pre_depends="libc6", depends="liba | libb, libc:any (>= 1) [arm64]")
        + "Provides: virt (= 1), other\nEssential: yes\nPriority: required\n"
    )
    index = parse_packages(text)
    assert set(index) == {"libfoo1", "x"}
    foo = index["libfoo1"]
    assert (foo.version, foo.architecture, foo.size, foo.sha256) == ("2.0-1", "arm64", 12, "abcdef")
    assert foo.filename == "pool/main/f/foo/libfoo1_2.0-1_arm64.deb"
    assert foo.depends == (("libc6",),)
    x = index["x"]
    assert x.depends == (("libc6",), ("liba", "libb"), ("libc",))
    assert x.provides == ("virt", "other")
    assert x.essential and x.priority == "required"


def test_parse_depends_names_only() -> None:
    assert parse_depends("") == ()
    assert parse_depends("a (>= 1.0~b1), b:any | c (<< 2) [arm64 amd64], d <!nocheck>") == (
        ("a",),
        ("b", "c"),
        ("d",),
    )


def _pkg(name: str, depends: str = "", **kw: object) -> DebPackage:
    return DebPackage(
        name,
        "1",
        "arm64",
        f"pool/{name}.deb",
        "0" * 64,
        1,
        depends=parse_depends(depends),
        provides=tuple(kw.get("provides", ())),  # type: ignore[arg-type]
        essential=bool(kw.get("essential", False)),
        priority=str(kw.get("priority", "optional")),
    )


def test_closure_recursion_alternatives_virtuals_and_skips() -> None:
    index = {
        p.name: p
        for p in [
            _pkg("root", "liba, nothere | libb, virt, perl-base, libreq, gone"),
            _pkg("liba", "libc"),
            _pkg("libb"),
            _pkg("libc", "liba"),  # a cycle
            _pkg("provider", provides=("virt",)),
            _pkg("perl-base", "libperlonly", essential=True),
            _pkg("libperlonly"),
            _pkg("libreq", priority="required"),
            _pkg("opt", "libb"),
            _pkg("unrelated"),
        ]
    }
    closure = resolve_closure(index, ["root"], optional_roots=["opt", "absent-opt"])
    names = [p.name for p in closure.packages]
    assert names == sorted(["root", "liba", "libb", "libc", "provider", "libreq", "opt"])
    assert closure.skipped == ["perl-base"]
    assert closure.missing == ["gone"]
    # A skippable package asked for by name is kept.
    assert "perl-base" in [p.name for p in resolve_closure(index, ["perl-base"]).packages]


def test_closure_missing_root_is_an_error() -> None:
    with pytest.raises(SysrootError, match=r"no python3\.99-minimal"):
        resolve_closure({}, list(root_packages("3.99")))


# --------------------------------------------------------------------------- Release


def _release(entries: dict[str, bytes], suite: str = "bookworm") -> str:
    lines = [f"Origin: Debian\nSuite: stable\nCodename: {suite}\nSHA256:"]
    lines += [f" {hashlib.sha256(d).hexdigest()} {len(d):>8} {p}" for p, d in entries.items()]
    return "\n".join(lines) + "\n"


def test_parse_release_plain_and_clearsigned() -> None:
    body = _release({"main/binary-arm64/Packages.xz": b"abc"})
    plain = parse_release(body)
    assert plain.codename == "bookworm" and plain.suite == "stable"
    digest = hashlib.sha256(b"abc").hexdigest()
    assert plain.sha256 == {"main/binary-arm64/Packages.xz": (digest, 3)}
    signed = (
        "-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA512\n\n"
        + body
        + "- -escaped: line\n-----BEGIN PGP SIGNATURE-----\n\nxyz\n-----END PGP SIGNATURE-----\n"
    )
    assert parse_release(signed).sha256 == plain.sha256
    with pytest.raises(SysrootError, match="no SHA256"):
        parse_release("Origin: Debian\nSuite: stable\n")


# --------------------------------------------------------------------------- ar / .deb


def test_ar_members_gnu_padding_and_bsd_names() -> None:
    members = [("debian-binary", b"2.0\n"), ("odd", b"12345"), ("data.tar.xz", b"xyz")]
    for bsd in (False, True):
        data = ar_bytes(members, bsd=bsd)
        parsed = ar_members(data)
        assert [m.name for m in parsed] == ["debian-binary", "odd", "data.tar.xz"]
        assert [data[m.offset : m.offset + m.size] for m in parsed] == [d for _, d in members]


@pytest.mark.skipif(shutil.which("ar") is None, reason="binutils' ar is not installed")
def test_ar_members_reads_what_binutils_ar_writes(tmp_path: Path) -> None:
    (tmp_path / "debian-binary").write_bytes(b"2.0\n")
    (tmp_path / "data.tar.xz").write_bytes(b"odd!!")
    subprocess.run(["ar", "rc", "x.deb", "debian-binary", "data.tar.xz"], cwd=tmp_path, check=True)
    data = (tmp_path / "x.deb").read_bytes()
    assert deb_data_member(data) == ("data.tar.xz", b"odd!!")


def test_ar_damage_is_refused() -> None:
    good = ar_bytes([("debian-binary", b"2.0\n"), ("data.tar.xz", b"x" * 100)])
    with pytest.raises(SysrootError, match="not an ar archive"):
        ar_members(b"PK\x03\x04")
    with pytest.raises(SysrootError, match="truncated"):
        ar_members(good[:-20])
    with pytest.raises(SysrootError, match="damaged ar header"):
        ar_members(good[:130] + b"XX" + good[132:])  # second header's end marker
    with pytest.raises(SysrootError, match=r"not a \.deb"):
        deb_data_member(ar_bytes([("data.tar.xz", b"x")]))
    with pytest.raises(SysrootError, match=r"no data\.tar"):
        deb_data_member(ar_bytes([("debian-binary", b"2.0\n")]))


# --------------------------------------------------------------------------- planning


def _raw(kind: str, name: str, link: str = "") -> RawMember:
    return RawMember(name, kind, 0, 0o644, link)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("member", "message"),
    [
        (_raw("file", "/etc/passwd"), "absolute"),
        (_raw("file", "./usr/../../etc/x"), r"'\.\.'"),
        (_raw("chardev", "./dev/null"), "character device"),
        (_raw("fifo", "./run/p"), "fifo"),
        (_raw("symlink", "./usr/x", "../../etc"), "leaves the sysroot"),
        (_raw("symlink", "./x", "/../../etc"), "leaves the sysroot"),
        (_raw("hardlink", "./usr/h", "./usr/nothere"), "not an earlier regular file"),
    ],
)
def test_plan_refuses_escapes(member: RawMember, message: str) -> None:
    with pytest.raises(SysrootError, match=message):
        plan_deb("pkg", [_raw("dir", "./"), member])


def test_plan_merges_usr_and_rewrites_absolute_links() -> None:
    plan = plan_deb(
        "pkg",
        [
            _raw("dir", "./"),
            _raw("dir", "./lib/aarch64-linux-gnu/"),
            RawMember("./lib/aarch64-linux-gnu/libz.so.1.2", "file", 3, 0o644),
            _raw("symlink", "./lib/aarch64-linux-gnu/libz.so.1", "libz.so.1.2"),
            _raw(
                "symlink", "./usr/lib/aarch64-linux-gnu/libz.so", "/lib/aarch64-linux-gnu/libz.so.1"
            ),
            _raw("symlink", "./usr/bin/python3", "/usr/bin/python3.11"),
            _raw("symlink", "./bin/sh", "/usr/share/../bin/dash"),
            _raw("symlink", "./usr/share/doc/x", "../../../lib/y"),
            _raw(
                "hardlink",
                "./usr/lib/aarch64-linux-gnu/libz.copy",
                "./lib/aarch64-linux-gnu/libz.so.1.2",
            ),
            RawMember("./usr/bin/tool", "file", 1, 0o755),
        ],
    )
    got = {e.rel: (e.kind, e.link, e.executable) for e in plan}
    assert got == {
        "usr/lib/aarch64-linux-gnu": ("dir", "", False),
        "usr/lib/aarch64-linux-gnu/libz.so.1.2": ("file", "", False),
        "usr/lib/aarch64-linux-gnu/libz.so.1": ("symlink", "libz.so.1.2", False),
        "usr/lib/aarch64-linux-gnu/libz.so": ("symlink", "libz.so.1", False),
        "usr/bin/python3": ("symlink", "python3.11", False),
        "usr/bin/sh": ("symlink", "dash", False),
        "usr/share/doc/x": ("symlink", "../../lib/y", False),
        "usr/lib/aarch64-linux-gnu/libz.copy": (
            "hardlink",
            "usr/lib/aarch64-linux-gnu/libz.so.1.2",
            False,
        ),
        "usr/bin/tool": ("file", "", True),
    }


def test_unpack_writes_relative_links_and_refuses_writing_through_symlinks(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    deb = deb_bytes(
        [
            ("dir", "./", b""),
            ("file", "./lib/aarch64-linux-gnu/libz.so.1.2", b"elf"),
            (
                "symlink",
                "./usr/lib/aarch64-linux-gnu/libz.so",
                "/lib/aarch64-linux-gnu/libz.so.1.2",
            ),
            ("hardlink", "./usr/lib/aarch64-linux-gnu/copy", "./lib/aarch64-linux-gnu/libz.so.1.2"),
            ("exe", "./usr/bin/tool", b"#!"),
            ("symlink", "./usr/share/d", "/usr/lib"),
        ]
    )
    unpack_deb(deb, root, package="zlib")
    link = root / "usr/lib/aarch64-linux-gnu/libz.so"
    assert os.readlink(link) == "libz.so.1.2"
    assert link.read_bytes() == b"elf"
    assert (root / "usr/lib/aarch64-linux-gnu/copy").read_bytes() == b"elf"
    assert not (root / "usr/lib/aarch64-linux-gnu/copy").is_symlink()
    assert os.access(root / "usr/bin/tool", os.X_OK)
    assert os.readlink(root / "usr/share/d") == "../lib"
    assert not (root / "lib").exists()
    # A later package writing below a symlinked directory is refused.
    evil = deb_bytes([("file", "./usr/share/d/planted", b"x")])
    with pytest.raises(SysrootError, match="through a symlink"):
        unpack_deb(evil, root, package="evil")
    assert not (root / "usr/lib/planted").exists()
    with pytest.raises(SysrootError, match="fifo"):
        unpack_deb(deb_bytes([("fifo", "./p", b"")]), root, package="p")


def test_relativise_ld_script() -> None:
    script = (
        "/* GNU ld script\n   Use the shared library.  */\nOUTPUT_FORMAT(elf64-littleaarch64)\n"
        "GROUP ( /lib/aarch64-linux-gnu/libc.so.6 /usr/lib/aarch64-linux-gnu/libc_nonshared.a"
        "  AS_NEEDED ( /lib/ld-linux-aarch64.so.1 ) )\n"
    )
    assert relativise_ld_script(script) == (
        "/* GNU ld script\n   Use the shared library.  */\nOUTPUT_FORMAT(elf64-littleaarch64)\n"
        "GROUP ( libc.so.6 libc_nonshared.a  AS_NEEDED ( ld-linux-aarch64.so.1 ) )\n"
    )


# --------------------------------------------------------------------------- mirror


def test_debian_mirror_from_apt_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MONOREPO_DEBIAN_MIRROR", raising=False)
    apt = tmp_path / "apt"
    (apt / "sources.list.d").mkdir(parents=True)
    (apt / "sources.list").write_text(
        "# comment\ndeb-src http://src.example/debian bookworm main\n"
        "deb [arch=amd64 signed-by=/k.gpg] http://third.example/apt stable main\n"
    )
    (apt / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\n# a comment\nURIs: http://mirror.example/debian/\n"
        "Suites: bookworm bookworm-updates\nComponents: main\n\n"
        "Types: deb\nURIs: http://mirror.example/debian-security\n"
        "Suites: bookworm-security\nComponents: main\n"
    )
    (apt / "sources.list.d" / "x.sources.disabled").write_text(
        "Types: deb\nURIs: http://wrong.example/debian\nSuites: trixie\nComponents: main\n"
    )
    assert debian_mirror("bookworm", apt_dir=apt) == "http://mirror.example/debian"
    assert debian_mirror("trixie", apt_dir=apt) == "http://mirror.example/debian"
    monkeypatch.setenv("MONOREPO_DEBIAN_MIRROR", "file:///srv/mirror/")
    assert debian_mirror("bookworm", apt_dir=apt) == "file:///srv/mirror"
    monkeypatch.delenv("MONOREPO_DEBIAN_MIRROR")
    with pytest.raises(SysrootError, match="--mirror"):
        debian_mirror("bookworm", apt_dir=tmp_path / "nothing")


# --------------------------------------------------------------------------- end to end


SYSCONFIG = (
    b"# system configuration generated and used by the sysconfig module\n"
    b"build_time_vars = {'EXT_SUFFIX': '.cpython-311-aarch64-linux-gnu.so',\n"
    b" 'SOABI': 'cpython-311-aarch64-linux-gnu', 'MULTIARCH': 'aarch64-linux-gnu'}\n"
)

FAKE_DEBS: dict[str, tuple[str, list[Member]]] = {
    "python3.11-minimal": (
        "libpython3.11-minimal, libc6",
        [("exe", "./usr/bin/python3.11", b"elf")],
    ),
    "libpython3.11-minimal": (
        "libc6",
        [("file", "./usr/lib/python3.11/_sysconfigdata__aarch64-linux-gnu.py", SYSCONFIG)],
    ),
    "libpython3.11-stdlib": (
        "libpython3.11-minimal, media-types | mime-support, libffi8",
        [
            (
                "symlink",
                "./usr/lib/python3.11/_sysconfigdata__linux_aarch64-linux-gnu.py",
                "_sysconfigdata__aarch64-linux-gnu.py",
            )
        ],
    ),
    "libpython3.11": (
        "libpython3.11-stdlib",
        [("file", "./usr/lib/aarch64-linux-gnu/libpython3.11.so.1.0", b"elf")],
    ),
    "libpython3.11-dev": (
        "libpython3.11",
        [
            ("file", "./usr/include/python3.11/Python.h", b"/* */"),
            (
                "symlink",
                "./usr/lib/aarch64-linux-gnu/libpython3.11.so",
                "/usr/lib/aarch64-linux-gnu/libpython3.11.so.1.0",
            ),
        ],
    ),
    "libc6": (
        "libgcc-s1",
        [
            ("file", "./lib/aarch64-linux-gnu/libc.so.6", b"elf"),
            ("file", "./lib/ld-linux-aarch64.so.1", b"ld"),
        ],
    ),
    "libc6-dev": (
        "libc6",
        [
            (
                "file",
                "./usr/lib/aarch64-linux-gnu/libc.so",
                b"/* GNU ld script */\nGROUP ( /lib/aarch64-linux-gnu/libc.so.6 )\n",
            ),
            ("file", "./usr/include/aarch64-linux-gnu/gnu/stubs.h", b"/* */"),
        ],
    ),
    "libgcc-s1": (
        "libc6, gcc-12-base",
        [("file", "./lib/aarch64-linux-gnu/libgcc_s.so.1", b"elf")],
    ),
    "gcc-12-base": ("", [("file", "./usr/share/doc/gcc-12-base/README", b"x")]),
    "libffi8": ("libc6", [("file", "./usr/lib/aarch64-linux-gnu/libffi.so.8", b"elf")]),
    "media-types": ("", [("file", "./etc/mime.types", b"x")]),
    "libffi-dev": (
        "libffi8",
        [
            ("file", "./usr/include/aarch64-linux-gnu/ffi.h", b""),
            ("symlink", "./usr/lib/aarch64-linux-gnu/libffi.so", "libffi.so.8"),
        ],
    ),
    "libyaml-dev": (
        "libyaml-0-2",
        [
            ("file", "./usr/include/yaml.h", b""),
            (
                "symlink",
                "./usr/lib/aarch64-linux-gnu/libyaml.so",
                "/usr/lib/aarch64-linux-gnu/libyaml-0.so.2",
            ),
        ],
    ),
    "libyaml-0-2": ("libc6", [("file", "./usr/lib/aarch64-linux-gnu/libyaml-0.so.2", b"elf")]),
}


def make_mirror(
    root: Path, *, suite: str = "bookworm", codename: str = "", tamper: str | None = None
) -> str:
    """A file:// Debian mirror holding FAKE_DEBS for arm64."""
    stanzas = []
    for name, (depends, members) in FAKE_DEBS.items():
        deb = deb_bytes([("dir", "./", b""), *members])
        filename = f"pool/main/{name[0]}/{name}/{name}_1.0-1_arm64.deb"
        (root / filename).parent.mkdir(parents=True, exist_ok=True)
        (root / filename).write_bytes(deb + (b"x" if name == tamper else b""))
        fields = {"architecture": "arm64", "filename": filename, "size": str(len(deb))}
        if depends:
            fields["depends"] = depends
        if name == "gcc-12-base":
            fields["priority"] = "required"
        stanzas.append(stanza(name, **fields) + f"SHA256: {hashlib.sha256(deb).hexdigest()}\n")
    packages = lzma.compress("\n".join(stanzas).encode())
    dists = root / "dists" / suite
    (dists / "main/binary-arm64").mkdir(parents=True)
    (dists / "main/binary-arm64/Packages.xz").write_bytes(
        packages + (b"x" if tamper == "Packages" else b"")
    )
    (dists / "Release").write_text(
        _release({"main/binary-arm64/Packages.xz": packages}, codename or suite)
    )
    return root.as_uri()


def test_make_sysroot_from_a_file_mirror(tmp_path: Path) -> None:
    mirror = make_mirror(tmp_path / "mirror")
    dest = tmp_path / "out" / "sysroot"
    reporter = RecordingReporter()
    info = make_sysroot(dest, mirror=mirror, keyring=None, reporter=reporter)
    assert info.root == dest.resolve()
    assert set(info.packages) == set(FAKE_DEBS) - {"gcc-12-base", "libffi-dev"}
    assert info.skipped == ("gcc-12-base",)
    assert info.sysconfigdata_name == "_sysconfigdata__linux_aarch64-linux-gnu"
    assert info.sysconfigdata_path.read_bytes() == SYSCONFIG
    assert (dest / info.pythonpath_dir / f"{info.sysconfigdata_name}.py").read_bytes() == SYSCONFIG
    assert info.ext_suffix == ".cpython-311-aarch64-linux-gnu.so"
    assert info.interpreter_path == dest.resolve() / "usr/bin/python3.11"
    assert info.include_dirs == (
        "usr/include/python3.11",
        "usr/include/aarch64-linux-gnu",
        "usr/include",
    )
    assert info.lib_dirs == ("usr/lib/aarch64-linux-gnu",)
    assert os.readlink(dest / "lib") == "usr/lib"
    assert (dest / "lib/ld-linux-aarch64.so.1").read_bytes() == b"ld"
    assert (
        os.readlink(dest / "usr/lib/aarch64-linux-gnu/libpython3.11.so") == "libpython3.11.so.1.0"
    )
    assert b"GROUP ( libc.so.6 )" in (dest / "usr/lib/aarch64-linux-gnu/libc.so").read_bytes()
    assert read_sysroot(dest) == info
    env = info.cross_env()
    assert env["_PYTHON_SYSCONFIGDATA_NAME"] == info.sysconfigdata_name
    assert env["_PYTHON_HOST_PLATFORM"] == "linux-aarch64"
    assert env["CC"] == f"aarch64-linux-gnu-gcc --sysroot={dest.resolve()}"
    assert any("signature is not checked" in m for _, m in reporter.messages)
    # A second run is a no-op and needs no mirror at all.
    shutil.rmtree(tmp_path / "mirror")
    stamp = (dest / TOML_NAME).stat().st_mtime_ns
    assert make_sysroot(dest, mirror=mirror, keyring=None) == info
    assert (dest / TOML_NAME).stat().st_mtime_ns == stamp
    assert not [p for p in dest.parent.iterdir() if p.name.startswith(".tmp-")]


def test_make_sysroot_refuses_bad_hashes_and_foreign_dirs(tmp_path: Path) -> None:
    dest = tmp_path / "sysroot"
    with pytest.raises(HashMismatchError, match=r"Packages\.xz"):
        make_sysroot(dest, mirror=make_mirror(tmp_path / "m1", tamper="Packages"), keyring=None)
    with pytest.raises(HashMismatchError, match=r"libc6_1\.0-1_arm64\.deb"):
        make_sysroot(dest, mirror=make_mirror(tmp_path / "m2", tamper="libc6"), keyring=None)
    assert not dest.exists()
    with pytest.raises(SysrootError, match="describes suite"):
        make_sysroot(
            dest,
            mirror=make_mirror(tmp_path / "m3", suite="trixie", codename="sid"),
            suite="trixie",
            keyring=None,
        )
    dest.mkdir()
    (dest / "precious").write_text("x")
    with pytest.raises(SysrootError, match="not a sysroot"):
        make_sysroot(dest, mirror=make_mirror(tmp_path / "m4"), keyring=None)
    assert (dest / "precious").exists()
    with pytest.raises(SysrootError, match="not a sysroot"):
        read_sysroot(dest)


# --------------------------------------------------------------------------- real toolchain


def _qemu_python(sysroot: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["qemu-aarch64", "-L", str(sysroot), str(sysroot / "usr/bin/python3.11"), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.network
def test_real_bookworm_arm64_sysroot(tmp_path: Path) -> None:
    dest = tmp_path / "sysroot-arm64"
    info = make_sysroot(dest)
    assert {"libc6", "libpython3.11-dev", "libyaml-dev", "libssl3"} <= set(info.packages)
    assert (dest / "usr/include/python3.11/Python.h").exists()
    assert (dest / "usr/include/aarch64-linux-gnu/python3.11/pyconfig.h").exists()
    assert (dest / "usr/lib/aarch64-linux-gnu/libpython3.11.so").exists()
    assert (dest / "usr/include/yaml.h").exists()
    assert info.ext_suffix == ".cpython-311-aarch64-linux-gnu.so"
    for path in dest.rglob("*"):
        if path.is_symlink():
            assert not os.readlink(path).startswith("/"), path
    if shutil.which("qemu-aarch64"):
        run = _qemu_python(
            dest, "-c", "import sys, sysconfig, ssl; print(sysconfig.get_platform())"
        )
        assert run.returncode == 0, run.stderr
        assert run.stdout.strip() == "linux-aarch64"


EXTENSION = r"""
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <yaml.h>
static PyObject *add(PyObject *self, PyObject *args) {
    long a, b;
    if (!PyArg_ParseTuple(args, "ll", &a, &b)) return NULL;
    return PyLong_FromLong(a + b);
}
static PyObject *yaml_version(PyObject *self, PyObject *args) {
    return PyUnicode_FromString(yaml_get_version_string());
}
static PyMethodDef methods[] = {
    {"add", add, METH_VARARGS, NULL},
    {"yaml_version", yaml_version, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL}
};
static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "hello", NULL, -1, methods};
PyMODINIT_FUNC PyInit_hello(void) { return PyModule_Create(&module); }
"""


@pytest.mark.parametrize(
    ("variable", "cc", "qemu", "e_machine"),
    [
        pytest.param(
            "MONOREPO_TEST_SYSROOT", "aarch64-linux-gnu-gcc", "qemu-aarch64", 183, id="arm64"
        ),
        pytest.param(
            "MONOREPO_TEST_SYSROOT_ARMHF", "arm-linux-gnueabihf-gcc", "qemu-arm", 40, id="armhf"
        ),
    ],
)
def test_cross_compiled_extension_imports_under_qemu(
    tmp_path: Path, variable: str, cc: str, qemu: str, e_machine: int
) -> None:
    if not (shutil.which(qemu) and shutil.which(cc) and os.environ.get(variable)):
        pytest.skip(f"needs {qemu}, {cc} and {variable} (see .ci/run)")
    info = read_sysroot(Path(os.environ[variable]))
    assert info.made and info.qemu == qemu
    (tmp_path / "hello.c").write_text(EXTENSION)
    target = tmp_path / f"hello{info.ext_suffix}"
    compile_ = subprocess.run(
        [
            cc,
            f"--sysroot={info.root}",
            "-shared",
            "-fPIC",
            "-O2",
            *(f"-I{p}" for p in info.include_paths),
            "-o",
            str(target),
            str(tmp_path / "hello.c"),
            *(f"-L{p}" for p in info.lib_paths),
            "-lyaml",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert compile_.returncode == 0, compile_.stderr
    assert int.from_bytes(target.read_bytes()[18:20], "little") == e_machine
    run = subprocess.run(
        [
            qemu,
            "-L",
            str(info.root),
            str(info.interpreter_path),
            "-c",
            f"import sys; sys.path.insert(0, {str(tmp_path)!r}); import hello;"
            " print(hello.add(40, 2), hello.yaml_version())",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["42", "0.2.5"]


# --------------------------------------------------- hostile packages: the extractor's rules


def _hostile_deb(archive: Path) -> bytes:
    """A .deb whose data.tar.xz holds the members of a hostile sdist of the corpus."""
    control = tar_xz([("file", "./control", b"Package: x\n")])
    data = lzma.compress(gzip.decompress(archive.read_bytes()))
    return ar_bytes(
        [("debian-binary", b"2.0\n"), ("control.tar.xz", control), ("data.tar.xz", data)]
    )


@pytest.mark.parametrize(
    ("build", "reason"),
    [
        (hostile.hardlink_bomb, r"is a hard link to 'evil-1\.0/blob\.bin', extracted as a copy"),
        (hostile.deep_nesting, r"is nested 1202 levels deep, over the limit of 128 levels"),
    ],
)
def test_a_deb_is_held_to_the_extractors_limits(
    tmp_path: Path, build: Callable[[Path], Path], reason: str
) -> None:
    root = tmp_path / "root"
    root.mkdir()
    deb = _hostile_deb(build(tmp_path))
    with pytest.raises(SysrootError, match=r"evil: refusing data\.tar\.xz: member ") as info:
        unpack_deb(deb, root, package="evil")
    assert re.search(reason, str(info.value)), str(info.value)
    assert "Nothing of this sysroot was installed" in str(info.value)
    assert list(root.iterdir()) == []


def test_a_deb_whose_data_is_a_decompression_bomb_is_refused_while_decompressing(
    tmp_path: Path,
) -> None:
    data = lzma.compress(bytes(48 * 1024**2))  # a few KB that would inflate to 48 MiB
    deb = ar_bytes([("debian-binary", b"2.0\n"), ("data.tar.xz", data)])
    with pytest.raises(SysrootError, match=r"refusing data\.tar\.xz: it decompresses to more"):
        unpack_deb(deb, tmp_path, package="evil")
    assert list(tmp_path.iterdir()) == []
