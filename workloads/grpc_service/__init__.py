"""grpc workload: a grpcio Catalog service (unary + server streaming)."""
