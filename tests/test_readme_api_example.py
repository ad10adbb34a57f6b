"""The README's Python API example runs as printed (the real MiniLM on Rotten Tomatoes). Slow."""

import re
from pathlib import Path

import pytest


@pytest.mark.slow
def test_readme_python_api_example_runs(capsys):
    text = (Path(__file__).parents[1] / "README.md").read_text()
    section = text[text.index("## Python API"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert len(code.strip().splitlines()) <= 25
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    rgft = namespace["rgft"]
    assert rgft.step_count == 30 and (rgft.scores > 0).all()
    assert "layer.5.ffn" in capsys.readouterr().out
