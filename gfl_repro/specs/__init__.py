"""What to run: the run configuration and its identity, detector recipes, profiles (scales),
the experiment specs under ``experiments/`` and the catalogue of all of them.

This is the bottom layer: nothing here imports from the rest of the package.
"""
