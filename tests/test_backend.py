"""The backend contract: every registered backend (and the eager finetune backend) implements
every member of `rgft_edge.backend.Backend`, and each member does what the loop relies on."""

import inspect
import typing

import numpy as np
import pytest

from rgft_edge.artifact import load_artifact
from rgft_edge.backend import Backend, backend_names, get_backend, open_backend
from rgft_edge.device_runners.torch_eager import TorchEagerBackend
from rgft_edge.partition import build_component_table
from tests.conftest import text_batch, tiny_bert

MEMBERS = [n for n, v in vars(Backend).items() if not n.startswith("_") and callable(v)]
ATTRIBUTES = list(typing.get_type_hints(Backend))


def check_contract(backend, batch: dict) -> None:
    assert isinstance(backend, Backend)
    for name in MEMBERS:
        assert callable(getattr(type(backend), name, None)), f"{type(backend).__name__} lacks {name}()"
        want = list(inspect.signature(getattr(Backend, name)).parameters)
        have = list(inspect.signature(getattr(type(backend), name)).parameters)
        assert have[: len(want)] == want, (name, have, want)
    for name in ATTRIBUTES:
        assert hasattr(backend, name), f"{type(backend).__name__} lacks attribute {name}"
    k = len(backend.table)
    params = backend.parameters()
    assert set(params) == backend.table.param_names()
    out = backend.train_step(batch, np.ones(k, bool), False)
    assert np.isfinite(out.loss) and set(out.grads) <= set(params)
    backend.commit(list(out.grads))
    ev = backend.evaluate([batch])
    assert np.isfinite(ev.loss) and "loss" in ev.metrics
    assert set(backend.trainable_state()) == set(params)
    acts = backend.activation_bytes({k2: v[:2] for k2, v in batch.items()})
    assert acts is None or (len(acts) == k and (np.asarray(acts) >= 0).all())
    rng = backend.rng_state()
    if rng is not None:
        backend.set_rng_state(rng)
    assert isinstance(backend.environment(), dict)
    assert backend.eval_batch_size is None or backend.eval_batch_size >= 1


@pytest.mark.parametrize("name", backend_names())
def test_every_registered_backend_meets_the_contract(name, tiny_artifacts, tmp_path):
    spec = get_backend(name)
    art = load_artifact(tiny_artifacts[name])
    backend = open_backend(art, 1)
    try:
        n = art.manifest["input_spec"]["batch_size"]
        t = art.manifest["input_spec"]["max_length"]
        b = {k: v.numpy() for k, v in text_batch(n=n, t=t).items()}
        b["token_type_ids"] = np.zeros_like(b["input_ids"])
        batch = {k: b[k] for k in art.manifest["input_spec"]["names"] + ["labels"]}
        check_contract(backend, batch)
        assert backend.activation_scores == spec.activation_scores
        assert backend.export_adapted(tmp_path / "adapted")
    finally:
        backend.close()


def test_eager_finetune_backend_meets_the_contract():
    model = tiny_bert()
    batch = {k: v.numpy() for k, v in text_batch().items()}
    backend = TorchEagerBackend(model, build_component_table(model, "block", {"input_ids": text_batch()["input_ids"]}))
    check_contract(backend, batch)
