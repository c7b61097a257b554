"""rulescape: the plumbing around the science, in four rooms: config/ (what a run may be), run/ (one run),
sweep/ (sweeps of runs) and study/ (the study tool); errors.py is shared by all. The science lives in modules/,
datamodules/ and callbacks/."""
