"""PyInstaller entry point of shelf-cli."""
import sys

from cli.__main__ import main

sys.exit(main())
