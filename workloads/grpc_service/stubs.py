"""Python stubs for catalog.proto, generated with grpcio-tools on first use into
the git-ignored ``gen/`` folder (regenerated when the .proto is newer)."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

HERE = Path(__file__).resolve().parent
PROTO = HERE / "catalog.proto"
GEN = HERE / "gen"


class StubGenerationError(RuntimeError):
    pass


def ensure_stubs() -> tuple[ModuleType, ModuleType]:
    """Return (catalog_pb2, catalog_pb2_grpc), generating them if needed."""
    out = GEN / "catalog_pb2_grpc.py"
    if not out.exists() or out.stat().st_mtime < PROTO.stat().st_mtime:
        from grpc_tools import protoc

        GEN.mkdir(exist_ok=True)
        rc = protoc.main(["protoc", f"-I{HERE}", f"--python_out={GEN}",
                          f"--grpc_python_out={GEN}", str(PROTO)])
        if rc != 0:
            raise StubGenerationError(f"grpc_tools.protoc failed with {rc} on {PROTO}")
    # The generated *_grpc module imports its sibling as a top-level module.
    if str(GEN) not in sys.path:
        sys.path.insert(0, str(GEN))
    return importlib.import_module("catalog_pb2"), importlib.import_module("catalog_pb2_grpc")
