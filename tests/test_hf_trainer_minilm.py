"""The Trainer integration once for real: MiniLM on Rotten Tomatoes, RGFT selection at half a step's
cost, through `Trainer(callbacks=[RGFTCallback(rgft)], optimizers=(RGFTTorchOptimizer(rgft), None))`."""

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")


@pytest.mark.slow
def test_trainer_fine_tunes_minilm_with_rgft(tmp_path):
    from rgft_edge import RGFT
    from rgft_edge.data import rotten_tomatoes, split
    from rgft_edge.export.prepare import load_hf
    from rgft_edge.hf_trainer import RGFTCallback, RGFTTorchOptimizer
    from rgft_edge.models import minilm_dir
    from rgft_edge.partition import freeze_embeddings
    from rgft_edge.text import TextEncoder

    torch.manual_seed(0)
    torch.set_num_threads(2)
    train, test = split(rotten_tomatoes(), 300, seed=0, max_train=1280)
    enc = TextEncoder(minilm_dir(), 64, ("input_ids", "attention_mask", "token_type_ids"))
    model = load_hf(minilm_dir(), "sequence-classification", train.label_names, attn_implementation=None)
    freeze_embeddings(model)

    class Rows(torch.utils.data.Dataset):
        def __init__(self, ds):
            self.ds = ds

        def __len__(self):
            return len(self.ds)

        def __getitem__(self, i):
            b = enc.encode([self.ds.texts[i]])
            return {"input_ids": b["input_ids"][0], "attention_mask": b["attention_mask"][0],
                    "token_type_ids": b["token_type_ids"][0], "labels": self.ds.labels[i]}

    def collate(rows):
        width = max(len(r["input_ids"]) for r in rows)
        pad = lambda a: np.pad(a, (0, width - len(a)))  # noqa: E731
        out = {k: torch.as_tensor(np.stack([pad(r[k]) for r in rows])) for k in ("input_ids", "attention_mask",
                                                                               "token_type_ids")}
        out["labels"] = torch.as_tensor([r["labels"] for r in rows])
        return out

    example = {k: v for k, v in collate([Rows(train)[i] for i in range(4)]).items() if k != "labels"}
    rgft = RGFT(model, policy="paced", budget=0.5, pace_lr_age=0.5, example_inputs=example)
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path), per_device_train_batch_size=16, max_steps=80, save_strategy="no",
        report_to=[], use_cpu=True, learning_rate=1e-4, lr_scheduler_type="constant", seed=0,
        disable_tqdm=True, dataloader_num_workers=0, logging_steps=20)
    trainer = transformers.Trainer(model=model, args=args, train_dataset=Rows(train), data_collator=collate,
                                   callbacks=[RGFTCallback(rgft)],
                                   optimizers=(RGFTTorchOptimizer(rgft, lr=1e-4), None))
    trainer.train()
    assert rgft.step_count == 80
    model.eval()
    correct = 0
    with torch.no_grad():
        for a in range(0, len(test), 50):
            b = collate([Rows(test)[i] for i in range(a, min(a + 50, len(test)))])
            correct += int((model(**{k: v for k, v in b.items() if k != "labels"}).logits.argmax(-1)
                            == b["labels"]).sum())
    # the untrained head is at chance (~0.5); frozen features with logistic regression reach ~0.74
    assert correct / len(test) >= 0.68, correct / len(test)
