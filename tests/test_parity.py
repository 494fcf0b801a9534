"""Full-size four-runtime parity of every default model (marked ``parity``: slow).

Select with ``pytest -m parity``; ``make test`` runs them too.
"""

from __future__ import annotations

import pytest

from codenn_convert.registry import get_spec, list_models
from codenn_convert.verify import verify

pytestmark = pytest.mark.parity


@pytest.mark.parametrize("name", list_models(default_only=True))
def test_default_model_passes_all_six_pairs_at_full_size(name: str) -> None:
    result = verify(name, batch=2, seed=0)
    assert result.input_shape == [2, 3, *get_spec(name).input_size]
    assert len(result.pairs) == 6
    for pair in result.pairs:
        assert pair.passed and pair.max_rel <= 1e-5, pair
    assert result.passed


def test_resnet50_passes_at_an_odd_non_square_size() -> None:
    """Padding bugs hide at 224x224 and show at odd, non-square sizes."""
    result = verify("resnet50", batch=2, seed=1, input_size=(197, 251))
    assert result.input_shape == [2, 3, 197, 251]
    for pair in result.pairs:
        assert pair.passed and pair.max_rel <= 1e-5, pair
