"""Measurement callbacks, one per file, found by name (`callbacks.enabled` in the config).
Each class has from_config(cfg) -> instance, reading its section of the run config."""
from callbacks.alignment import Alignment
from callbacks.curvature import Curvature
from callbacks.generalization import Generalization

CALLBACKS = {"generalization": Generalization, "curvature": Curvature, "alignment": Alignment}
