"""Scale-out of ``voxquant score`` on a Ray cluster (optional extra ``cluster``).

Each Ray actor holds one warm :class:`~voxquant.scoring.FileScorer`, exactly
as a local worker process does, so rows are identical to a local run. Ray is
imported only here. ``ray.init()`` joins the cluster named by ``RAY_ADDRESS``
or starts a local instance.
"""

from __future__ import annotations

from collections.abc import Iterator

from voxquant.errors import ConfigError


def run_on_ray(workers: int, init: tuple, batches: list) -> Iterator[list]:
    """Score ``batches`` on ``workers`` Ray actors; yield each batch's rows as it completes."""
    try:
        import ray
    except ModuleNotFoundError:
        raise ConfigError("--engine ray needs Ray: pip install 'voxquant[cluster]'") from None

    started_here = not ray.is_initialized()
    if started_here:
        ray.init(ignore_reinit_error=True, include_dashboard=False, log_to_driver=False,
                 logging_level="ERROR")

    @ray.remote(num_cpus=1)
    class ScoringActor:
        def __init__(self, *args):
            from voxquant.cli_score import _init_worker

            _init_worker(*args)

        def score(self, batch):
            from voxquant.cli_score import _score_batch

            return _score_batch(batch)

    try:
        actors = [ScoringActor.remote(*init) for _ in range(max(1, workers))]
        pending = [actors[i % len(actors)].score.remote(b) for i, b in enumerate(batches)]
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            yield ray.get(done[0])
    finally:
        if started_here:
            ray.shutdown()
