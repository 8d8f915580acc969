"""The shared vocabulary of cslab: design space, queries, costs, batches, truth.

Imports nothing else of cslab; every other package builds on it.
"""

from experiment_design import keys
from experiment_design.assays import DEFAULT_ASSAYS, Assay, Scale
from experiment_design.contexts import Context
from experiment_design.measurement import MeasurementBatch, ModalityData
from experiment_design.modalities import ModalitySpec, modality_names, modality_spec, register_modality
from experiment_design.perturbation import Perturbation
from experiment_design.query import Query
from experiment_design.space import DesignSpace
from experiment_design.targets import Target, TargetKind
from experiment_design.truth import GroundTruth

__all__ = [
    "DEFAULT_ASSAYS",
    "Assay",
    "Context",
    "DesignSpace",
    "GroundTruth",
    "MeasurementBatch",
    "ModalityData",
    "ModalitySpec",
    "Perturbation",
    "Query",
    "Scale",
    "Target",
    "TargetKind",
    "keys",
    "modality_names",
    "modality_spec",
    "register_modality",
]
