"""Registers rulescape's sweep launcher with Hydra, which accepts launchers from the hydra_plugins
namespace only (conf/hydra/launcher/rulescape.yaml names this class). The code is rulescape/sweep/launcher.py."""
from rulescape.sweep.launcher import JobLauncher as _JobLauncher


class JobLauncher(_JobLauncher):
    """rulescape.sweep.launcher.JobLauncher, under the name Hydra looks for."""
