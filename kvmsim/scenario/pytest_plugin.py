"""pytest plugin: every scenarios/*.yaml under the rootdir is a test, run on the sim backend.

Register it with `pytest_plugins = ["kvmsim.scenario.pytest_plugin"]` in the root conftest (or
`-p kvmsim.scenario.pytest_plugin`).  A file is collected when pytest walks it, so run
`pytest` from the rootdir, or name `scenarios/` (or one file) on the command line.  The test
id is `scenarios/<file>.yaml::<file stem>`; a failure shows the expectation diffs, a bad file
shows file:line, and neither shows a traceback.  A scenario with `known_failure: "why"` is an
xfail(strict=True): expected to fail on the sim today, and an error once it passes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from kvmsim.errors import ScenarioError
from kvmsim.scenario.expect import check
from kvmsim.scenario.loader import format_error, load_scenario

SCENARIO_DIR = "scenarios"


class ScenarioFailure(Exception):
    """The run finished but expectations failed (or the file did not load): the message is the report."""


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    if file_path.suffix in (".yaml", ".yml") and file_path.parent == Path(parent.config.rootpath) / SCENARIO_DIR:
        return ScenarioFile.from_parent(parent, path=file_path)
    return None


class ScenarioFile(pytest.File):
    def collect(self):
        yield ScenarioItem.from_parent(self, name=self.path.stem)



class ScenarioItem(pytest.Item):
    def runtest(self) -> None:
        try:
            sc = load_scenario(self.path)
        except ScenarioError as e:
            raise ScenarioFailure(format_error(e)) from None
        if "sim" not in sc.backends:
            _skip(f"backends {sc.backends} lack sim")
        if sc.known_failure:   # strict: the item fails as soon as the sim passes, so the field goes
            self.add_marker(pytest.mark.xfail(reason=sc.known_failure, strict=True))
        # At run time, not at the top: this plugin loads (-p) before any conftest, and a test's
        # conftest may stand a fake runner in sys.modules (tests/test_expect.py).
        from kvmsim.scenario.runner import run_scenario

        result = run_scenario(sc, backend="sim")
        checks = check(sc, result)
        if bad := [c for c in checks if not c.passed]:
            lines = [f"{sc.path}: {len(bad)} of {len(checks)} expectations failed "
                     f"(stop: {result.stop.reason}{' ' + result.stop.detail if result.stop.detail else ''})"]
            for c in bad:
                lines.append(f"FAIL {c.name}")
                lines += ["    " + d for d in c.diff.splitlines()]
            raise ScenarioFailure("\n".join(lines))

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str:
        if isinstance(excinfo.value, ScenarioFailure):
            return str(excinfo.value)
        if isinstance(excinfo.value, ScenarioError):  # e.g. the guest does not assemble
            return format_error(excinfo.value)
        return super().repr_failure(excinfo)

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.path, 0, f"scenario {self.name}"


def _skip(reason: str) -> None:
    """pytest.skip, reported at the scenario file rather than at this plugin's line."""
    try:
        raise pytest.skip.Exception(reason, _use_item_location=True)
    except TypeError:  # a pytest without the private keyword
        pytest.skip(reason)
