import sys

from tlpo.cli import main

sys.exit(main())
