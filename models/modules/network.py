"""The CSL network: intervention operator plus one decoder per modality.

The loss is the negative log posterior per specimen: for every modality that
was observed, the weighted NLL of its specimens (a specimen's weight is its
bootstrap count), plus weak priors. A modality with no specimen of positive
weight contributes nothing — neither likelihood nor its decoder's prior — so
masking is exact. Spatial spots decoded through the RNA decoder (projection
``P``, :mod:`models.modules.tissue`) bring the RNA decoder's prior with them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from experiment_design.assays import ADT, MOLECULAR, RNA, SPATIAL
from experiment_design.modalities import modality_spec
from models.data import QueryFeatures, WellBlock, WellData
from models.modules.decoders import AdtDecoder, CountDecoder, GaussianDecoder, MolecularDecoder
from models.modules.likelihoods import LossOutput
from models.modules.operators import InterventionOperator
from models.modules.tissue import SpotDecoder

#: Prior strengths (nats per unit of each penalty).
PRIOR_WEIGHTS = {
    "emax_l1": 10.0,
    "prop_l1": 0.5,
    "acyclic": 50.0,
    "hill": 0.5,
    "interaction": 1.0,
    "context": 2.0,
    "decoders": 1.0,
}


@dataclass(frozen=True)
class DecoderContext:
    """What a decoder builder may use besides its feature count.

    Attributes:
        n_programs: Latent programs ``K``.
        n_sites: Sites (batch effects).
        n_plates: Plates seen in morphology.
        n_cell_types: Learned tissue cell types ``C``.
        project_spatial: Decode spatial spots through the RNA decoder.
        feature_dims: Modality → features, of every decoded modality.
        generator: Initialisation randomness.

    """

    n_programs: int
    n_sites: int
    n_plates: int
    n_cell_types: int
    project_spatial: bool
    feature_dims: dict[str, int]
    generator: torch.Generator | None


#: ``(n_features, context, decoders built so far) -> decoder``.
DecoderBuilder = Callable[[int, DecoderContext, dict[str, nn.Module]], nn.Module]


def _counts(F: int, c: DecoderContext, built: dict[str, nn.Module]) -> nn.Module:
    return CountDecoder(F, c.n_programs, c.n_sites, c.generator)


def _continuous(F: int, c: DecoderContext, built: dict[str, nn.Module]) -> nn.Module:
    return GaussianDecoder(F, c.n_programs, c.n_sites, c.n_plates, c.generator)


def _adt(F: int, c: DecoderContext, built: dict[str, nn.Module]) -> nn.Module:
    return AdtDecoder(F, c.n_programs, c.n_sites, c.generator)


def _molecular(F: int, c: DecoderContext, built: dict[str, nn.Module]) -> nn.Module:
    if F != c.n_programs:
        raise ValueError(f"CSLNetwork: molecular panel has {F} features but the latent has {c.n_programs} programs")
    return MolecularDecoder(c.n_programs, c.n_sites)


def _spatial(F: int, c: DecoderContext, built: dict[str, nn.Module]) -> nn.Module:
    if c.project_spatial and RNA in built and F == c.feature_dims.get(RNA):
        return SpotDecoder(F, c.n_programs, c.n_cell_types, built[RNA], c.generator)
    return _counts(F, c, built)


#: Modality → decoder builder, for modalities whose decoder is not their kind's default.
DECODERS: dict[str, DecoderBuilder] = {ADT: _adt, MOLECULAR: _molecular, SPATIAL: _spatial}
#: Modality kind (:class:`~experiment_design.modalities.ModalitySpec`) → default decoder builder.
DEFAULT_DECODERS: dict[str, DecoderBuilder] = {"counts": _counts, "continuous": _continuous}


def build_decoder(name: str, n_features: int, ctx: DecoderContext, built: dict[str, nn.Module]) -> nn.Module:
    """The decoder of modality ``name``: its :data:`DECODERS` entry, else its kind's default.

    Raises:
        ValueError: If ``name`` is not a registered modality.

    """
    builder = DECODERS.get(name) or DEFAULT_DECODERS[modality_spec(name).kind]
    return builder(n_features, ctx, built)


class CSLNetwork(nn.Module):
    """Latent operators and decoders of one ensemble member.

    Args:
        n_targets: ``T``.
        n_programs: ``K``.
        n_cell_lines: Cell lines.
        n_sites: Sites.
        ec50_init: ``(T,)`` initial log10 EC50 per target.
        feature_dims: Modality → number of features, for the modalities to decode.
        n_plates: Plates seen in morphology (plate effects).
        generator: Initialisation randomness.
        propagate: Learn the program propagator.
        n_cell_types: Learned tissue cell types ``C`` (spatial through the RNA decoder only).
        project_spatial: Decode spatial spots through the RNA decoder (the projection ``P``,
            :class:`~models.modules.tissue.SpotDecoder`) — when both are decoded and share genes;
            otherwise spatial gets its own count decoder.

    """

    def __init__(
        self,
        n_targets: int,
        n_programs: int,
        n_cell_lines: int,
        n_sites: int,
        ec50_init: torch.Tensor,
        feature_dims: dict[str, int],
        n_plates: int = 1,
        generator: torch.Generator | None = None,
        propagate: bool = True,
        n_cell_types: int = 3,
        project_spatial: bool = False,
    ) -> None:
        super().__init__()
        self.n_sites = n_sites
        self.operator = InterventionOperator(
            n_targets, n_programs, n_cell_lines, ec50_init, propagate=propagate, generator=generator
        )
        ctx = DecoderContext(n_programs, n_sites, n_plates, n_cell_types, project_spatial, feature_dims, generator)
        dec: dict[str, nn.Module] = {}
        for name, F in sorted(feature_dims.items(), key=lambda kv: kv[0] != RNA):  # RNA first: spatial may use it
            dec[name] = build_decoder(name, F, ctx, dec)
        self.decoders = nn.ModuleDict(dec)

    def latent(self, f: QueryFeatures) -> torch.Tensor:
        """``(n, K)`` latent program activities."""
        return self.operator(f)

    def latent_seen_by(
        self, name: str, f: QueryFeatures, z: torch.Tensor, rows: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The latent decoder ``name`` reads at ``rows`` of ``f``: ``z[rows]``, or ``z(t − lag)`` for a lagged decoder.

        Args:
            name: Decoder (modality) name.
            f: Conditions.
            z: ``(n, K)`` latent of ``f`` at the measurement time.
            rows: Row indices (default all).

        """
        if getattr(self.decoders[name], "lag_h", None) is None:
            return z if rows is None else z[rows]
        return self.operator(self.features_seen_by(name, f if rows is None else f.take(rows)))

    def features_seen_by(self, name: str, f: QueryFeatures) -> QueryFeatures:
        """The conditions decoder ``name`` reads: ``f`` itself, or ``f`` at ``t − lag`` for a lagged decoder."""
        lag = getattr(self.decoders[name], "lag_h", None)
        if lag is None:
            return f
        return QueryFeatures(f.target, f.log10_dose, (f.time_h - lag).clamp_min(0.0), f.cell_line, f.site)

    def calibrate(self, wd: WellData) -> None:
        """Set data-derived buffers and starting values of the decoders."""
        for name, block in wd.blocks.items():
            if name in self.decoders:
                site = wd.features.site[block.query]
                self.decoders[name].calibrate(block, site, self.n_sites)

    def loss(
        self,
        wd: WellData,
        weights: dict[str, torch.Tensor] | None = None,
        modalities: tuple[str, ...] | None = None,
    ) -> LossOutput:
        """Negative log posterior per specimen.

        Args:
            wd: Specimens per modality.
            weights: Modality → ``(W,)`` specimen weights (bootstrap counts);
                default 1.
            modalities: Only these modalities (default every observed one).

        Returns:
            :class:`LossOutput` with parts ``nll_<modality>`` (per specimen)
            and ``prior``.

        """
        blocks = {}
        for name, block in wd.blocks.items():
            if name not in self.decoders or (modalities is not None and name not in modalities):
                continue
            w = weights[name] if weights is not None else torch.ones(len(block.query))
            if not bool((w > 0).any()):
                continue  # nothing of this modality observed (or all resampled away)
            keep = w > 0  # zero-weight specimens are skipped outright (even NaN readouts)
            blocks[name] = (block, w) if bool(keep.all()) else (block.select(keep), w[keep])
        return self.posterior_loss(wd.features, blocks)

    def posterior_loss(self, features: QueryFeatures, blocks: dict[str, tuple[WellBlock, torch.Tensor]]) -> LossOutput:
        """:meth:`loss` over given specimens and weights, in tensor operations only (``torch.func.vmap``-safe).

        A modality whose weights sum to zero contributes neither likelihood nor its decoder's prior, as in
        :meth:`loss`, but by multiplying with a 0/1 presence rather than by leaving it out, so that members
        with different bootstrap weights can be fitted as one batched computation
        (:mod:`models.ensemble_fit`).

        Args:
            features: All conditions (the blocks index them through ``query``).
            blocks: Modality → ``(block, (W,) weights)``; only modalities this network decodes.

        Returns:
            :class:`LossOutput`; ``n_obs`` holds the weighted specimen counts as tensors.

        """
        z_all = self.latent(features)
        parts, n_obs, present = {}, {}, {}
        nll_sum = torch.zeros(())
        for name, (block, w) in blocks.items():
            q = block.query
            z = self.latent_seen_by(name, features, z_all, q)
            nll = self.decoders[name].nll(z, features.site[q], block, w)
            nw = w.sum()
            n_obs[name] = nw
            present[name] = (nw > 0).to(nll.dtype)
            parts[f"nll_{name}"] = nll / nw.clamp_min(1.0)
            nll_sum = nll_sum + nll
        if SPATIAL in present and isinstance(self.decoders[SPATIAL], SpotDecoder):
            # spots are decoded through the RNA decoder: its prior applies when either is observed
            present[RNA] = torch.maximum(present[RNA], present[SPATIAL]) if RNA in present else present[SPATIAL]
        pen = self.operator.penalty()
        prior = sum(PRIOR_WEIGHTS[k] * v for k, v in pen.items())
        prior = prior + PRIOR_WEIGHTS["decoders"] * sum(on * self.decoders[n].penalty() for n, on in present.items())
        denom = sum(n_obs.values(), torch.zeros(())).clamp_min(1.0)
        parts["prior"] = prior / denom
        return LossOutput(total=(nll_sum + prior) / denom, parts=parts, n_obs=n_obs)

    def readouts(
        self, f: QueryFeatures, names: tuple[str, ...] | None = None
    ) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Mean and aleatoric variance per readout for ``n`` conditions.

        Returns:
            Readout → ``((n, F) mean, (n, F) variance)``; ``"programs"`` has zero variance.

        """
        z = self.latent(f)
        out = {"programs": (z, torch.zeros_like(z))}
        for name, dec in self.decoders.items():
            if names is None or name in names:
                out[name] = dec.readout(self.latent_seen_by(name, f, z), f.site)
        return out
