"""Measurement callbacks, one per file, found by name (`callbacks.enabled` in the config).
Each class has from_config(cfg) -> instance, reading its section of the run config."""
from callbacks.alignment import Alignment
from callbacks.curvature import Curvature
from callbacks.generalization import Generalization
from callbacks.theory import Theory

CALLBACKS = {"generalization": Generalization, "curvature": Curvature, "alignment": Alignment,
             "theory": Theory}  # theory reads curvature and alignment: keep it after them
