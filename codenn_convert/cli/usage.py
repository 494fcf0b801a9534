"""Running the typer app so that a usage error is one line on stderr (exit 2), as every
other bad input is, instead of click's boxed usage text."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, NoReturn


def _click_exceptions() -> tuple[type[BaseException], type[BaseException], type[BaseException]]:
    # typer vendors click; its exception classes are the ones raised.
    import typer
    from typer._click import exceptions as ex

    return ex.ClickException, ex.NoArgsIsHelpError, typer.Abort


def run(app: Any, prog_name: str, error: Callable[[str], None],
        one_line: Callable[[str], str]) -> NoReturn:
    """``app()`` with click's own error display replaced by one ``error`` line."""
    click_error, no_args, abort = _click_exceptions()
    try:
        code = app(prog_name=prog_name, standalone_mode=False)
    except no_args as exc:  # `codenn` alone: the help, as before
        exc.show()  # type: ignore[attr-defined]
        sys.exit(exc.exit_code)  # type: ignore[attr-defined]
    except click_error as exc:
        ctx = getattr(exc, "ctx", None)
        hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
        error(f"error: {one_line(exc.format_message())}{hint}")  # type: ignore[attr-defined]
        sys.exit(exc.exit_code)  # type: ignore[attr-defined]
    except abort:
        error("aborted")
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)
