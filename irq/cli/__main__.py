"""``python -m irq.cli``."""

import sys

from irq.cli.main import main

sys.exit(main())
