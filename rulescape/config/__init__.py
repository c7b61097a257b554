"""What a run may be: the config schema, the checks between keys, the allow-lists and the gate before Hydra."""
