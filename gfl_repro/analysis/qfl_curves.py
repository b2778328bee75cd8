r"""Fig. 5(a): Quality Focal Loss (Eq. 2) against the prediction σ at the quality label
y = 0.5, for several β:

.. math:: \mathrm{QFL}(\sigma) = -|y - \sigma|^\beta \big((1 - y)\log(1 - \sigma) + y \log \sigma\big)

computed with the loss the engine trains with
(:func:`gfl_repro.models.losses.quality_focal_loss`, one sample, one class, logit = logit(σ)).
Table columns: ``beta, sigma, loss``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from ..models.losses import quality_focal_loss
from .tables import Table

BETAS = (0.0, 0.5, 1.0, 2.0, 4.0)
LABEL = 0.5
SIGMAS = np.linspace(0.0025, 0.9975, 399)


def compute(betas=BETAS, label: float = LABEL, sigmas=SIGMAS) -> Table:
    sigma = torch.as_tensor(np.asarray(sigmas), dtype=torch.float64)
    logits = torch.log(sigma) - torch.log1p(-sigma)
    labels = torch.zeros(len(sigma), dtype=torch.long)  # every sample positive for its only class
    quality = torch.full_like(sigma, label)
    frames = [pd.DataFrame({"beta": float(beta), "sigma": sigma.numpy(),
                            "loss": quality_focal_loss(logits[:, None], labels, quality, beta=beta).numpy()})
              for beta in betas]
    return Table(pd.concat(frames, ignore_index=True))


__all__ = ["BETAS", "LABEL", "compute"]
