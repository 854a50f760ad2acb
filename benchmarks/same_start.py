"""Do Flax (dlfund's stack) and PyTorch train alike? The benchmark's Flax and PyTorch models from the same initial
weights, over the same batches: where their losses and test accuracies agree, a difference between the peers in
``benchmarks.run``'s table comes from the seeds (initial draws and batch order), not from the toolkits.

Run: ``.venv/bin/python -m benchmarks.same_start [--task cnn|mlp] [--seeds 0,1,2] [--epochs 1] [--train-size 12000]``
(needs PyTorch, the ``bench`` extra; about 20 s per seed for the CNN). For each seed it builds the Flax model of
``benchmarks.peers_jax`` (the model ``flax-nnx-jit`` and ``jax-jit`` train, initialized like dlfund's), copies its
weights into the PyTorch model of ``benchmarks.peers_torch`` (kernels transposed; the CNN's dense layer has its
rows permuted, since PyTorch flattens channels-first), and trains both with Adam 1e-3 in batches of 128 drawn in
one shared order. It prints the first loss (equal if the copy is right), the mean training loss, the largest
per-step difference and both test accuracies.
"""

from __future__ import annotations

import argparse

import jax.numpy as jnp
import numpy as np
import optax
import torch
import torch.nn.functional as F
from flax import nnx

from benchmarks import peers_jax, peers_torch, workloads
from benchmarks.peers import accuracy, load_data


def copy_weights(flax_model: nnx.Module, torch_model: torch.nn.Module, task: str, image_shape) -> None:
    """Flax's parameters into the PyTorch model (in place)."""
    if task == "cnn":
        h, w, _ = image_shape
        c2 = workloads.CNN_CHANNELS[1]
        dense = np.asarray(flax_model.dense.kernel[...])  # rows in (h, w, c) order; PyTorch flattens (c, h, w)
        dense = dense.reshape(h // 4, w // 4, c2, -1).transpose(2, 0, 1, 3).reshape(dense.shape)
        convs = [np.asarray(layer.kernel[...]).transpose(3, 2, 0, 1) for layer in (flax_model.conv1, flax_model.conv2)]
        kernels = [*convs, dense.T, np.asarray(flax_model.head.kernel[...]).T]  # HWIO -> OIHW; [in, out] -> [out, in]
        layers = (flax_model.conv1, flax_model.conv2, flax_model.dense, flax_model.head)
        biases = [np.asarray(layer.bias[...]) for layer in layers]
    elif task == "mlp":
        kernels = [np.asarray(layer.kernel[...]).T for layer in flax_model.layers]
        biases = [np.asarray(layer.bias[...]) for layer in flax_model.layers]
    else:
        raise ValueError(f"unknown task {task!r}; this check knows: cnn, mlp")
    targets = [m for m in torch_model.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))]
    with torch.no_grad():
        for module, kernel, bias in zip(targets, kernels, biases, strict=True):
            module.weight.copy_(torch.from_numpy(np.array(kernel)))  # a writable, contiguous copy
            module.bias.copy_(torch.from_numpy(np.array(bias)))


def compare(task: str, seed: int, epochs: int, train_size: int, test_size: int) -> dict:
    (x, y), (x_test, y_test), _ = load_data("synth", train_size, test_size)
    shape = workloads.input_shape(task, x.shape[1:])
    x, x_test = x.reshape(len(x), *shape), x_test.reshape(len(x_test), *shape)
    flax_model = peers_jax.flax_model(task, shape, seed)
    torch_model = peers_torch.torch_model(task, shape)
    copy_weights(flax_model, torch_model, task, shape)
    optimizer = nnx.Optimizer(flax_model, optax.adam(workloads.LEARNING_RATE), wrt=nnx.Param)
    torch_optimizer = torch.optim.Adam(torch_model.parameters(), lr=workloads.LEARNING_RATE)

    def to_torch(a: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(np.ascontiguousarray(a))
        return t.permute(0, 3, 1, 2).contiguous() if task == "cnn" else t

    x_torch, y_torch = to_torch(x), torch.from_numpy(y.astype(np.int64))
    rng = np.random.default_rng(seed)
    batch, flax_losses, torch_losses = workloads.BATCH, [], []
    for _ in range(epochs):
        order = rng.permutation(len(x))
        for i in range(len(x) // batch):
            idx = order[i * batch : (i + 1) * batch]
            loss = peers_jax.nnx_train_step(flax_model, optimizer, jnp.asarray(x[idx]), jnp.asarray(y[idx]))
            flax_losses.append(float(loss))
            torch_optimizer.zero_grad()
            torch_loss = F.cross_entropy(torch_model(x_torch[idx]), y_torch[idx])
            torch_loss.backward()
            torch_optimizer.step()
            torch_losses.append(torch_loss.item())
    torch_model.eval()
    with torch.no_grad():
        torch_accuracy = accuracy(lambda a: torch_model(to_torch(a)).numpy(), x_test, y_test)
    flax_accuracy = accuracy(lambda a: np.asarray(peers_jax.nnx_predict(flax_model, jnp.asarray(a))), x_test, y_test)
    steps = len(x) // batch
    return {
        "seed": seed,
        "first_loss": (flax_losses[0], torch_losses[0]),
        "last_epoch_loss": (float(np.mean(flax_losses[-steps:])), float(np.mean(torch_losses[-steps:]))),
        "max_step_difference": float(np.max(np.abs(np.subtract(flax_losses, torch_losses)))),
        "test_accuracy": (flax_accuracy, torch_accuracy),
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="cnn", choices=("cnn", "mlp"))
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default 0,1,2)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--train-size", type=int, default=12000)
    parser.add_argument("--test-size", type=int, default=10000)
    args = parser.parse_args(argv)
    print(f"{args.task}, {args.epochs} epoch(s) of {args.train_size}: Flax vs PyTorch, same start, same batches")
    print("\n| seed | first loss (Flax / PyTorch) | last-epoch loss | largest step difference | test accuracy |")
    print("|---|---|---|---|---|")
    for seed in (int(s) for s in args.seeds.split(",")):
        r = compare(args.task, seed, args.epochs, args.train_size, args.test_size)
        print(
            f"| {seed} | {r['first_loss'][0]:.5f} / {r['first_loss'][1]:.5f} | {r['last_epoch_loss'][0]:.4f} / "
            f"{r['last_epoch_loss'][1]:.4f} | {r['max_step_difference']:.4f} | {r['test_accuracy'][0]:.4f} / "
            f"{r['test_accuracy'][1]:.4f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
