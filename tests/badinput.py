"""One assertion for bad scenario input: `check` and `run` both exit 2 with `file:line: error:`."""

from __future__ import annotations

from pathlib import Path

from kvmsim.cli import main


def assert_bad_input(command: str, path: Path, text: str | None, line: int | None, fragment: str,
                     capsys) -> str:
    """Write `text` to `path` (None: it is written already), run `kvmsim COMMAND path`: status 2,
    no `ok:`, no traceback, `fragment` in the message, which starts with `path:line: error: ` when
    `line` is given.  Returns stderr."""
    if text is not None:
        path.write_text(text)
    assert main([command, str(path)]) == 2
    out = capsys.readouterr()
    err = out.err
    assert "ok:" not in out.out and "Traceback" not in err and fragment in err, err
    if line is not None:
        assert err.startswith(f"{path}:{line}: error: "), err
    return err
