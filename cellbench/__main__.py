"""Allow ``python -m cellbench``."""

from cellbench.cli import main

if __name__ == "__main__":
    main()
