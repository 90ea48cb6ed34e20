"""Silero VAD v6 in PyTorch on the compute device, batched over a file's windows.

The same network and weights as faster-whisper's ONNX model (`faster_whisper/assets/silero_vad_v6.onnx`)
with the contract of `faster_whisper.vad.SileroVADModel.__call__`, so that an instance can stand in for
`faster_whisper.vad.get_vad_model()` and `get_speech_timestamps` finds the same regions (the
probabilities agree to float32 rounding).

The weights are read from faster-whisper's ONNX file itself. The installed silero-vad package (6.2.3)
ships other weights (silero's 6.2 retrain, in both `silero_vad.jit` and `silero_vad_16k.safetensors`);
the ONNX file holds the 16 kHz weights of silero-vad 6.0/6.1's `silero_vad.jit`, bit for bit.

The network, per 512-sample window with the 64 samples before it as context (576 samples):
  - front end: reflect-pad 64 samples on the right, a 256-point STFT done as a strided conv (hop 128,
    258 basis rows: real and imaginary parts of 129 bins), magnitude: (129, 4)
  - encoder: four conv1d (kernel 3, padding 1) + ReLU, 129->128 (stride 1), 128->64 (2), 64->64 (2),
    64->128 (1): one 128-vector per window
  - an LSTM cell (hidden 128) whose state runs on from window to window across the whole input
  - decoder: ReLU, a 1x1 conv 128->1, sigmoid: the window's speech probability
The front end and encoder run over a block of windows at once, then `nn.LSTM` over the block's windows
as one sequence (state carried between blocks), then the decoder over the block.

Meant for CUDA. It runs on CPU too (the tests compare it there), but torch's CPU LSTM makes every
window's step a parallel region: with more than one intra-op thread on a busy host each step can wait
at its barrier for a time slice (6 s for 1,000 windows measured on a loaded 2-core machine, 6 ms on one
thread). On CPU run it with one thread (`torch.set_num_threads(1)`), as the ONNX model runs.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnx
import torch
from faster_whisper.utils import get_assets_path
from onnx import numpy_helper
from torch import nn
from torch.nn import functional

from voxdock.engine.oom import AdaptiveBatch
from voxdock.engine.precision import use_full_float32

log = logging.getLogger(__name__)

WINDOW = 512  # samples per probability at 16 kHz
CONTEXT = 64  # samples of the previous window each window sees
N_FFT = 256
HOP = 128
BINS = N_FFT // 2 + 1
HIDDEN = 128
# (in, out, stride) of the encoder's convolutions
ENCODER = ((BINS, 128, 1), (128, 64, 2), (64, 64, 2), (64, HIDDEN, 1))
# Windows per front-end/encoder pass: bounds the STFT's intermediate (about 4 KiB a window) on long files.
BLOCK_WINDOWS = 16384
# ONNX stores an LSTM's gates as (input, output, forget, cell); torch as (input, forget, cell, output).
_ONNX_TO_TORCH_GATES = [0, 2, 3, 1]


def onnx_path() -> str:
    """faster-whisper's Silero VAD v6 model, the one `get_vad_model()` runs."""
    return str(Path(get_assets_path()) / "silero_vad_v6.onnx")


def _state_dict_from_onnx(path: str) -> dict[str, torch.Tensor]:
    """The ONNX graph's weights under `_SileroNet`'s names, found by the nodes that use them (the
    initializers' own names are the exporter's)."""
    graph = onnx.load(path).graph
    arrays = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    convs = [node for node in graph.node if node.op_type == "Conv"]
    lstms = [node for node in graph.node if node.op_type == "LSTM"]
    if len(convs) != 2 + len(ENCODER) or len(lstms) != 1:
        raise ValueError(f"{path}: not the Silero VAD v6 graph this module implements")

    def tensor(name: str) -> torch.Tensor:
        return torch.from_numpy(np.array(arrays[name], dtype=np.float32))

    def gates(array: np.ndarray) -> torch.Tensor:
        rows = torch.from_numpy(np.array(array, dtype=np.float32)).reshape(4, HIDDEN, -1)
        return rows[_ONNX_TO_TORCH_GATES].reshape(4 * HIDDEN, -1).squeeze(-1)

    state = {"stft.weight": tensor(convs[0].input[1])}
    for i, node in enumerate(convs[1:-1]):
        state[f"encoder.{i}.weight"] = tensor(node.input[1])
        state[f"encoder.{i}.bias"] = tensor(node.input[2])
    state["decoder.weight"] = tensor(convs[-1].input[1]).reshape(1, HIDDEN)
    state["decoder.bias"] = tensor(convs[-1].input[2])
    # ONNX LSTM inputs: X, W (input weights), R (recurrent weights), B (both biases, concatenated)
    w, r, b = (arrays[name][0] for name in lstms[0].input[1:4])
    state["lstm.weight_ih_l0"] = gates(w)
    state["lstm.weight_hh_l0"] = gates(r)
    state["lstm.bias_ih_l0"] = gates(b[: 4 * HIDDEN])
    state["lstm.bias_hh_l0"] = gates(b[4 * HIDDEN :])
    return state


class _SileroNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stft = nn.Conv1d(1, 2 * BINS, N_FFT, stride=HOP, bias=False)
        self.encoder = nn.ModuleList(nn.Conv1d(i, o, 3, stride=s, padding=1) for i, o, s in ENCODER)
        self.lstm = nn.LSTM(HIDDEN, HIDDEN)  # sequence first: (windows, 1, 128)
        self.decoder = nn.Linear(HIDDEN, 1)  # the 1x1 conv

    def encode(self, windows: torch.Tensor) -> torch.Tensor:
        """(n, 576) windows with context -> (n, 128)."""
        # The ONNX graph pads 128 on both sides and drops the first STFT frame; padding 64 on the right
        # alone gives the same four frames (silero's own model pads so).
        x = functional.pad(windows.unsqueeze(1), (0, CONTEXT), mode="reflect")
        x = self.stft(x)
        x = torch.sqrt(x[:, :BINS] ** 2 + x[:, BINS:] ** 2)
        for conv in self.encoder:
            x = functional.relu(conv(x))
        return x.squeeze(-1)

    def decode(self, hidden: torch.Tensor) -> torch.Tensor:
        """(n, 128) LSTM outputs -> (n,) speech probabilities."""
        return torch.sigmoid(self.decoder(functional.relu(hidden))).squeeze(-1)


def _log_backoff(failed: int, now: int) -> None:
    log.warning("VAD out of GPU memory on %d windows at once: %d from now on", failed, now)


class TorchSileroVad:
    """faster-whisper's Silero VAD v6 (see the module's note) run by torch on `device`; thread-safe."""

    def __init__(
        self,
        device: str | torch.device = "cpu",
        *,
        path: str | None = None,
        block_windows: int = BLOCK_WINDOWS,
    ) -> None:
        self.device = torch.device(device)
        if self.device.type == "cuda":  # its probabilities must match the CPU's (engine/precision.py)
            use_full_float32()
        # Windows per block, halved on out-of-memory and grown back after successes (engine/oom.py);
        # one for every thread's calls.
        self.blocks = AdaptiveBatch(block_windows, on_backoff=_log_backoff)
        net = _SileroNet()
        net.load_state_dict(_state_dict_from_onnx(path or onnx_path()))
        self._net = net.eval().to(self.device)

    def __call__(
        self, audio: np.ndarray, num_samples: int = WINDOW, context_size_samples: int = CONTEXT
    ) -> np.ndarray:
        """Speech probability of each 512-sample window of `audio` (1-D, 16 kHz, a whole number of
        windows), float32, shape (len(audio) // 512,). The LSTM state starts at zero."""
        if (num_samples, context_size_samples) != (WINDOW, CONTEXT):
            raise ValueError(f"the network takes {WINDOW}-sample windows with {CONTEXT} of context")
        if audio.ndim != 1 or audio.shape[0] % WINDOW:
            raise ValueError(f"expected 1-D audio of a whole number of {WINDOW}-sample windows")
        count = audio.shape[0] // WINDOW
        if count == 0:
            return np.zeros(0, dtype=np.float32)
        # Window i reads padded[i * 512 : i * 512 + 576]: the 64 samples before it (zeros for the first)
        # and its own 512. The last 64 samples stay zero: faster-whisper's model zeroes them, as its
        # first window's context is a view into the audio's last window (`context[-1] = 0`). Unlike it,
        # the caller's array is left as it was.
        padded = np.zeros(CONTEXT + count * WINDOW, dtype=np.float32)
        padded[CONTEXT:-CONTEXT] = audio[:-CONTEXT]
        probs = np.empty(count, dtype=np.float32)
        state: list[tuple[torch.Tensor, torch.Tensor] | None] = [None]

        def run(start: int, stop: int) -> None:
            # Only this block's audio goes to the device (a 3-hour file whole would be 690 MB there
            # per VAD call); the LSTM state moves on only once the block is done, so a block retried
            # smaller after out-of-memory starts from the same state.
            with torch.inference_mode():
                block = torch.from_numpy(padded[start * WINDOW : stop * WINDOW + CONTEXT]).to(self.device)
                windows = block.unfold(0, WINDOW + CONTEXT, WINDOW)
                features = self._net.encode(windows)
                hidden, after = self._net.lstm(features.unsqueeze(1), state[0])
                probs[start:stop] = self._net.decode(hidden.squeeze(1)).cpu().numpy()
            state[0] = after

        self.blocks.spans(count, run)
        return probs
