"""The README does not lie: its Python blocks run as written, and it links only to files of
this repository."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

README = (ROOT / "README.md").read_text(encoding="utf8")
BLOCKS = re.findall(r"^```python\n(.*?)^```", README, re.MULTILINE | re.DOTALL)
#: A torch checkpoint a block reads, named after its model: "resnet50.pth".
CKPT = re.compile(r"""["']((\w+?)(?:[._-][\w.-]*)?\.(?:pth|pt|safetensors))["']""")


def test_readme_has_python_blocks() -> None:
    assert BLOCKS, "README.md has no ```python block"


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_python_block_runs(index: int, tmp_path: Path) -> None:
    from codenn_convert.checkpoints.files import save_torch_state
    from codenn_convert.registry import list_models
    from codenn_convert.twins.init import realistic_state

    block = BLOCKS[index]
    for name, model in set(CKPT.findall(block)):
        assert model in list_models(), f"{name}: no model {model!r} to create it from"
        save_torch_state(realistic_state(model), tmp_path / name)
    proc = subprocess.run([sys.executable, "-c", block], cwd=tmp_path, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, f"README block {index} failed:\n{block}\n{proc.stderr}"


def test_readme_links_stay_in_the_repository() -> None:
    targets = re.findall(r"\]\(([^)\s]+)\)", README)
    assert targets
    for target in targets:
        assert "://" not in target and not target.startswith(".."), target
        assert (ROOT / target.split("#")[0]).exists(), f"README links to missing {target}"
    assert "../" not in README  # no pointer outside the repository, linked or not


