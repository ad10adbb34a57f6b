"""Property-based checks of the allocator: any scores, any feasible budget."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from rgft_edge.components import Component, ComponentTable, ParamRef
from rgft_edge.costs import CostModel
from rgft_edge.error_map import ErrorMap
from rgft_edge.policies import Knapsack, Quota, ScorePolicy


@st.composite
def tables(draw):
    k = draw(st.integers(2, 9))
    depths = sorted(draw(st.lists(st.integers(0, 6), min_size=k, max_size=k)))
    comps = [Component(f"c{i}", "layer", d, [ParamRef(f"p{i}")], draw(st.integers(1, 1000)),
                       fwd_flops=draw(st.floats(1, 100)), wgrad_flops=draw(st.floats(0, 100)),
                       igrad_flops=draw(st.floats(1, 100))) for i, d in enumerate(depths)]
    return ComponentTable(comps, "layer")


@settings(max_examples=60, deadline=None, derandomize=True, database=None)
@given(tables(), st.data())
def test_budget_selection_respects_budget_and_forced(table, data):
    cost = CostModel(table, batch_size=16)
    k = len(table)
    cheapest = min(cost.fraction(np.eye(k, dtype=bool)[i]) for i in range(k))
    budget = data.draw(st.floats(min(1.0, cheapest + 1e-6), 1.0))
    scores = np.array(data.draw(st.lists(st.floats(0, 1e3), min_size=k, max_size=k)))
    sel = ScorePolicy(Knapsack(cost, budget)).select(scores, 5, np.zeros(k, bool))
    assert sel.mask.any()
    assert cost.fraction(sel.mask) <= budget + 1e-6
    assert np.all(sel.lr_mult[~sel.mask] == 0)


@settings(max_examples=60, deadline=None, derandomize=True, database=None)
@given(st.lists(st.floats(0, 1e6), min_size=1, max_size=30), st.floats(0.01, 1.0))
def test_top_p_covers_the_top_scores(scores, p):
    scores = np.array(scores)
    sel = ScorePolicy(Quota(len(scores), p)).select(scores, 0, np.zeros(len(scores), bool))
    n = sel.mask.sum()
    assert n == max(1, int(np.ceil(p * len(scores) - 1e-9)))
    # nothing left out scores higher than anything taken
    assert scores[~sel.mask].max(initial=-np.inf) <= scores[sel.mask].min()


@settings(max_examples=40, deadline=None, derandomize=True, database=None)
@given(st.integers(1, 30), st.integers(1, 12), st.lists(st.integers(0, 29), max_size=200))
def test_staleness_bound_for_any_measurement_pattern(k, bound, picks):
    em = ErrorMap(k, max_staleness=bound)
    em.update(0, np.ones(k, bool), np.ones(k))
    for step, pick in enumerate(picks, start=1):
        measured = np.zeros(k, bool)
        measured[pick % k] = True
        em.update(step, measured | em.stale(step, measured), np.ones(k))
        assert em.ages(step).max() <= bound


@settings(max_examples=40, deadline=None, derandomize=True, database=None)
@given(st.one_of(st.binary(max_size=400), st.sampled_from([b"\r\x00", b"a,b\r", b"\x00\x00", b'"x\n', b"\xff\xfe,1\n"])))
def test_data_loader_never_tracebacks_on_any_bytes(tmp_path_factory, blob):
    from rgft_edge.data import load_file
    from rgft_edge.errors import DataError

    for suffix in (".csv", ".jsonl"):
        p = tmp_path_factory.mktemp("d") / f"data{suffix}"
        p.write_bytes(b"text,label\n" + blob if suffix == ".csv" else blob)
        try:
            ds = load_file(p)
            assert len(ds) == len(ds.labels) and len(ds.label_names) >= 2
        except DataError:
            pass


_MANIFEST_EDITS = st.sampled_from(["drop", "type", "schema_version", "files", "components", "backend"])


@settings(max_examples=30, deadline=None, derandomize=True, database=None)
@given(_MANIFEST_EDITS, st.one_of(st.none(), st.integers(), st.text(max_size=5), st.lists(st.integers(), max_size=3),
                                  st.dictionaries(st.text(max_size=4), st.integers(), max_size=2)))
def test_manifest_loader_refuses_any_mangled_manifest_cleanly(tiny_artifacts, tmp_path_factory, edit, value):
    import json
    import shutil

    from rgft_edge.artifact import ArtifactError, load_artifact

    root = tmp_path_factory.mktemp("m") / "a"
    shutil.copytree(tiny_artifacts["torch"], root)
    m = json.loads((root / "manifest.json").read_text())
    key = {"drop": "trainable", "type": "input_spec"}.get(edit, edit)
    if edit == "drop":
        m.pop(key)
    else:
        m[key] = value
    (root / "manifest.json").write_text(json.dumps(m))
    try:
        load_artifact(root)
    except ArtifactError:
        return
    raise AssertionError(f"a manifest with {edit!r} set to {value!r} was accepted")
