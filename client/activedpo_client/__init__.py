"""activedpo's client: the ``activedpo-client`` CLI that drives generation, labeling and DPO rounds."""

__version__ = "0.1.0"
