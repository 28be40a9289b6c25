"""mixed workload: Flask frontend (HTTP/1) -> gRPC Catalog backend."""
