"""``python -m codenn_convert``."""

from codenn_convert.cli import main

main()
