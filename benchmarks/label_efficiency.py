"""Label efficiency: held-out reward against labels used, per strategy, task and seed.

The same program as ``activedpo-client bench`` (see ``activedpo_client/bench.py`` for what it
runs and writes); ``.venv/bin/python benchmarks/label_efficiency.py --help`` lists the options.
"""

import sys

from activedpo_client.bench import main

if __name__ == "__main__":
    sys.exit(main())
