"""Analyses behind the paper's figures: the data each figure draws, computed from trained
runs (their checkpoints), from the training set's assignment, from result files, or from the
paper's equations. One module per analysis; :mod:`.registry` maps the names the figure specs
use to them. Sits between the engines (which produce runs) and the report (which draws)."""

from .registry import ANALYSES, NotReady, artifact_tables, compute_analyses, run_command
from .runs import AnalysisError
from .tables import Table

__all__ = ["ANALYSES", "AnalysisError", "NotReady", "Table", "artifact_tables", "compute_analyses", "run_command"]
