"""``python -m leadml ...``: the same command line as the ``leadml`` script."""

from leadml.cli import main

if __name__ == "__main__":
    main()
