module tracer/workloads/go

go 1.19
