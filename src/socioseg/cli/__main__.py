"""``python -m socioseg.cli ...`` (as torchrun and the scripts start the command)."""

import sys

from socioseg.cli import main

sys.exit(main())
