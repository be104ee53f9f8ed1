"""``python -m tsyncctl``: the same as the ``tsyncctl`` console script."""

from tsyncctl.cli import main

if __name__ == "__main__":
    main()
