"""``python -m activedpo_client.bench``: the benchmark (how ``--jobs`` starts its helpers)."""

import sys

from activedpo_client.cli.bench import main

sys.exit(main())
