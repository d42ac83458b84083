"""Step-through debugging of exits: an engine (engine.py) and thin front ends (repl.py, gdbstub.py)."""

from kvmsim.debug.breakpoints import DebugError
from kvmsim.debug.engine import STAGES, Debugger, Stop

__all__ = ["Debugger", "DebugError", "Stop", "STAGES"]
