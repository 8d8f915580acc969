"""Information is read through the programs: decoder disagreement alone carries none."""

import numpy as np
import torch

from acquisition.readouts import build_pool_model, pool_positions
from experiment_design import Context, DesignSpace, Target
from models.base import PROGRAMS, Prediction


class TwoReadoutEnsemble:
    """Members' programs differ by ``program_spread``; their RNA decoders by ``decoder_spread``."""

    def __init__(self, space, program_spread: float, decoder_spread: float) -> None:
        self.space, self.ps, self.ds = space, program_spread, decoder_spread

    def predict(self, queries, readouts=None):
        n, m, k, g = len(queries), 4, 3, 12
        rng = np.random.default_rng(0)
        base = rng.normal(size=(1, n, k))
        programs = base + self.ps * rng.normal(size=(m, n, k))
        W = rng.normal(size=(k, g))
        rna = programs @ W + self.ds * rng.normal(size=(m, 1, g))  # decoders differ by a per-member offset
        noise = np.full((n, g), 0.1)
        return Prediction(
            members={PROGRAMS: programs, "rna": rna}, aleatoric={PROGRAMS: np.zeros((n, k)), "rna": noise}
        )


def _outputs(model, space):
    pool = space.sample(64, np.random.default_rng(1), assays=["scrna"])
    pm, _ = build_pool_model(model, space, pool, space.encode(pool), np.random.default_rng(2))
    return pm.posterior(pool_positions(len(pool)).unsqueeze(-2)).values  # (n, M, 1, O)


def test_decoder_disagreement_alone_is_not_information():
    space = DesignSpace(targets=(Target("A", "compound"), Target("B", "compound")), contexts=(Context("L", "S"),))
    decoder_only = _outputs(TwoReadoutEnsemble(space, program_spread=0.0, decoder_spread=1.0), space)
    operators = _outputs(TwoReadoutEnsemble(space, program_spread=0.3, decoder_spread=0.0), space)
    spread = lambda v: float(v.var(dim=1).sum(dim=-1).mean())  # noqa: E731
    assert spread(decoder_only) < 1e-6
    assert spread(operators) > 1.0
    assert torch.isfinite(operators).all()
