"""`python -m ecoscale` = the `ecoscale` command."""

import sys

from ecoscale.cli import main

sys.exit(main())
