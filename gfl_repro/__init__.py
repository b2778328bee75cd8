"""gfl-repro: reproduce every experiment of Generalized Focal Loss (Li et al., NeurIPS 2020)."""

__version__ = "0.1.0"
