"""Zero-code eBPF tracer for HTTP/1.x, HTTP/2 and gRPC."""

from . import core as _core

_core.install()  # TRACER_PURE=1: the hot modules from their .py sources
