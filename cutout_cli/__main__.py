"""`python -m cutout_cli ...`: the `cutout` command where its console script is not installed."""

import sys

from cutout_cli.main import main

sys.exit(main())
