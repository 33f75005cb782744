"""Batcher: single-image calls from many threads become batched model calls, each caller getting its own result."""

import threading
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import pytest

from matting_core.preprocess import normalize, to_batch
from tasks.batcher import Batcher
from tests.conftest import PHOTOS, rgb_of

TIMEOUT_S = 60


@pytest.fixture(scope="module")
def inputs(model) -> dict[str, np.ndarray]:
    spec = model.spec
    return {name: normalize(rgb_of(name), spec.input_size, spec.mean, spec.std) for name in PHOTOS}


@pytest.fixture(scope="module")
def alone(model, inputs) -> dict[str, np.ndarray]:
    """Each photo's alpha from the model on its own: what the batcher must hand back."""
    return {name: model.predict(to_batch([x]))[0] for name, x in inputs.items()}


def submit_together(batcher: Batcher, xs: list[np.ndarray]) -> list[Future]:
    """Every input from its own thread, released at once, as Celery's thread pool would."""
    start = threading.Barrier(len(xs))

    def call(x):
        start.wait(TIMEOUT_S)
        return batcher.predict(x, timeout=TIMEOUT_S)

    with ThreadPoolExecutor(len(xs)) as pool:
        futures = [pool.submit(call, x) for x in xs]
    return futures


class StandIn:
    """A model with MattingModel's interface whose first `failures` batches raise."""

    def __init__(self, failures: int = 0):
        self.failures = failures
        self.loads = 0

    def load(self) -> "StandIn":
        self.loads += 1
        return self

    def predict(self, batch: np.ndarray) -> np.ndarray:
        if self.failures:
            self.failures -= 1
            raise RuntimeError("CUDA out of memory")
        return batch[:, 0]


def test_inputs_submitted_together_run_as_one_batch_and_each_caller_gets_its_own_alpha(model, inputs, alone):
    batcher = Batcher(model, batch_size=4, max_wait_ms=2000)
    results = [f.result() for f in submit_together(batcher, list(inputs.values()))]
    assert batcher.sizes == [4]
    assert [size for _, size in results] == [4, 4, 4, 4]
    for name, (alpha, _) in zip(inputs, results, strict=True):
        assert np.abs(alpha - alone[name]).max() < 1e-4, name


def test_the_photos_alphas_differ_so_a_mixed_up_result_would_show(alone):
    alphas = list(alone.values())
    assert all(np.abs(a - b).max() > 0.5 for i, a in enumerate(alphas) for b in alphas[i + 1:])


def test_with_batch_size_one_every_batch_is_one(model, inputs, alone):
    batcher = Batcher(model, batch_size=1, max_wait_ms=2000)
    names = ["astronaut", "coffee", "chelsea"]
    results = [f.result() for f in submit_together(batcher, [inputs[n] for n in names])]
    assert batcher.sizes == [1, 1, 1]
    assert [size for _, size in results] == [1, 1, 1]
    for name, (alpha, _) in zip(names, results, strict=True):
        assert np.abs(alpha - alone[name]).max() < 1e-4, name


def test_a_partial_batch_runs_once_the_oldest_input_has_waited_max_wait(model, inputs, alone):
    batcher = Batcher(model, batch_size=4, max_wait_ms=50)
    alpha, size = batcher.predict(inputs["rocket"], timeout=TIMEOUT_S)
    assert size == 1 and batcher.sizes == [1]
    assert np.abs(alpha - alone["rocket"]).max() < 1e-4


def test_a_model_error_reaches_every_waiter_of_its_batch_and_the_batcher_keeps_serving():
    batcher = Batcher(StandIn(failures=1), batch_size=3, max_wait_ms=2000)
    xs = [np.full((3, 8, 8), n, np.float32) for n in range(3)]
    errors = [f.exception() for f in submit_together(batcher, xs)]
    assert all(isinstance(e, RuntimeError) and str(e) == "CUDA out of memory" for e in errors)
    assert batcher.sizes == []
    results = [f.result() for f in submit_together(batcher, xs)]
    assert batcher.sizes == [3]
    assert sorted(float(alpha[0, 0]) for alpha, _ in results) == [0.0, 1.0, 2.0]
    assert all(alpha[0, 0] == x[0, 0, 0] for (alpha, _), x in zip(results, xs, strict=True))


def test_the_model_loads_on_first_use_and_only_once():
    model = StandIn()
    batcher = Batcher(model, batch_size=1, max_wait_ms=0)
    assert model.loads == 0
    batcher.predict(np.zeros((3, 8, 8), np.float32), timeout=TIMEOUT_S)
    batcher.predict(np.ones((3, 8, 8), np.float32), timeout=TIMEOUT_S)
    assert model.loads == 1


def test_with_several_runners_each_caller_still_gets_its_own_result_and_the_model_loads_once():
    model = StandIn()
    batcher = Batcher(model, batch_size=2, max_wait_ms=50, runners=3)
    xs = [np.full((3, 8, 8), n, np.float32) for n in range(6)]
    results = [f.result() for f in submit_together(batcher, xs)]
    assert all(alpha[0, 0] == x[0, 0, 0] for (alpha, _), x in zip(results, xs, strict=True))
    assert sum(batcher.sizes) == 6 and all(size in (1, 2) for size in batcher.sizes)
    assert model.loads == 1
