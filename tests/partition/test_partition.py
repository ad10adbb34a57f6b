import pytest
import torch

from rgft_edge.partition import build_component_table
from tests.conftest import text_batch, tiny_bert, tiny_cnn, tiny_gpt2, tiny_llama

TEXT = {"input_ids": text_batch()["input_ids"]}
FAMILIES = {
    "bert": (tiny_bert, TEXT), "llama": (tiny_llama, TEXT), "gpt2": (tiny_gpt2, TEXT),
}


def element_owner_counts(model, table):
    """Count, per element of every trainable parameter, how many components own it."""
    counts = {n: torch.zeros_like(p, dtype=torch.int32) for n, p in model.named_parameters() if p.requires_grad}
    for c in table:
        for ref in c.params:
            counts[ref.name][ref.index(counts[ref.name].dim())] += 1
    return counts


@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize("granularity", ["layer", "block", "head"])
def test_transformers_cover_every_trainable_element_once(family, granularity):
    make, inputs = FAMILIES[family]
    model = make()
    table = build_component_table(model, granularity, inputs)
    for name, cnt in element_owner_counts(model, table).items():
        assert torch.all(cnt == 1), f"{family}/{granularity}: {name} covered {cnt.unique().tolist()}"
    assert table.notes["family"] == family
    depths = table.depths
    assert depths == sorted(depths), "components are listed in forward order"
    assert all(c.num_params > 0 for c in table)


def test_bert_layer_and_block_structure():
    model = tiny_bert(layers=2)
    layer = build_component_table(model, "layer", TEXT)
    assert [c.kind for c in layer] == ["embedding", "layer", "layer", "classifier", "classifier"]
    block = build_component_table(model, "block", TEXT)
    kinds = [c.kind for c in block]
    assert kinds.count("attention") == 2 and kinds.count("ffn") == 2
    # attention of layer 0 runs before its FFN, which runs before layer 1
    d = {c.name: c.depth for c in block}
    assert d["layer.0.attention"] < d["layer.0.ffn"] < d["layer.1.attention"]
    assert all(c.fwd_flops > 0 for c in block if c.kind in ("attention", "ffn"))


def test_head_granularity_splits_projections_per_head():
    model = tiny_bert()
    table = build_component_table(model, "head", TEXT)
    heads = [c for c in table if c.kind == "head"]
    assert len(heads) == 2 * 4  # 2 layers x 4 heads
    h0 = table[table.index("layer.0.head.1")]
    q = [r for r in h0.params if r.name.endswith("query.weight")][0]
    assert (q.dim, q.start, q.stop) == (0, 8, 16)  # head_dim 8, second head
    o = [r for r in h0.params if r.name.endswith("attention.output.dense.weight")][0]
    assert (o.dim, o.start, o.stop) == (1, 8, 16)
    assert h0.hook.mode == "input" and (h0.hook.start, h0.hook.stop) == (8, 16)


def test_llama_gqa_heads_are_kv_groups():
    table = build_component_table(tiny_llama(), "head", TEXT)
    groups = [c for c in table if c.kind == "head"]
    assert len(groups) == 2 * 2  # 2 layers x 2 kv groups
    g = table[table.index("layer.0.kv_group.1")]
    k = [r for r in g.params if r.name.endswith("k_proj.weight")][0]
    q = [r for r in g.params if r.name.endswith("q_proj.weight")][0]
    assert (k.start, k.stop) == (8, 16) and (q.start, q.stop) == (16, 32)


def test_generic_cnn_by_stages():
    model = tiny_cnn()
    table = build_component_table(model, "layer", torch.randn(2, 3, 8, 8))
    assert [c.name for c in table] == ["stem.0", "stem.1", "stages.0", "stages.2", "fc"]
    assert table[len(table) - 1].kind == "classifier"
    for name, cnt in element_owner_counts(model, table).items():
        assert torch.all(cnt == 1), name
    assert table[0].fwd_flops > 0  # convolution FLOPs counted per sample


def test_frozen_parameters_are_not_components():
    model = tiny_bert()
    model.bert.embeddings.requires_grad_(False)
    table = build_component_table(model, "block", TEXT)
    assert "embedding" not in [c.kind for c in table]
    assert not any(n.startswith("bert.embeddings") for n in table.param_names())


def test_lora_granularity_one_component_per_adapted_module():
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(tiny_bert(), LoraConfig(r=4, target_modules=["query", "value"],
                                                   modules_to_save=["classifier"]))
    table = build_component_table(model, "lora", TEXT)
    lora = [c for c in table if c.kind == "lora"]
    assert len(lora) == 2 * 2  # 2 layers x (query, value)
    assert all(len(c.params) == 2 for c in lora)  # lora_A and lora_B
    for name, cnt in element_owner_counts(model, table).items():
        assert torch.all(cnt == 1), name
    assert any(c.kind == "classifier" for c in table)
    assert all(c.wgrad_flops <= c.fwd_flops for c in lora)  # adapter grads cost less than the layer


def test_table_json_round_trip_and_bad_granularity():
    from rgft_edge.components import ComponentTable

    table = build_component_table(tiny_bert(), "head", TEXT)
    again = ComponentTable.from_dict(table.to_dict())
    assert again.to_dict() == table.to_dict()
    with pytest.raises(ValueError, match="granularity"):
        build_component_table(tiny_bert(), "neuron", TEXT)
    with pytest.raises(ValueError, match="LoRA"):
        build_component_table(tiny_bert(), "lora", TEXT)
    with pytest.raises(ValueError, match="head"):
        build_component_table(tiny_cnn(), "head", torch.randn(1, 3, 8, 8))


def test_coverage_check_rejects_overlap_and_gaps():
    from rgft_edge.components import Component, ComponentTable, ParamRef

    shapes = {"w": (4, 2)}
    gap = ComponentTable([Component("a", "module", 0, [ParamRef("w", 0, 0, 2)], 4)], "layer")
    with pytest.raises(ValueError, match="cover 4 of 8"):
        gap.check_coverage(shapes)
    overlap = ComponentTable([Component("a", "module", 0, [ParamRef("w", 0, 0, 3)], 6),
                              Component("b", "module", 0, [ParamRef("w", 0, 2, 4)], 4)], "layer")
    with pytest.raises(ValueError, match="overlap"):
        overlap.check_coverage(shapes)
