"""ExecuTorch stage layout: per-stage methods chained by the runner, so a step computes weight
gradients only for the components it trains — and the same gradients as eager torch."""

import json
import shutil

import numpy as np
import pytest

from rgft_edge.artifact import ArtifactError, load_artifact
from rgft_edge.backend import open_backend
from rgft_edge.device_runners.executorch_stages import ExecuTorchStageBackend
from tests.device_runners.test_executorch_native import batch as bert_batch

# (stage artifact, eager reference): BERT int8 + LoRA on XNNPACK, Llama-like LM fp32 full (portable)
KINDS = [("int8-lora", "torch"), ("lm-fp32-full", "torch-lm-fp32-full")]


def batch(art, seed=0):
    if art.manifest["backend_info"]["task"] != "causal-lm":
        return bert_batch(art, seed)
    g = np.random.default_rng(seed)
    ids = g.integers(5, 20, (4, 12))
    mask = np.ones((4, 12), np.int64)
    mask[1, 9:] = 0  # a padded row
    return {"input_ids": ids, "attention_mask": mask, "labels": ids.copy()}


def selections(k: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    full, head, ends = np.ones(k, bool), np.zeros(k, bool), np.zeros(k, bool)
    head[k - 1] = True
    ends[[0, k - 1]] = True  # the lowest and the highest component: everything between passes through
    out = [full, head, ends]
    for _ in range(3):
        m = rng.random(k) < 0.4
        m[rng.integers(k)] = True
        out.append(m)
    return out


class Recorder:
    """Wraps a program to record the methods each step runs."""

    def __init__(self, program):
        self.program, self.ran = program, []

    def run(self, method, inputs):
        self.ran.append(method)
        return self.program.run(method, inputs)

    def close(self):
        self.program.close()


@pytest.mark.parametrize("kind,ref", KINDS)
def test_stage_gradients_equal_eager_for_any_selection(et_stage_artifacts, tiny_artifacts, kind, ref):
    ref_dir = tiny_artifacts[ref] if ref == "torch" else et_stage_artifacts[ref]
    et = open_backend(load_artifact(et_stage_artifacts[kind]), 1)
    assert isinstance(et, ExecuTorchStageBackend)
    eager = open_backend(load_artifact(ref_dir), 1)
    b = batch(et.artifact)
    for mask in selections(len(et.table)):
        o, t = et.train_step(b, mask, False), eager.train_step(b, mask, False)
        assert o.loss == pytest.approx(t.loss, abs=1e-5)  # a few float32 ulps of a loss near 3.3
        assert set(o.grads) == set(t.grads) == set(et.table.param_names(np.flatnonzero(mask)))
        for n, g in t.grads.items():
            np.testing.assert_allclose(o.grads[n], g.detach().numpy(), atol=1e-6, rtol=1e-5)
    assert et.evaluate([b]).metrics == pytest.approx(eager.evaluate([b]).metrics, abs=1e-5)


def test_a_step_computes_weight_gradients_only_for_the_selected_stages(et_stage_artifacts):
    et = open_backend(load_artifact(et_stage_artifacts["int8-lora"]), 1)
    et.program = rec = Recorder(et.program)
    b = batch(et.artifact)
    for mask in selections(len(et.table), seed=1):
        rec.ran = []
        et.train_step(b, mask, False)
        chosen = set(et.stage_of[np.flatnonzero(mask)].tolist())
        lowest = min(chosen)
        graphs = [m.split(".")[-1] for m in rec.ran]
        # one weight-gradient method per selected stage; stages between the lowest selected one
        # and the head pass only the input gradient; stages below run forward only
        assert sum(g in ("w", "xw") for g in graphs) == len(chosen), (rec.ran, chosen)
        assert graphs.count("x") == len(set(range(lowest + 1, len(et.stages))) - chosen), rec.ran
        assert graphs.count("fwd") == lowest, rec.ran


def test_loop_trains_through_the_stage_layout(et_stage_artifacts, tiny_artifacts):
    from rgft_edge.error_map import ErrorMap
    from rgft_edge.loop import LoopSettings, train
    from rgft_edge.optim import ComponentAdamW
    from tests.device_runners.test_parity import Schedule

    curves = {}
    for name, path in (("stages", et_stage_artifacts["int8-lora"]), ("torch", tiny_artifacts["torch"])):
        backend = open_backend(load_artifact(path), 1)
        k = len(backend.table)
        full, top, ends = np.ones(k, bool), np.zeros(k, bool), np.zeros(k, bool)
        top[k - 1] = True
        ends[[0, k - 1]] = True
        res = train(backend, Schedule([full, top, ends, top]), ErrorMap(k), ComponentAdamW(backend.table, 1e-2),
                    [batch(load_artifact(et_stage_artifacts["int8-lora"]), s % 5) for s in range(12)], LoopSettings())
        curves[name] = np.array(res.losses)
    np.testing.assert_allclose(curves["stages"], curves["torch"], atol=1e-4)
    assert curves["torch"][-1] < curves["torch"][0]


def test_a_manifest_naming_a_missing_method_is_refused(et_stage_artifacts, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(et_stage_artifacts["int8-lora"], bad)
    manifest = json.loads((bad / "manifest.json").read_text())
    methods = manifest["backend_info"]["methods"]
    del methods[next(m for m in methods if m.endswith(".fwd"))]
    (bad / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError):
        et = open_backend(load_artifact(bad), 1)
        et.evaluate([batch(et.artifact)])


def test_an_unknown_layout_is_refused_by_name():
    from rgft_edge.errors import UserError
    from rgft_edge.export.prepare import PrepareOptions, check_options

    with pytest.raises(UserError, match="--executorch-layout"):
        check_options(PrepareOptions(executorch_layout="stage"))
