"""ExecuTorch kernel choices: XNNPACK really carries the training methods, and every lowering
computes the same gradients as eager torch."""

import numpy as np
import pytest

from rgft_edge.artifact import load_artifact
from rgft_edge.backend import open_backend
from rgft_edge.errors import UserError
from tests.device_runners.test_onnxruntime_runner import batch


def delegates_per_method(pte: bytes) -> dict[str, list[str]]:
    from executorch.exir._serialize._program import deserialize_pte_binary

    plans = deserialize_pte_binary(pte).program.execution_plan
    return {p.name: [d.id for d in p.delegates] for p in plans}


def test_default_lowers_training_methods_to_xnnpack_and_keeps_inference_undelegated(tiny_artifacts):
    art = load_artifact(tiny_artifacts["executorch"])
    assert art.manifest["backend_info"]["kernels"] == "xnnpack"
    found = delegates_per_method(art.path("executorch/train.pte").read_bytes())
    train_methods = [p["name"] for p in art.programs if p["kind"] == "train"]
    assert train_methods and all(found[m] and set(found[m]) == {"XnnpackBackend"} for m in train_methods)
    assert found["forward"] == []  # its weights come from the .ptd a device rewrites


def test_portable_lowering_gives_eager_gradients(tiny_artifacts, tiny_model_dir, tmp_path):
    from rgft_edge.export.compile import compile_artifact
    from tests.conftest import tiny_opts

    out = tmp_path / "portable"  # two programs (the fewest a plan has): the bottom cut is compared
    compile_artifact(str(tiny_model_dir), out, "executorch", tiny_opts(executorch_kernels="portable"),
                     max_programs=2)
    art = load_artifact(out)
    assert art.manifest["backend_info"]["kernels"] == "portable"
    assert all(not d for d in delegates_per_method(art.path("executorch/train.pte").read_bytes()).values())
    exp, ref = open_backend(art, 1), open_backend(load_artifact(tiny_artifacts["torch"]), 1)
    mask = np.ones(len(exp.table), dtype=bool)
    o, t = exp.train_step(batch(), mask, False), ref.train_step(batch(), mask, False)
    assert o.loss == pytest.approx(t.loss, abs=1e-6)
    for n, g in t.grads.items():
        np.testing.assert_allclose(o.grads[n], g.detach().numpy(), atol=1e-6, rtol=1e-5)


def test_unknown_kernel_choice_is_refused(compile_tiny):
    with pytest.raises(UserError, match="--executorch-kernels"):
        compile_tiny("executorch", executorch_kernels="fast")
