"""The rank-R update of G = Σ C Σ agrees with recomputing it, and leaves Σ's own update unchanged."""

import torch

from models.laplace import MemberPosterior


def test_weighted_update_equals_recomputing_it():
    gen = torch.Generator().manual_seed(0)
    P, R, width = 60, 4, 12
    X = torch.randn(P + 1, P + 1, dtype=torch.float64, generator=gen)
    sigma = X @ X.T / P + torch.eye(P + 1, dtype=torch.float64)
    sigma[P, :] = 0.0  # the dummy row and column are zero, as in MemberPosterior
    sigma[:, P] = 0.0
    m = MemberPosterior.__new__(MemberPosterior)  # only c is read
    m.c = torch.cat([torch.rand(P, dtype=torch.float64, generator=gen), torch.zeros(1, dtype=torch.float64)])
    G = m.weighted64(sigma)
    for _ in range(8):
        idx = torch.randperm(P + 1, generator=gen)[:width]
        L = torch.randn(width, R, dtype=torch.float64, generator=gen)
        expected = MemberPosterior.update(sigma, idx, L)
        sigma, G = m.update_weighted(sigma, G, idx, L)
        assert torch.equal(sigma, expected)  # Σ's update is the very same computation
        direct = m.weighted64(sigma)
        assert torch.allclose(G, direct, rtol=1e-9, atol=1e-12 * float(direct.abs().max()))
