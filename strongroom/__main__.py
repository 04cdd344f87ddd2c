"""``python -m strongroom`` is the same as the ``strongroom`` console script."""

from strongroom.cli import main

if __name__ == "__main__":  # not when a spawned child (vLLM's engine) re-imports it
    main()
