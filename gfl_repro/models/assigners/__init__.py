"""Label assignment: which prior learns which ground-truth box. One file per assigner."""
