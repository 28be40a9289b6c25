"""The errors domain code raises and the exit codes (contract 2 in
ARCHITECTURE.md). A leaf module: it imports nothing from the tracer.

Domain code raises; only the command lines (tracer/cli.py,
tracer/funcs/cli.py) turn exceptions into exit codes and the one line on
stderr.
"""

from __future__ import annotations

EXIT_OK = 0  # success
EXIT_CHECK = 1  # a check failed (a budget, a test)
EXIT_ENV = 2  # the environment or usage is wrong: one line naming the cause and the fix


class UsageError(Exception):
    """Bad arguments or environment; str() is the one line shown to the user (exit 2)."""


__all__ = ["EXIT_OK", "EXIT_CHECK", "EXIT_ENV", "UsageError"]
