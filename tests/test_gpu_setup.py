"""What the engine sets up for a CUDA host, checked where it can be without one: full float32 for
every CUDA operation, the ASR compute type the card supports, and out-of-memory errors recognised."""

from __future__ import annotations

import sys
import types

import pytest
import torch

from voxdock.engine.loader import resolve_compute_type
from voxdock.engine.oom import is_out_of_memory
from voxdock.engine.precision import full_float32_in_effect, use_full_float32


def test_tf32_is_off_for_every_cuda_operation_once_set() -> None:
    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    saved = (matmul.fp32_precision, cudnn.conv.fp32_precision, cudnn.rnn.fp32_precision)
    try:
        cudnn.conv.fp32_precision = "tf32"
        assert not full_float32_in_effect()
        use_full_float32()
        assert full_float32_in_effect()
        assert (matmul.fp32_precision, cudnn.conv.fp32_precision, cudnn.rnn.fp32_precision) == ("ieee",) * 3
    finally:
        matmul.fp32_precision, cudnn.conv.fp32_precision, cudnn.rnn.fp32_precision = saved


@pytest.mark.parametrize(
    ("supported", "chosen"),
    [
        ({"float32", "float16", "int8_float16", "int8", "int8_float32"}, "float16"),  # Volta and later
        ({"float32", "int8", "int8_float32"}, "int8_float32"),  # Pascal: no fast float16
        ({"float32"}, "float32"),
    ],
)
def test_auto_compute_type_is_one_the_card_supports(
    monkeypatch: pytest.MonkeyPatch, supported: set[str], chosen: str
) -> None:
    # CTranslate2's answer for a card this machine does not have (the choice is what is tested)
    fake = types.SimpleNamespace(get_supported_compute_types=lambda device: supported)
    monkeypatch.setitem(sys.modules, "ctranslate2", fake)
    assert resolve_compute_type("auto", "cuda") == chosen
    assert resolve_compute_type("int8", "cuda") == "int8"  # a setting is taken as given
    assert resolve_compute_type("auto", "cpu") == "int8"


def test_cuda_libraries_out_of_memory_messages_are_recognised() -> None:
    for text in (
        "CUDA failed with error out of memory",
        "cuFFT error: CUFFT_ALLOC_FAILED",
        "CUDA error: CUBLAS_STATUS_NOT_INITIALIZED when calling `cublasCreate(handle)`",
        "cuDNN error: CUDNN_STATUS_ALLOC_FAILED",
    ):
        assert is_out_of_memory(RuntimeError(text)), text
    assert not is_out_of_memory(RuntimeError("cuDNN error: CUDNN_STATUS_BAD_PARAM"))
    assert not is_out_of_memory(ValueError("out of memory"))  # not an error a library raises for it
