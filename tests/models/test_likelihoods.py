"""The hand-written log densities agree with torch.distributions on random inputs."""

import torch
from torch.distributions import NegativeBinomial, Normal, StudentT

from models.modules.likelihoods import log_factorial, nb_log_prob, normal_log_prob, student_t_log_prob


def _gen():
    return torch.Generator().manual_seed(0)


def test_negative_binomial_matches_torch():
    g = _gen()
    mu = torch.exp(torch.randn(200, generator=g, dtype=torch.float64) * 2)
    theta = torch.exp(torch.randn(200, generator=g, dtype=torch.float64))
    y = torch.poisson(mu * 2, generator=g)
    ref = NegativeBinomial(total_count=theta, logits=mu.log() - theta.log()).log_prob(y)
    ours = nb_log_prob(y, mu.log(), theta.log())
    assert torch.allclose(ours, ref, atol=1e-8, rtol=1e-8)
    # Var = μ + μ²/θ: the moments of the parameterisation the model assumes.
    d = NegativeBinomial(total_count=theta, logits=mu.log() - theta.log())
    assert torch.allclose(d.mean, mu) and torch.allclose(d.variance, mu + mu**2 / theta)


def test_negative_binomial_float32_large_counts():
    g = _gen()
    mu = torch.exp(torch.rand(100, generator=g) * 10)
    theta = torch.exp(torch.rand(100, generator=g) * 8)
    y = torch.poisson(mu, generator=g)
    ref = NegativeBinomial(total_count=theta.double(), logits=(mu.log() - theta.log()).double()).log_prob(y.double())
    assert torch.allclose(nb_log_prob(y, mu.log(), theta.log()).double(), ref, rtol=1e-5, atol=1e-4)


def test_negative_binomial_with_the_data_term_kept_by_the_caller_is_the_same_computation():
    g = _gen()
    log_mu = torch.randn(50, 30, generator=g, requires_grad=True)
    log_theta = torch.randn(30, generator=g, requires_grad=True)
    y = torch.poisson(torch.full((50, 30), 40.0), generator=g)
    a = nb_log_prob(y, log_mu, log_theta)
    b = nb_log_prob(y, log_mu, log_theta, log_factorial(y))
    assert torch.equal(a, b)  # bit for bit: a fit that keeps lgamma(y + 1) follows the same path
    ga = torch.autograd.grad(a.sum(), (log_mu, log_theta))
    gb = torch.autograd.grad(b.sum(), (log_mu, log_theta))
    assert all(torch.equal(u, v) for u, v in zip(ga, gb, strict=True))


def test_normal_and_student_t_match_torch():
    g = _gen()
    y, mu = torch.randn(100, generator=g, dtype=torch.float64), torch.randn(100, generator=g, dtype=torch.float64)
    log_var = torch.randn(100, generator=g, dtype=torch.float64)
    assert torch.allclose(normal_log_prob(y, mu, log_var), Normal(mu, (0.5 * log_var).exp()).log_prob(y))
    log_scale = 0.5 * log_var
    ref = StudentT(4.0, mu, log_scale.exp()).log_prob(y)
    assert torch.allclose(student_t_log_prob(y, mu, log_scale, 4.0), ref)
