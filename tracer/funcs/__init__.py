"""Function tracing: `python -m tracer funcs` (uprobes/uretprobes on user-space
functions; kernel functions in kernel.py). See docs/funcs.md."""
