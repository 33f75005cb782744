"""Batcher: single-image calls from many threads become batched model calls, each caller getting its own result."""

import threading
from concurrent.futures import Future, ThreadPoolExecutor
from types import SimpleNamespace

import numpy as np
import pytest

from matting_core.model import get_model
from matting_core.preprocess import normalize, to_batch
from tasks.batcher import Batcher, Batchers
from tests.conftest import PHOTOS, rgb_of

TIMEOUT_S = 60


@pytest.fixture(scope="module")
def model():
    """The small model: what is tested is how the batcher groups calls and hands results back, the same
    for every model, and u2netp runs those predictions about 4x quicker than the session's u2net."""
    return get_model("u2netp", device="cpu", precision="fp32").load()


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
    """A model with MattingModel's interface whose first `failures` batches raise; it keeps the
    batches it ran."""

    def __init__(self, failures: int = 0, name: str = "stand-in"):
        self.spec = SimpleNamespace(name=name)
        self.failures = failures
        self.loads = 0
        self.batches: list[np.ndarray] = []

    def load(self) -> "StandIn":
        self.loads += 1
        return self

    def predict(self, batch: np.ndarray) -> np.ndarray:
        if self.failures:
            self.failures -= 1
            raise RuntimeError("CUDA out of memory")
        self.batches.append(batch)
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


def two_model_batchers(made: dict[str, StandIn]) -> Batchers:
    def make(name: str) -> Batcher:
        made[name] = StandIn(name=name)
        return Batcher(made[name], batch_size=8, max_wait_ms=300)
    return Batchers(make)


def test_inputs_for_two_models_at_once_run_in_batches_of_one_model_each():
    made: dict[str, StandIn] = {}
    batchers = two_model_batchers(made)
    # Interleaved, from 8 threads released together: u2net inputs are 1.0, u2netp inputs 2.0.
    asks = [("u2net", 1.0), ("u2netp", 2.0)] * 4
    start = threading.Barrier(len(asks))

    def call(name, value):
        start.wait(TIMEOUT_S)
        return batchers.predict(name, np.full((3, 8, 8), value, np.float32), timeout=TIMEOUT_S)

    with ThreadPoolExecutor(len(asks)) as pool:
        results = [f.result() for f in [pool.submit(call, *ask) for ask in asks]]
    assert sorted(made) == sorted(batchers.names()) == ["u2net", "u2netp"]
    for name, value in [("u2net", 1.0), ("u2netp", 2.0)]:
        ran = np.concatenate(made[name].batches)
        assert len(ran) == 4 and (ran == value).all(), name  # its own four inputs, no other model's
    assert all(float(alpha[0, 0]) == value for (alpha, _), (_, value) in zip(results, asks, strict=True))


def test_each_model_gets_one_batcher_however_many_threads_ask_for_it_first():
    calls = []
    batchers = Batchers(lambda name: calls.append(name) or Batcher(StandIn(name=name), 1, 0))
    start = threading.Barrier(8)

    def get(name):
        start.wait(TIMEOUT_S)
        return batchers.get(name)

    with ThreadPoolExecutor(8) as pool:
        got = [f.result() for f in [pool.submit(get, name) for name in ["u2net", "u2netp"] * 4]]
    assert sorted(calls) == ["u2net", "u2netp"]  # one made per model: no model loads twice
    assert len({id(b) for b in got}) == 2
