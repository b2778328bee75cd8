"""What the result files say: `list`/`show` overviews, `status`, `collect`'s tables.

Pure functions of files: nothing here trains or evaluates.
"""
