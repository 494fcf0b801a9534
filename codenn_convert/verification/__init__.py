"""Parity verification: runners on shared inputs, every pair compared, faults localised.

The public names of the verifier, importable from here; each lives in the module of its
job (see the package's modules).
"""

from codenn_convert.verification.run import (
    NORMAL_INPUTS,
    ONNX_FILE_PREFIX,
    RUNTIMES,
    LayerError,
    ModelResult,
    PairResult,
    VerifyOptions,
    compare,
    compare_runners,
    seeded_batch,
    verify,
    verify_inputs,
    verify_many,
)

__all__ = ["NORMAL_INPUTS", "ONNX_FILE_PREFIX", "RUNTIMES", "LayerError", "ModelResult",
           "PairResult", "VerifyOptions", "compare", "compare_runners", "seeded_batch",
           "verify", "verify_inputs", "verify_many"]
