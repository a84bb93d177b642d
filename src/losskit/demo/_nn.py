"""A tiny multilayer perceptron and Adam, written with NumPy only.

The training loops in this demo never use an autodiff framework: losskit returns the gradient
of the loss with respect to the model's outputs in closed form (``loss.grad`` /
``loss.value_and_grad``) and :meth:`MLP.backward` carries it through the layers by the chain
rule.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class MLP:
    """``sizes = [d_in, h_1, ..., d_out]``; tanh between layers, linear output.
    ``sizes = [d_in, d_out]`` is a linear model."""

    sizes: list[int]
    rng: np.random.Generator
    weights: list[np.ndarray] = field(init=False)
    biases: list[np.ndarray] = field(init=False)

    def __post_init__(self):
        self.weights, self.biases = [], []
        for fan_in, fan_out in zip(self.sizes[:-1], self.sizes[1:]):
            # Glorot-uniform initialisation
            bound = np.sqrt(6.0 / (fan_in + fan_out))
            self.weights.append(self.rng.uniform(-bound, bound, size=(fan_in, fan_out)))
            self.biases.append(np.zeros(fan_out))

    @property
    def params(self) -> list[np.ndarray]:
        return [*self.weights, *self.biases]

    def forward(self, x: np.ndarray, keep: bool = False):
        """Outputs of the last layer; with ``keep=True`` also the activations for backward."""
        acts = [x]
        h = x
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            h = h @ w
            h += b
            if i < last:
                np.tanh(h, out=h)
            acts.append(h)
        return (h, acts) if keep else h

    def backward(self, acts: list[np.ndarray], d_out: np.ndarray) -> list[np.ndarray]:
        """Gradients of the loss w.r.t. ``params`` given ``d_out`` = d loss / d outputs."""
        gw, gb = [None] * len(self.weights), [None] * len(self.biases)
        d = d_out
        for i in range(len(self.weights) - 1, -1, -1):
            gw[i] = acts[i].T @ d
            gb[i] = d.sum(axis=0)
            if i > 0:
                h = acts[i]  # tanh output of layer i-1: tanh' = 1 - h²
                d = d @ self.weights[i].T
                d -= d * h * h
        return [*gw, *gb]


class Adam:
    """Adam (Kingma & Ba, 2015) with an optional cosine learning-rate decay to 5 %."""

    def __init__(self, params, lr=1e-2, steps=None, beta1=0.9, beta2=0.999, eps=1e-8):
        self.params, self.lr, self.steps = params, lr, steps
        self.b1, self.b2, self.eps = beta1, beta2, eps
        self.m = [np.zeros_like(p) for p in params]
        self.v = [np.zeros_like(p) for p in params]
        self.t = 0

    def step(self, grads):
        self.t += 1
        lr = self.lr
        if self.steps:
            frac = min(self.t / self.steps, 1.0)
            lr = self.lr * (0.05 + 0.95 * 0.5 * (1.0 + np.cos(np.pi * frac)))
        c1, c2 = 1.0 - self.b1**self.t, 1.0 - self.b2**self.t
        for p, g, m, v in zip(self.params, grads, self.m, self.v):
            m *= self.b1
            m += (1.0 - self.b1) * g
            v *= self.b2
            v += (1.0 - self.b2) * g * g
            p -= lr * (m / c1) / (np.sqrt(v / c2) + self.eps)  # in place: the model sees it


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def sigmoid(z: np.ndarray) -> np.ndarray:
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0, e) / (1.0 + e)


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = 15):
    """ECE with equal-width confidence bins (Guo et al., 2017), plus the per-bin table
    ``(confidence, accuracy, count)`` for a reliability diagram."""
    conf = probs.max(axis=-1)
    correct = (probs.argmax(axis=-1) == labels).astype(float)
    edges = np.linspace(0.0, 1.0, bins + 1)
    idx = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, bins - 1)
    table = []
    ece = 0.0
    for b in range(bins):
        sel = idx == b
        n = int(sel.sum())
        if n == 0:
            table.append((float((edges[b] + edges[b + 1]) / 2), float("nan"), 0))
            continue
        c, a = float(conf[sel].mean()), float(correct[sel].mean())
        ece += n / len(conf) * abs(a - c)
        table.append((c, a, n))
    return float(ece), table
