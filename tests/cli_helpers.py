"""Running the ``kangnn`` command in tests and checking its one-line user errors."""

from __future__ import annotations

from kangnn.cli import main


def run_cli(args, capsys) -> tuple[int, str, str]:
    """``main(args)``; returns the exit status and the captured stdout and stderr."""
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def assert_user_error(code: int, err: str, *needles: str) -> None:
    """Exit status 2, no traceback, and a last line ``kangnn: error: ...`` naming ``needles``."""
    assert code == 2
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert lines and lines[-1].startswith("kangnn: error: "), err
    assert "Traceback" not in err
    for n in needles:
        assert n in lines[-1], lines[-1]
