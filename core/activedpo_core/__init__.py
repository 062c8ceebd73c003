"""What the selection server and the trainer/client both stand on: checkpoints and their manifests, LoRA shapes,
atomic files, tokenized sequences, progress bars, and the settings every command maps its options to."""
