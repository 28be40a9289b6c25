"""Generate the Echo stubs with grpc_tools.protoc into a directory, import them."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

PROTO = Path(__file__).with_name("echo.proto")


def generate(out_dir: str | Path) -> None:
    from grpc_tools import protoc

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rc = protoc.main(["protoc", f"-I{PROTO.parent}", f"--python_out={out}",
                      f"--grpc_python_out={out}", str(PROTO)])
    if rc:
        raise RuntimeError(f"protoc failed ({rc}) for {PROTO}")


def load(out_dir: str | Path):
    """(echo_pb2, echo_pb2_grpc) from a directory generate() wrote."""
    sys.path.insert(0, str(out_dir))
    return importlib.import_module("echo_pb2"), importlib.import_module("echo_pb2_grpc")
