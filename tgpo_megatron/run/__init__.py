"""One run directory: the loop `tgpo train` and `tgpo sft` share, its checkpoints, metrics, stop requests and
exit code, and the command a launcher runs for it."""
