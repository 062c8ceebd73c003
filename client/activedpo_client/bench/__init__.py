"""The label-efficiency benchmark, ``activedpo-client bench``: held-out reward and preference accuracy against
labels used, per strategy, task, pool size and seed, each run the real loop.

Its jobs, one module each: :mod:`~.arms` (what an arm is and how its spec is parsed), :mod:`~.runner` (its
settings, the grid of runs and the lock that lets processes share it), :mod:`~.stats` (intervals, power,
curves, differences paired by seed), :mod:`~.tables` (the markdown tables and verdicts), :mod:`~.report`
(report.md, plots, runs.jsonl, summary.json); the command is :mod:`activedpo_client.cli.bench`. The report goes to
``WORK_DIR/report`` unless ``--out`` says where (the committed results: ``benchmarks/results/label_efficiency``).
"""
