"""`python -m smpc.dealer CONFIG`: the dealer process (the launcher starts it so)."""

import sys

from smpc.dealer.server import main

sys.exit(main())
