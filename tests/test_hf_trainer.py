"""RGFT inside a Hugging Face Trainer: gradient accumulation, checkpoint/resume, peft models."""

import numpy as np
import pytest
import torch

from rgft_edge import RGFT
from tests.conftest import text_batch, tiny_bert

transformers = pytest.importorskip("transformers")
from rgft_edge.hf_trainer import RGFTCallback, RGFTTorchOptimizer  # noqa: E402


class Rows(torch.utils.data.Dataset):
    def __init__(self, n=48):
        b = text_batch(n, 12, seed=7)
        self.rows = [{k: v[i] for k, v in b.items()} for i in range(n)]

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        return self.rows[i]


class Record(transformers.TrainerCallback):
    def __init__(self, rgft):
        self.rgft, self.selections = rgft, []

    def on_pre_optimizer_step(self, args, state, control, **kw):
        self.selections.append(self.rgft.selection.mask.copy())


def _trainer(tmp_path, model, rgft, max_steps, **kw):
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path), per_device_train_batch_size=4, gradient_accumulation_steps=2,
        max_steps=max_steps, save_strategy="steps", save_steps=3, logging_steps=1, report_to=[],
        use_cpu=True, learning_rate=1e-2, lr_scheduler_type="linear", seed=0, disable_tqdm=True,
        dataloader_num_workers=0, **kw)
    record = Record(rgft)
    trainer = transformers.Trainer(model=model, args=args, train_dataset=Rows(),
                                   callbacks=[RGFTCallback(rgft), record],
                                   optimizers=(RGFTTorchOptimizer(rgft, lr=1e-2), None))
    return trainer, record


def _rgft(model, **kw):
    return RGFT(model, example_inputs={k: v for k, v in text_batch(2, 12).items() if k != "labels"}, **kw)


def test_trainer_trains_only_the_selection_with_accumulation(tmp_path):
    model = tiny_bert()
    rgft = _rgft(model, policy="top-p", top_p=0.3)
    before = {n: p.detach().clone() for n, p in rgft._params.items()}
    trainer, record = _trainer(tmp_path, model, rgft, max_steps=6)
    trainer.train()
    assert rgft.step_count == 6 and len(record.selections) == 6
    trained = {n for m in record.selections for i in np.flatnonzero(m) for n in rgft._comp_params[i]}
    moved = {n for n, p in rgft._params.items() if not torch.equal(p.detach(), before[n])}
    assert moved == trained  # weight decay and momentum touch nothing else
    assert all(0 < m.sum() < len(rgft.table) for m in record.selections[1:])
    assert (rgft.scores > 0).any()


def test_trainer_resume_continues_identically(tmp_path):
    m1 = tiny_bert()
    r1 = _rgft(m1, policy="paced", budget=0.7)
    t1, rec1 = _trainer(tmp_path / "a", m1, r1, max_steps=6)
    t1.train()
    m2 = tiny_bert()
    r2 = _rgft(m2, policy="paced", budget=0.7)
    t2, rec2 = _trainer(tmp_path / "a", m2, r2, max_steps=6)
    t2.train(resume_from_checkpoint=str(tmp_path / "a" / "checkpoint-3"))
    assert r2.step_count == 6
    assert all(np.array_equal(x, y) for x, y in zip(rec1.selections[3:], rec2.selections))
    for p1, p2 in zip(m1.parameters(), m2.parameters()):
        torch.testing.assert_close(p1, p2)


@pytest.mark.parametrize("method", ["lora", "ia3"])
def test_trainer_with_peft_models(tmp_path, method):
    peft = pytest.importorskip("peft")
    base = tiny_bert()
    if method == "lora":
        cfg = peft.LoraConfig(r=4, target_modules=["query", "value"], task_type="SEQ_CLS")
        granularity = "lora"
    else:
        cfg = peft.IA3Config(target_modules=["key", "value", "output.dense"], feedforward_modules=["output.dense"],
                             task_type="SEQ_CLS")
        granularity = "block"
    model = peft.get_peft_model(base, cfg)
    rgft = _rgft(model, policy="top-p", top_p=0.5, granularity=granularity)
    before = {n: p.detach().clone() for n, p in rgft._params.items()}
    trainer, record = _trainer(tmp_path, model, rgft, max_steps=4)
    trainer.train()
    assert rgft.step_count == 4
    moved = {n for n, p in rgft._params.items() if not torch.equal(p.detach(), before[n])}
    assert moved and all(method in n or "classifier" in n or "score" in n or "pooler" in n for n in moved)
