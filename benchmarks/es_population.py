"""ES population evaluated one member at a time (weights perturbed in place) against members batched per forward pass
(``population_batch``, optim/es_population.py): the time of one ES step's loss evaluations, and the largest
difference of the members' losses.

A randomly initialised Llama (``--hidden``, ``--layers``, ``--vocab``; untied output layer as in most LLMs), one
batch of ``--batch`` × ``--length`` random tokens, the mean next-token NLL as the loss, population ``--population``,
rank 1, σ = 1e-3, under ``torch.no_grad``. Each path runs ``--repeats`` times, interleaved (so a change of load on a
shared machine hits both alike); the median is reported.

    python benchmarks/es_population.py --threads 2
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from transformers import LlamaConfig, LlamaForCausalLM

from unlearnkit.optim.es import add_pair
from unlearnkit.optim.es_population import population_losses


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=8192)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--length", type=int, default=64)
    parser.add_argument("--population", type=int, default=16)
    parser.add_argument("--chunks", type=int, nargs="+", default=[4, 16])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=4 * args.hidden,
                         num_hidden_layers=args.layers, num_attention_heads=4, num_key_value_heads=4,
                         max_position_embeddings=args.length, tie_word_embeddings=False)
    model = LlamaForCausalLM(config).eval()
    params = list(model.parameters())
    ids = torch.randint(0, args.vocab, (args.batch, args.length))

    def loss() -> float:
        logits = model(input_ids=ids).logits
        return float(F.cross_entropy(logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten()))

    def sequential() -> list[float]:
        out = []
        for k in range(args.population // 2):
            add_pair(params, 7, k, 1, [1e-3] * len(params))
            out.append(loss())
            add_pair(params, 7, k, 1, [-2e-3] * len(params))
            out.append(loss())
            add_pair(params, 7, k, 1, [1e-3] * len(params))
        return out

    paths = {"one member at a time": sequential}
    for chunk in args.chunks:
        paths[f"population_batch {chunk}"] = (
            lambda c=chunk: population_losses(model, params, loss, 7, args.population, 1, 1e-3, c))
    times = {name: [] for name in paths}
    values = {}
    with torch.no_grad():
        for _ in range(args.repeats):
            for name, path in paths.items():
                start = time.perf_counter()
                values[name] = path()
                times[name].append(time.perf_counter() - start)
    reference = values["one member at a time"]
    base = statistics.median(times["one member at a time"])
    print(f"Llama hidden {args.hidden}, {args.layers} layers, vocab {args.vocab} "
          f"({sum(p.numel() for p in params) / 1e6:.1f}M parameters); batch {args.batch} x {args.length} tokens; "
          f"population {args.population}, rank 1; {args.threads} thread(s); median of {args.repeats}")
    print(f"{'path':<24} {'seconds':>8} {'speed-up':>9} {'max |Δloss|':>12}")
    for name in paths:
        seconds = statistics.median(times[name])
        diff = max(abs(a - b) for a, b in zip(values[name], reference))
        print(f"{name:<24} {seconds:>8.2f} {base / seconds:>8.2f}x {diff:>12.2e}")


if __name__ == "__main__":
    main()
