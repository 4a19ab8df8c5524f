"""A character-level language model on a text the package ships (examples/data/sentences.txt,
4 KB of sentences from a small grammar), trained by a gradc train step: each next character is
predicted from the K characters before it through an embedding table and a concatenated
context window.

    e      = E[tokens]                                 [N, K] ids -> [N, K, D]  (a gather)
    ctx    = concatenate([e[:, 0], …, e[:, K−1]], 1)   [N, K·D]   the context window
    h      = tanh(ctx·W1 + b1)                          [N, H]
    scores = h·W2 + b2                                  [N, V]
    L      = −(1/N) Σ_i log softmax(scores_i)[y_i] + ½·reg·(ΣW1² + ΣW2²)

The gradient of E is a scatter-add of dE's rows into the rows the tokens name (the gather's
gate rule, compiler/ops/array.py), so a character seen twice in a window gets both
contributions.  Every line of the text starts after K newlines of context; sampling starts
there and draws characters from softmax(scores / temperature) until a newline.  The batch
dimension is symbolic (i64["N", K]): the training batches and the sampler's few lines at a
time run one compiled step and one compiled evaluation.

Run it:  python examples/char_model.py [--steps 600] [--backend llvm] [--samples 4]
         (prints the loss, the unigram entropy a model without context reaches, and sampled
         lines; exits 1 if the final loss is not below that entropy; a few seconds on 2 cores)
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass

import numpy as np

import compiler
from frontends import dsl
from frontends.dsl import i64

TEXT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "sentences.txt")
K, D, H = 4, 12, 96         # context length, embedding width, hidden units
BATCH = 128
REG = 1e-4


def load(path: str = TEXT):
    """(text, alphabet): the text with K newlines before every line, its sorted characters."""
    with open(path, encoding="utf-8") as f:
        lines = [ln for ln in f.read().split("\n") if ln]
    text = "".join("\n" * K + ln for ln in lines) + "\n"
    return text, sorted(set(text))


def windows(text: str, alphabet: list):
    """(contexts i64[M, K], next characters i64[M]) for every position after a full context."""
    ids = np.array([alphabet.index(c) for c in text], dtype=np.int64)
    at = np.arange(K, len(ids))
    return ids[at[:, None] - K + np.arange(K)], ids[at]


def char_model(E, W1, b1, W2, b2, tokens, y, reg=REG):
    """The loss (and the scores, for sampling) of the next character after `tokens`."""
    e = E[tokens]
    ctx = dsl.concatenate([e[:, k] for k in range(K)], axis=1)
    h = dsl.tanh(ctx @ W1 + b1)
    scores = h @ W2 + b2
    loss = dsl.softmax_cross_entropy(scores, y) + 0.5 * reg * (dsl.sum(W1 * W1)
                                                               + dsl.sum(W2 * W2))
    return {"loss": loss, "scores": scores}


def init_params(v: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {"E": rng.standard_normal((v, D)) * 0.5,
            "W1": rng.standard_normal((K * D, H)) / np.sqrt(K * D), "b1": np.zeros(H),
            "W2": rng.standard_normal((H, v)) * 0.01, "b2": np.zeros(v)}


def unigram_entropy(y: np.ndarray, v: int) -> float:
    """The cross entropy (nats) of the best model that ignores the context."""
    p = np.bincount(y, minlength=v) / len(y)
    p = p[p > 0]
    return float(-np.sum(p * np.log(p)))


@dataclass
class Run:
    step: object
    alphabet: list
    losses: list
    contexts: np.ndarray
    targets: np.ndarray


def train(steps: int = 600, lr: float = 1e-2, seed: int = 0, backend: str = "numpy",
          every: int = 100, log=print) -> Run:
    text, alphabet = load()
    ctx, y = windows(text, alphabet)
    v = len(alphabet)
    opt = compiler.optim.Adam(lr=lr, schedule=compiler.optim.Cosine(steps, final=0.05))
    step = compiler.train_step(char_model, params=init_params(v, seed),
                               inputs={"tokens": i64["N", K], "y": i64["N"]},
                               optimizer=opt, backend=backend, seed=seed)
    rng = np.random.default_rng(seed + 1)
    losses = []
    for t in range(steps):
        ix = rng.integers(0, len(y), BATCH)
        losses.append(float(step(tokens=ctx[ix], y=y[ix])))
        if t % every == 0 or t == steps - 1:
            log(f"step {t:5d}  loss {np.mean(losses[-every:]):.4f}")
    return Run(step, alphabet, losses, ctx, y)


def sample(run: Run, lines: int = 4, temperature: float = 0.7, seed: int = 0,
           length: int = 80) -> list:
    """`lines` lines drawn from the model, all at once (one evaluation per character)."""
    rng = np.random.default_rng(seed)
    nl = run.alphabet.index("\n")
    ctx = np.full((lines, K), nl, dtype=np.int64)
    out = [[] for _ in range(lines)]
    done = np.zeros(lines, dtype=bool)
    for _ in range(length):
        scores = run.step.evaluate(tokens=ctx, y=np.zeros(lines, dtype=np.int64))["scores"]
        z = scores / temperature
        p = np.exp(z - z.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        nxt = np.array([rng.choice(len(run.alphabet), p=row) for row in p])
        for i, c in enumerate(nxt):
            if not done[i]:
                done[i] = c == nl
                if not done[i]:
                    out[i].append(run.alphabet[c])
        if done.all():
            break
        ctx = np.concatenate([ctx[:, 1:], nxt[:, None]], axis=1)
    return ["".join(chars) for chars in out]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--backend", default="numpy")
    parser.add_argument("--every", type=int, default=100)
    parser.add_argument("--samples", type=int, default=4)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    run = train(args.steps, args.lr, args.seed, args.backend, args.every)
    elapsed = time.perf_counter() - start
    final = float(np.mean(run.losses[-50:]))
    base = unigram_entropy(run.targets, len(run.alphabet))
    print(f"{len(run.targets)} windows of {K} characters, alphabet of {len(run.alphabet)}; "
          f"final loss {final:.4f} nats (unigram entropy {base:.4f}; {elapsed:.1f} s)")
    for line in sample(run, args.samples, seed=args.seed):
        print(f"  sample: {line}")
    if not final < base:
        print(f"FAIL: the final loss {final:.4f} is not below the unigram entropy {base:.4f}",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
