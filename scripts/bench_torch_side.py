"""bench_vs_torch's PyTorch side: the same steps as tljax's, in each variant PyTorch runs fastest in.

Variants (``--torch-variants``), by device:

- CPU: ``eager`` (NCHW, float32: what earlier runs compared with), ``eager_cl`` (the model and the
  input in ``torch.channels_last``: oneDNN's NHWC convolutions), ``compile`` (``torch.compile``,
  default mode) and ``compile_cl`` (both).
- GPU: ``eager`` (float32 on TF32 matrix units, NCHW), ``bf16_cl`` (bfloat16 autocast, channels
  last) and ``bf16_cl_compile`` (and ``torch.compile``).

``channels_last`` applies to image models only: on a text row ``eager_cl``/``compile_cl`` run as
``eager``/``compile`` (and are left out when those run too), and ``bf16_cl*`` as plain bf16 autocast.
Each variant has its own model and optimizer, initialised from the same seed.
"""

from __future__ import annotations

import contextlib
import time
from typing import Callable, Dict, List, NamedTuple, Tuple

import jax
import numpy as np
import torch


class Variant(NamedTuple):
    channels_last: bool
    compile: bool
    bf16: bool


VARIANTS = {
    "cpu": {"eager": Variant(False, False, False), "eager_cl": Variant(True, False, False),
            "compile": Variant(False, True, False), "compile_cl": Variant(True, True, False)},
    "cuda": {"eager": Variant(False, False, False), "bf16_cl": Variant(True, False, True),
             "bf16_cl_compile": Variant(True, True, True)},
}
TEXT_TWIN = {"eager_cl": "eager", "compile_cl": "compile"}  # what a channels_last variant is without images


def torch_device() -> torch.device:
    """Where the PyTorch side runs: the GPU when JAX runs on one too, else the CPU."""
    return torch.device("cuda" if jax.default_backend() == "gpu" and torch.cuda.is_available() else "cpu")


def parse_variants(text, device_type: str) -> List[str]:
    """``--torch-variants``: a comma list of this device's variants (None or '': all of them)."""
    known = VARIANTS[device_type]
    names = [n.strip() for n in (text or "").split(",") if n.strip()] or list(known)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise SystemExit(f"--torch-variants: {unknown} not among {device_type}'s variants {list(known)}")
    return list(dict.fromkeys(names))


def for_text(names: List[str]) -> List[str]:
    """The variants a text row runs: channels_last ones become their twins, without repeats."""
    return list(dict.fromkeys(TEXT_TWIN.get(n, n) for n in names))


def step(model, forward: Callable[[], torch.Tensor], optimizer, frozen_backbone: bool, bf16: bool):
    """One training step; a frozen backbone runs in eval mode (BatchNorm statistics fixed);
    ``bf16``: the forward pass under bfloat16 autocast (the backward follows its dtypes)."""
    device = torch_device()
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    cast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if bf16 else contextlib.nullcontext

    def run():
        model.train(not frozen_backbone)
        optimizer.zero_grad(set_to_none=True)
        with cast():
            loss = forward()
        loss.backward()
        optimizer.step()
        sync()

    return run


def first_call(name: str, run) -> float:
    """Seconds of the first step (``torch.compile`` compiles there), run outside the timed rounds.

    A ``torch.compile`` variant that cannot compile (on CPU Inductor needs a C++ compiler) stops
    the run with the error and the variants that do without one."""
    start = time.perf_counter()
    try:
        run()
    except Exception as e:
        if "compile" not in name:
            raise
        raise SystemExit(f"PyTorch variant {name!r} failed in torch.compile ({type(e).__name__}: {str(e)[:500]}); "
                         f"on CPU it needs a C++ compiler (g++); without one pass --torch-variants eager,eager_cl") from e
    seconds = time.perf_counter() - start
    print(f"  torch {name}: first step {seconds:.1f} s", flush=True)
    return seconds


def resnet_runs(names: List[str], images: np.ndarray, labels: np.ndarray, frozen: bool,
                device_type: str) -> Dict[str, Tuple[Callable, float]]:
    """``{variant: (step, first-call seconds)}`` for torchvision's ResNet-50, 10 classes, SGD momentum."""
    import torchvision  # noqa: PLC0415

    dev = torch_device()
    out = {}
    for name in names:
        v = VARIANTS[device_type][name]
        fmt = torch.channels_last if v.channels_last else torch.contiguous_format
        torch.manual_seed(0)
        net = torchvision.models.resnet50(num_classes=10).to(dev, memory_format=fmt)
        if frozen:
            for pname, p in net.named_parameters():
                p.requires_grad = pname.startswith("fc.")
        x = torch.from_numpy(images.transpose(0, 3, 1, 2).copy()).to(dev).contiguous(memory_format=fmt)
        y = torch.from_numpy(labels.astype(np.int64)).to(dev)
        opt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=0.01, momentum=0.9,
                              weight_decay=1e-4)
        fwd = torch.compile(net) if v.compile else net
        run = step(net, lambda fwd=fwd, x=x, y=y: torch.nn.functional.cross_entropy(fwd(x), y), opt, frozen, v.bf16)
        out[name] = (run, first_call(name, run))
    return out


class BertClassifier(torch.nn.Module):
    """``transformers.BertModel``, the attention-masked mean of its token states, a linear head."""

    def __init__(self, hf: dict):
        super().__init__()
        import transformers  # noqa: PLC0415

        self.bert = transformers.BertModel(transformers.BertConfig(**hf), add_pooling_layer=False)
        self.head = torch.nn.Linear(hf["hidden_size"], 2)

    def forward(self, input_ids, attention_mask, token_type_ids):
        h = self.bert(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).last_hidden_state
        m = attention_mask.unsqueeze(-1).to(h.dtype)
        return self.head((h * m).sum(1) / m.sum(1).clamp(min=1e-9))


def minilm_runs(names: List[str], batch: Dict[str, np.ndarray], hf: dict,
                device_type: str) -> Dict[str, Tuple[Callable, float]]:
    """``{variant: (step, first-call seconds)}`` for MiniLM full fine-tuning, AdamW."""
    dev = torch_device()
    t = {k: torch.from_numpy(v.astype(np.int64)).to(dev) for k, v in batch.items()}
    out = {}
    for name in for_text(names):
        v = VARIANTS[device_type][name]
        torch.manual_seed(0)
        net = BertClassifier(hf).to(dev)
        fwd = torch.compile(net) if v.compile else net
        opt = torch.optim.AdamW(net.parameters(), lr=1e-4, weight_decay=0.01)
        loss = lambda fwd=fwd: torch.nn.functional.cross_entropy(  # noqa: E731
            fwd(t["input_ids"], t["attention_mask"], t["token_type_ids"]).float(), t["label"])
        run = step(net, loss, opt, False, v.bf16)
        out[name] = (run, first_call(name, run))
    return out
