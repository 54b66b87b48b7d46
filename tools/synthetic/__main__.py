"""``python -m tools.synthetic --help``."""

from tools.synthetic.cli import main

main()
