import sys

from parties.program import main

if __name__ == "__main__":
    sys.exit(main())
