"""One assertion for bad scenario input: `check` and `run` both exit 2 with `file:line: error:`."""

from __future__ import annotations

from pathlib import Path

from kvmsim.cli import main


def assert_bad_input(command: str, path: Path, text: str, line: int | None, fragment: str, capsys) -> str:
    """Write `text` to `path`, run `kvmsim COMMAND path`: status 2, no traceback, `fragment` in the
    message, which starts with `path:line: error: ` when `line` is given.  Returns stderr."""
    path.write_text(text)
    assert main([command, str(path)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and fragment in err, err
    if line is not None:
        assert err.startswith(f"{path}:{line}: error: "), err
    return err
