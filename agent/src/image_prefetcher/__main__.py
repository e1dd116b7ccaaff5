"""`python -m image_prefetcher` runs the command line (same as the `image-prefetcher` script)."""

from __future__ import annotations

import sys

from image_prefetcher.cli import main

sys.exit(main())
