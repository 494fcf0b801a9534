"""Parity verification: runners on shared inputs, every pair compared, faults localised.

The verifier's public names, importable from here; each lives in the module of its job:
:mod:`.options` (what to verify), :mod:`.run` (the orchestration: twins, runners, golden
file), :mod:`.engine` (running and comparing), :mod:`.results` (the result model),
:mod:`.metrics` and :mod:`.lossy` (the numbers), :mod:`.runners`, :mod:`.inputs`,
:mod:`.localise` (the first divergent layer), :mod:`.golden` (record and replay).
"""

from codenn_convert.verification.engine import compare_runners, pair_order
from codenn_convert.verification.inputs import NORMAL_INPUTS, seeded_batch
from codenn_convert.verification.layers import LayerError
from codenn_convert.verification.metrics import compare
from codenn_convert.verification.options import RUNTIMES, VerifyOptions
from codenn_convert.verification.results import ModelResult, PairResult
from codenn_convert.verification.run import verify, verify_inputs, verify_many
from codenn_convert.verification.runners import ONNX_FILE_PREFIX

__all__ = ["NORMAL_INPUTS", "ONNX_FILE_PREFIX", "RUNTIMES", "LayerError", "ModelResult",
           "PairResult", "VerifyOptions", "compare", "compare_runners", "pair_order",
           "seeded_batch", "verify", "verify_inputs", "verify_many"]
