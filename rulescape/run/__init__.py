"""One run: the command line's preflight, the training itself, its run directory, checkpoints, loggers and console."""
