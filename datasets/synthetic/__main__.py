"""``python -m datasets.synthetic --help``."""

from datasets.synthetic.cli import main

main()
