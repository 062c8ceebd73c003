"""activedpo's trainer: checkpoints, generation, SFT, DPO (TRL + PEFT), evaluation, the toy world."""

__version__ = "0.1.0"
