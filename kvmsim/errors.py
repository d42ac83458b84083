"""The three error channels (STYLE.md): bad input, broken invariants; guest faults are not errors."""

from __future__ import annotations


class KvmSimError(Exception):
    """Base of every error kvmsim reports to a person."""


class ScenarioError(KvmSimError):
    """Bad input: a scenario file, a guest source or a CLI argument. Exit status 2."""

    def __init__(self, path: str | None, line: int | None, msg: str) -> None:
        self.path, self.line, self.msg = path, line, msg
        where = f"{path}:{line}: " if path and line else (f"{path}: " if path else "")
        super().__init__(f"{where}{msg}")


class GuestBuildError(ScenarioError):
    """The assembler or linker rejected a guest; msg carries their own file:line text."""


class KvmSimBug(KvmSimError):
    """One of our own invariants broke (the model's KVM_BUG_ON). Loud, with vCPU state."""


class BackendError(KvmSimError):
    """A backend could not do what was asked (e.g. an ioctl on /dev/kvm failed).

    `errno` is the ioctl's error number where there is one (the same on both backends)."""

    def __init__(self, msg: str = "", errno: int | None = None) -> None:
        super().__init__(msg)
        self.errno = errno
