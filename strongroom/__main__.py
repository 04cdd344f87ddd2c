"""``python -m strongroom`` is the same as the ``strongroom`` console script."""

from strongroom.cli import main

main()
