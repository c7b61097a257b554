"""Measurement callbacks, one per file, found by name (`callbacks.enabled` in the config).
Each class has from_config(cfg) -> instance, reading its section of the run config."""
from callbacks.generalization import Generalization

CALLBACKS = {"generalization": Generalization}
