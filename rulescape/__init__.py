"""rulescape: run-level plumbing (build a run from a config, validate it, log it). The science lives in
modules/, datamodules/ and callbacks/."""
