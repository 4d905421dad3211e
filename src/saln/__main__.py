import sys

from saln.cli import main

sys.exit(main())
