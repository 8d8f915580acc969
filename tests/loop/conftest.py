import os

import pytest

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray instance for every loop test that needs it."""
    import ray

    from loop.distributed import init_ray

    started = init_ray(workers=2)
    yield
    if started:
        ray.shutdown()
