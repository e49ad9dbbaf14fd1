"""`python -m launch COMMAND ...` is `smpc COMMAND ...` (the launcher starts every party,
service party and dealer process so)."""

import sys

from launch.cli import main

sys.exit(main())
