"""The PyTorch peers of ``benchmarks/run.py``: ``torch-eager`` and ``torch-compile`` (``torch.compile`` of the model;
loss, backward and the optimizer step stay eager, the common usage), on the GPU when PyTorch sees one, else on CPU.
``precision="bfloat16"`` runs the forward pass and the loss under ``torch.autocast`` (bfloat16 compute, float32
weights and Adam state: PyTorch's mixed-precision recipe; bfloat16 needs no loss scaling).

The models mirror dlfund's: LeCun-normal (truncated) kernels and zero biases instead of PyTorch's Kaiming-uniform
defaults, the LSTM's forget-gate bias at 1 and orthogonal recurrent kernels, LayerNorm epsilon 1e-6, tanh GELU,
pre-norm encoder blocks. Images are NHWC in the data and NCHW for ``Conv2d``: the transpose happens once per call,
inside the timed region. Batches are index gathers from the whole training tensor (a ``DataLoader`` over a
``TensorDataset`` collates example by example and would be slower). Adam runs with ``fused=True`` (one kernel for
all parameters; up to 1.5x faster than the default per-tensor update on CPU) when this PyTorch supports it.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from benchmarks import workloads


def lecun_normal_(weight: torch.Tensor, fan_in: int) -> None:
    # Flax's lecun_normal: a normal truncated at 2 standard deviations, rescaled to variance 1 / fan_in.
    std = math.sqrt(1.0 / fan_in) / 0.87962566103423978
    nn.init.trunc_normal_(weight, 0.0, std, -2 * std, 2 * std)


class LSTMClassifier(nn.Module):
    def __init__(self, features: int):
        super().__init__()
        h = workloads.LSTM_HIDDEN
        self.lstm = nn.LSTM(features, h, batch_first=True)
        self.head = nn.Linear(h, workloads.NUM_CLASSES)
        with torch.no_grad():
            lecun_normal_(self.lstm.weight_ih_l0, features)
            for gate in self.lstm.weight_hh_l0.view(4, h, h):  # gates [i, f, g, o], as Flax's
                nn.init.orthogonal_(gate)
            self.lstm.bias_ih_l0.zero_()
            self.lstm.bias_ih_l0[h : 2 * h] = 1.0  # forget gate open at the start
            self.lstm.bias_hh_l0.zero_()  # PyTorch keeps two biases per gate; Flax one

    def forward(self, x):
        _, (h, _) = self.lstm(x)
        return self.head(h[-1])


def gelu_tanh(x):
    return F.gelu(x, approximate="tanh")


class TransformerClassifier(nn.Module):
    def __init__(self, steps: int, features: int):
        super().__init__()
        t = workloads.TRANSFORMER
        eps = workloads.LAYER_NORM_EPSILON
        self.embed = nn.Linear(features, t["width"])
        self.register_buffer("positions", torch.from_numpy(workloads.sinusoidal_positions(steps, t["width"])))
        layer = nn.TransformerEncoderLayer(
            t["width"],
            t["heads"],
            t["mlp"],
            dropout=0.0,
            activation=gelu_tanh,
            layer_norm_eps=eps,
            batch_first=True,
            norm_first=True,
        )
        self.encoder = nn.TransformerEncoder(layer, t["depth"], enable_nested_tensor=False)
        self.norm = nn.LayerNorm(t["width"], eps=eps)
        self.head = nn.Linear(t["width"], workloads.NUM_CLASSES)

    def forward(self, x):
        h = self.encoder(self.embed(x) + self.positions)
        return self.head(self.norm(h).mean(dim=1))


def torch_model(task: str, shape: tuple[int, ...]) -> nn.Module:
    classes = workloads.NUM_CLASSES
    if task == "mlp":
        widths = (shape[0], *workloads.MLP_HIDDEN)
        layers: list[nn.Module] = []
        for a, b in itertools.pairwise(widths):
            layers += [nn.Linear(a, b), nn.ReLU()]
        model = nn.Sequential(*layers, nn.Linear(widths[-1], classes))
    elif task == "cnn":
        h, w, c = shape
        c1, c2 = workloads.CNN_CHANNELS
        model = nn.Sequential(
            nn.Conv2d(c, c1, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear((h // 4) * (w // 4) * c2, workloads.CNN_DENSE),
            nn.ReLU(),
            nn.Linear(workloads.CNN_DENSE, classes),
        )
    elif task == "lstm":
        return LSTMClassifier(shape[1])
    else:
        model = TransformerClassifier(shape[0], shape[1])
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Linear, nn.Conv2d)):
                lecun_normal_(module.weight, math.prod(module.weight.shape[1:]))
                module.bias.zero_()
            elif isinstance(module, nn.MultiheadAttention):
                lecun_normal_(module.in_proj_weight, module.embed_dim)  # q, k, v stacked: [3 d, d]
                module.in_proj_bias.zero_()
    return model


def adam(params) -> tuple[torch.optim.Optimizer, str]:
    try:
        return torch.optim.Adam(params, lr=workloads.LEARNING_RATE, fused=True), "Adam(fused=True)"
    except (RuntimeError, TypeError, ValueError):  # an older PyTorch without a fused CPU Adam
        return torch.optim.Adam(params, lr=workloads.LEARNING_RATE), "Adam (default, no fused CPU kernel)"


def where() -> tuple[torch.device, str]:
    """The device the peers train on and its name for the table's notes."""
    if torch.cuda.is_available():
        # PyTorch's float32 matmuls default to full float32 ("highest"; its cuDNN convolutions allow TF32), JAX's
        # to TF32 on recent NVIDIA GPUs: the tables compare the defaults a user meets, and say this one
        matmuls = torch.get_float32_matmul_precision()
        return torch.device("cuda"), f"{torch.cuda.get_device_name()}, float32 matmul precision {matmuls}"
    return torch.device("cpu"), f"CPU, {torch.get_num_threads()} threads"


def _train(task, train, epochs, seed, precision, compile_model: bool):
    torch.manual_seed(seed)
    device, device_name = where()
    x = torch.from_numpy(train[0])
    if task == "cnn":
        x = x.permute(0, 3, 1, 2).contiguous()  # NHWC -> NCHW
    x = x.to(device)  # the whole training set on the device once, as the JAX peers' device_put
    y = torch.from_numpy(train[1].astype(np.int64)).to(device)
    model = torch_model(task, tuple(train[0].shape[1:])).to(device)
    optimizer, which = adam(list(model.parameters()))
    forward = torch.compile(model) if compile_model else model
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bfloat16")
    model.train()
    generator = torch.Generator().manual_seed(seed)
    batch = workloads.BATCH
    steps = len(x) // batch
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=generator).to(device)
        total = torch.zeros((), device=device)
        for i in range(steps):
            idx = order[i * batch : (i + 1) * batch]
            optimizer.zero_grad(set_to_none=True)
            with autocast:
                loss = F.cross_entropy(forward(x[idx]), y[idx])
            loss.backward()
            optimizer.step()
            total += loss.detach()  # no .item() per step: on a GPU it would wait for every step
    final_loss = (total / steps).item()  # waits for the device: the timed call ends with the loss on the host
    model.eval()

    @torch.no_grad()
    def predict(xt):
        xt = torch.from_numpy(np.ascontiguousarray(xt)).to(device)
        if task == "cnn":
            xt = xt.permute(0, 3, 1, 2).contiguous()
        with autocast:
            return model(xt).float().cpu().numpy()

    return final_loss, predict, [f"{which}, {device_name}"]


def train_torch_eager(task, train, epochs, seed, precision="float32"):
    return _train(task, train, epochs, seed, precision, compile_model=False)


def train_torch_compile(task, train, epochs, seed, precision="float32"):
    return _train(task, train, epochs, seed, precision, compile_model=True)
