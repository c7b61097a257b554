"""Registers rulescape's sweep launcher with Hydra, which accepts launchers from the hydra_plugins
namespace only (conf/hydra/launcher/rulescape.yaml names this class). The code is rulescape/launcher.py."""
from rulescape.launcher import JobLauncher as _JobLauncher


class JobLauncher(_JobLauncher):
    """rulescape.launcher.JobLauncher, under the name Hydra looks for."""
