"""``python -m structkd`` (also what ``torchrun -m structkd`` starts)."""

import sys

from structkd.cli import main

sys.exit(main())
