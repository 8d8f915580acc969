"""CSL models: torch latent models with assay-true likelihoods, ensembles, BoTorch views, identifiability.

Importing the package registers the ``"csl"`` model in :mod:`models.registry`.
"""

from models.csl import CSLEnsemble
from models.fitting import FitConfig

__all__ = ["CSLEnsemble", "FitConfig"]
