import os

import pytest

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


def _local_ray():
    """Start a local Ray (two workers) unless one runs; shut it down afterwards if this started it."""
    import ray

    from loop.distributed import init_ray

    started = init_ray(workers=2)
    yield
    if started:
        ray.shutdown()


@pytest.fixture
def ray_instance():
    """A local Ray instance for one test that needs Ray, shut down after it.

    Only tests of what Ray does (the oracle in an actor, a run joining a running instance) ask
    for it: while Ray is initialised in a process every run there sends its oracle to an actor
    (``loop.distributed.ray_wanted``), so an instance left running would put every later test
    on this worker on the actor path, one Ray worker process per run.
    """
    yield from _local_ray()


@pytest.fixture(scope="module")
def ray_module():
    """One local Ray for a module's tests that each need one (e.g. comparisons on Ray tasks): started once,
    its workers (torch and cslab imported) reused, shut down after the module. ``loop.compare`` joins a
    running instance and leaves it running."""
    yield from _local_ray()


@pytest.fixture(scope="session")
def s3_endpoint():
    """A real S3-compatible server on localhost (moto in server mode); yields ``host:port``.

    Credentials are set in the environment, so subprocesses and Ray workers started from
    here reach it too.
    """
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # not one line per request
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    env = {
        "AWS_ACCESS_KEY_ID": "cslab-test",
        "AWS_SECRET_ACCESS_KEY": "cslab-test",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    host, port = server.get_host_and_port()
    yield f"{host}:{port}"
    server.stop()
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture
def s3_uri(s3_endpoint):
    """``s3_uri("study")``: a URI in a fresh bucket of the local S3 server."""
    import uuid

    import pyarrow.fs as pafs

    bucket = f"cslab-{uuid.uuid4().hex[:10]}"
    options = f"endpoint_override={s3_endpoint}&scheme=http"
    fs, _ = pafs.FileSystem.from_uri(f"s3://{bucket}?{options}&allow_bucket_creation=true")
    fs.create_dir(bucket)
    return lambda path: f"s3://{bucket}/{path}?{options}"
