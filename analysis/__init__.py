"""Reading run records (summary.json) of a sweep, their statistics and the study's figures; used by report.py."""
