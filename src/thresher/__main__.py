"""``python -m thresher``: the ``thresher`` command."""

import sys

from thresher.cli import main

sys.exit(main())
