"""stress workload: a minimal HTTP/1.1 endpoint, cheap enough to push the tracer."""
