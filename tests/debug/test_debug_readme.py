"""The README's debugger walkthrough is the real output of its command file (regenerate: run the
command in the README and paste its output between the markers)."""

from __future__ import annotations

import re

from conftest import REPO
from kvmsim import cli


def test_readme_walkthrough_is_what_the_debugger_prints(capsys):
    readme = (REPO / "README.md").read_text()
    m = re.search(r"<!-- debug-walkthrough:begin -->\n```text\n(.*?)\n```\n<!-- debug-walkthrough:end -->", readme, re.S)
    assert m, "README: the debug-walkthrough block is missing"
    status = cli.main(["debug", str(REPO / "scenarios/mmio-read-no-decode.yaml"),
                       "-x", str(REPO / "scenarios/debug/walkthrough.cmds"), "--batch"])
    out = capsys.readouterr().out.rstrip("\n")
    assert status == 0
    assert out == m.group(1)
