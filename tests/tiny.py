"""Settings of the tiny real runs that tests of the loop's plumbing share (not of the model's science).

``tests/`` is on ``sys.path`` in every test process (pytest inserts the directory of ``tests/conftest.py``).
"""

#: ``RunConfig`` keywords: the small world, two members and short fits; a time limit that never binds,
#: so resumed runs equal uninterrupted ones.
TINY_RUN = dict(
    world="small",
    budget=14.0,
    batch_size=4,
    n_members=2,
    initial_size=4,
    heldout_per_axis=2,
    time_limit_s=60.0,
    model_options={"max_steps": 30, "warm_steps": 10},
)
