"""Errors a user can fix, and the exit codes of train.py."""

EXIT_OK = 0
EXIT_FAILED = 1        # an unexpected error (see summary.json "error" and the log)
EXIT_CONFIG = 2        # bad configuration or input: nothing ran
EXIT_DIVERGED = 3      # loss or update became NaN/Inf; summary.json has status "diverged"
EXIT_INTERRUPTED = 130  # Ctrl-C or SIGTERM; a checkpoint was saved, resume with ckpt_path=


class ConfigError(ValueError):
    """A bad configuration value; its message is one line naming the key, the value and what is allowed."""


class RunDirError(ConfigError):
    """The run directory cannot take this run (another run's record, a live run, not writable). Nothing in it
    is touched, not even its summary.json."""


def one_line(text: str) -> str:
    """A library's (Hydra's, OmegaConf's) multi-line message as one line, without its boilerplate hints."""
    return "; ".join(line.strip() for line in str(text).splitlines() if line.strip()
                     and not line.strip().startswith(("See https://hydra.cc", "Set the environment variable")))
