"""Metadata column names, scPerturb / AnnData style.

Every package writes and reads metadata under these names, so a
``MeasurementBatch``, a ledger shard, a plate CSV and an ``.h5ad`` file agree.
A combination is written ``A+B`` in :data:`PERTURBATION` with its doses
``1.0+0.5`` in :data:`DOSE_VALUE` and units ``uM+uM`` in :data:`DOSE_UNIT`,
as scPerturb does. The control (no target) is :data:`CONTROL`.
"""

PERTURBATION = "perturbation"
DOSE_VALUE = "dose_value"
DOSE_UNIT = "dose_unit"
TIME = "time"
TIME_UNIT = "time_unit"
CELL_LINE = "cell_line"
SITE = "site"
BATCH = "batch"
ASSAY = "assay"
MODALITY = "modality"
PLATE = "plate"
WELL = "well"
QUERY_ID = "query_id"
ROUND = "round"
REPLICATE = "replicate"
SPECIMEN = "specimen"
UNIT = "unit"

#: The perturbation label of an unperturbed (vehicle / non-targeting) control.
CONTROL = "control"
#: Separator of targets, doses and units in a combination.
COMBO_SEP = "+"
#: Unit of time everywhere in cslab.
HOURS = "h"

#: Metadata columns every observation row carries, in this order.
OBS_COLUMNS = (
    QUERY_ID,
    PERTURBATION,
    DOSE_VALUE,
    DOSE_UNIT,
    TIME,
    TIME_UNIT,
    CELL_LINE,
    SITE,
    BATCH,
    ASSAY,
    MODALITY,
    REPLICATE,
    SPECIMEN,
    UNIT,
)
