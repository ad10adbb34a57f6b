"""The HTML report: built from a real (tiny) run, from a killed run's leftovers, and rendered in
headless Chromium when it is installed (`.ci/run` installs Debian's chromium when it can)."""

import shutil
import subprocess

import pytest

from rgft_edge.config import FinetuneConfig
from rgft_edge.recipes.finetune import finetune
from rgft_edge.runs.report import render, write_report


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from tests.conftest import save_tiny_model_dir, write_sentiment_csv

    root = tmp_path_factory.mktemp("report")
    model, csv = save_tiny_model_dir(root / "m"), write_sentiment_csv(root / "d.csv")
    out = []
    for policy in ("budget", "full"):
        cfg = FinetuneConfig.of(model=str(model), data=str(csv), text_column="review", label_column="sentiment",
                             eval_examples=24, batch_size=8, epochs=2, threads=1, policy=policy, budget=0.8,
                             eval_every=4, memory_budget="8GB", energy_budget="100kJ",
                             out=str(root / policy))
        finetune(cfg, progress=False)
        out.append(root / policy)
    return out


def test_finetune_writes_a_report_with_every_chart(runs):
    page = (runs[0] / "report.html").read_text()
    for part in ("error map", "how often each component was trained", "training loss", "held-out",
                 "step time", "RSS", "memory budget", "energy source", "learning-rate multiplier",
                 "power (W) over time", "energy budget"):
        assert part in page, part
    assert "<script" not in page and "http" not in page.split("<body>")[1]  # offline, no CDN


def test_compare_puts_runs_side_by_side(runs, tmp_path):
    out = write_report(runs, tmp_path / "cmp.html")
    page = out.read_text()
    assert page.count("error map and selection") == 2 and "budget" in page and "full" in page


def test_a_killed_run_still_gets_a_report_of_what_exists(runs, tmp_path):
    killed = tmp_path / "killed"
    shutil.copytree(runs[0], killed)
    for name in ("summary.json", "error_map.npy", "selected.npy", "eval.json"):
        (killed / name).unlink()
    with open(killed / "metrics.jsonl", "a") as f:
        f.write('{"type": "step", "step": 99, "lo')  # power cut mid-line
    page = render([killed])
    assert "summary.json missing" in page and "rebuilt from metrics.jsonl" in page and "cut-off line" in page
    assert "error map (EMA" in page


def test_report_renders_in_headless_chromium(runs, tmp_path):
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("chromium is not installed here (.ci/run installs Debian's chromium when apt works)")
    page = runs[0] / "report.html"
    flags = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0"]
    dom = subprocess.run(flags + ["--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert dom.stdout.count("<svg") >= 7  # every chart is in the rendered DOM
    assert "CONSOLE" not in dom.stderr, [l for l in dom.stderr.splitlines() if "CONSOLE" in l]
    shot = tmp_path / "report.png"
    subprocess.run(flags + ["--window-size=1000,2400", f"--screenshot={shot}", page.as_uri()],
                   capture_output=True, text=True, timeout=120)
    assert shot.is_file() and shot.stat().st_size > 20_000  # a page with charts, not a blank one


def test_report_of_a_directory_without_a_run_is_a_clear_error(tmp_path, capsys):
    from rgft_edge.cli import main

    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    assert "no rgft-edge run here" in err and err.count("\n") == 1 and not (tmp_path / "empty" / "report.html").exists()
    assert main(["report", str(tmp_path / "nowhere")]) == 2


def test_summary_table_speaks_human_units(runs):
    import json

    page = render([runs[0]])
    summary = json.loads((runs[0] / "summary.json").read_text())
    assert "peak RSS (MB)" in page and "CO2e (g)" in page and "median step (ms)" in page
    assert "(B)" not in page and "(kg)" not in page
    assert f"{summary['peak_rss_bytes'] / 1e6:,.0f}" in page
