"""PyInstaller entry point of shelfd."""
import sys

from daemon.__main__ import main

sys.exit(main())
