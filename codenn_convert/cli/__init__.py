"""The ``codenn`` command line (``codenn = "codenn_convert.cli:main"``)."""

from codenn_convert.cli.app import app, main

__all__ = ["app", "main"]
