"""The VMM's run limits as a stop names them: which limit was reached, and how to raise it."""

from __future__ import annotations

# limits.<field> -> the flag of `run`/`diff` that overrides it (a limit stop names both)
LIMIT_FLAGS = {"max_exits": "--max-exits", "max_guest_insns": "--max-insns", "wall_seconds": "--timeout"}


def limit_detail(name: str, value: float) -> str:
    """The stop detail of a limit: which one, and how to raise it."""
    shown = value if isinstance(value, int) else f"{value:g}"
    return f"{name} {shown} reached (raise limits.{name} or {LIMIT_FLAGS[name]})"
