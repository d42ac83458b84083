"""Load and check a scenario's Python device class (`type: python, class: "module:Class"`).

The module is looked for next to the scenario file first (imported under a private name, so two
scenario directories may each have a `devices.py`), then on sys.path.  The class must follow the
protocol vmm/devices/python.py documents; everything that can be checked without a guest is
checked here, at load time, so `check` rejects what `run` would: an import that fails, a missing
class, a method missing or with the wrong parameters, `args` the constructor does not take, a
constructor that raises.  Each is a DeviceClassError, which the schema turns into file:line.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import re
import sys
import traceback
from pathlib import Path
from types import ModuleType
from typing import Any

_SPEC_RE = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*):([A-Za-z_][A-Za-z0-9_]*)$")

# method name → the positional arguments kvmsim passes (protocol of vmm/devices/python.py)
PROTOCOL: dict[str, tuple[str, ...]] = {"read": ("offset", "size"), "write": ("offset", "size", "value")}
OPTIONAL: dict[str, tuple[str, ...]] = {"state": ()}


class DeviceClassError(ValueError):
    """The device class cannot be used; `field` is the scenario key to blame ('class' or 'args')."""

    def __init__(self, msg: str, field: str = "class") -> None:
        super().__init__(msg)
        self.field = field


def _where(e: BaseException) -> str:
    """' (file:line)' of the innermost frame of a user's exception, or of a SyntaxError."""
    if isinstance(e, SyntaxError) and e.filename:
        return f" ({e.filename}:{e.lineno})"
    tb = traceback.extract_tb(e.__traceback__)
    return f" ({tb[-1].filename}:{tb[-1].lineno})" if tb else ""


def _local_file(module: str, base_dir: Path) -> Path | None:
    rel = Path(*module.split("."))
    for cand in (base_dir / rel.with_suffix(".py"), base_dir / rel / "__init__.py"):
        if cand.is_file():
            return cand.resolve()
    return None


def _import_file(path: Path, module: str) -> ModuleType:
    """Import a scenario-local module under a name private to its path (re-used while unchanged)."""
    st = path.stat()
    key = hashlib.sha1(f"{path}:{st.st_mtime_ns}:{st.st_size}".encode()).hexdigest()[:16]
    name = f"_kvmsim_device_{key}_{module.replace('.', '_')}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise DeviceClassError(f"cannot import {path}")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    try:
        spec.loader.exec_module(mod)
    except BaseException:
        del sys.modules[name]
        raise
    return mod


def import_module(module: str, base_dir: Path | None) -> ModuleType:
    local = _local_file(module, base_dir) if base_dir is not None else None
    try:
        if local is not None:
            return _import_file(local, module)
        return importlib.import_module(module)
    except DeviceClassError:
        raise
    except ModuleNotFoundError as e:
        if local is None and e.name is not None and module.startswith(e.name):
            where = f"{base_dir} or sys.path" if base_dir is not None else "sys.path"
            raise DeviceClassError(f"no module {module!r} (looked in {where})") from None
        raise DeviceClassError(f"importing {module!r} raised {type(e).__name__}: {e}{_where(e)}") from None
    except (Exception, SystemExit) as e:
        raise DeviceClassError(f"importing {module!r} raised {type(e).__name__}: {e}{_where(e)}") from None


def _takes(fn: Any, params: tuple[str, ...]) -> bool:
    try:
        inspect.signature(fn).bind(*range(len(params)))
    except TypeError:
        return False
    except ValueError:   # no signature (a builtin): assume it fits
        return True
    return True


def check_protocol(cls: type, spec: str) -> None:
    """read(offset, size) and write(offset, size, value) callable; state(), if there, takes nothing."""
    for name, params in {**PROTOCOL, **OPTIONAL}.items():
        fn = inspect.getattr_static(cls, name, None)
        if fn is None:
            if name in PROTOCOL:
                raise DeviceClassError(f"{spec} has no method {name}({', '.join(params)}) "
                                       "(the Python device protocol: read, write, optional state)")
            continue
        if isinstance(fn, (staticmethod, classmethod)):
            target, sig_params = getattr(cls, name), params
        elif callable(fn):
            target, sig_params = fn, ("self",) + params
        else:
            raise DeviceClassError(f"{spec}.{name} is not a method")
        if not _takes(target, sig_params):
            raise DeviceClassError(f"{spec}.{name} must take ({', '.join(params)}) "
                                   "(the Python device protocol)")


def load_device_class(spec: str, base_dir: Path | None, args: dict[str, Any]) -> type:
    """Import `module:Class`, check the protocol, and build one instance with `args` as a trial."""
    m = _SPEC_RE.match(spec.strip()) if isinstance(spec, str) else None
    if m is None:
        raise DeviceClassError(f"expected 'module:Class' (e.g. 'uart_model:Uart'), got {spec!r}")
    module, cls_name = m.groups()
    mod = import_module(module, base_dir)
    cls = getattr(mod, cls_name, None)
    if cls is None:
        have = sorted(n for n, v in vars(mod).items() if isinstance(v, type) and not n.startswith("_"))
        raise DeviceClassError(f"module {module!r} has no class {cls_name!r}"
                               + (f" (it has: {', '.join(have)})" if have else ""))
    if not isinstance(cls, type):
        raise DeviceClassError(f"{spec} is a {type(cls).__name__}, not a class")
    check_protocol(cls, spec)
    try:
        inspect.signature(cls).bind(**args)
    except TypeError as e:
        raise DeviceClassError(f"{spec} does not take these args: {e}", field="args") from None
    except ValueError:
        pass
    try:
        cls(**args)
    except (Exception, SystemExit) as e:
        raise DeviceClassError(f"{spec}(**args) raised {type(e).__name__}: {e}{_where(e)}", field="args") from None
    return cls
