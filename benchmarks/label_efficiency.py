"""Label efficiency: held-out reward against labels used, per strategy, task and seed.

The same program as ``activedpo-client bench`` (``activedpo_client.bench`` says what it runs and writes);
``.venv/bin/python benchmarks/label_efficiency.py --help`` lists the options. Its report goes to
``WORK_DIR/report`` unless ``--out`` names a folder: the committed results are
``--out benchmarks/results/label_efficiency``.
"""

import sys

from activedpo_client.cli.bench import main

if __name__ == "__main__":
    sys.exit(main())
