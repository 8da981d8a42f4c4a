"""Quality against trial budget: what each extra Optuna trial buys, per domain.

    make bench-budget
    python bench/budget.py [--domains finance medical manufacturing] [--budgets 0 2 4 8 16 32]
                           [--manufacturing-budgets 0 2 4 8 16]

One seeded search per domain with the largest budget, in this process (no Dask: trials one at
a time). A seeded sequential search with budget B is the first B trials of a longer one (the
sampler and the pruning rule see only earlier trials), so each smaller budget is read off as a
prefix: the Pareto choice (``lepton.tasks.pareto.choose``, with the paired noise test) is made again
over the baseline, the default tree model and the first B trials, and the model chosen is scored
on the holdout with the domain's metric (smoothed, for manufacturing, as it is served).

Records per budget: the best validation score, the chosen model's validation and holdout score,
its family and single-row latency, and the cumulative search seconds. Writes
``bench/results/budget.json``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def domain_curve(domain: str, budgets: list[int]) -> list[dict]:
    from lepton.core.scoring import smoothed
    from lepton.domains import get_spec
    from lepton.tasks.families import searched
    from lepton.tasks.metrics import evaluate
    from lepton.tasks.optimise import measured, search, within_noise
    from lepton.tasks.pareto import choose
    from lepton.tasks.preprocess import load_domain_data, prepare
    from lepton.tasks.train import holdout_context, train_task

    spec = get_spec(domain)
    data = prepare(spec, *load_domain_data(spec))
    trained = train_task.fn(spec, data, "cpu")
    start = time.perf_counter()
    found = search(spec, data, max(budgets), seed=spec.split.seed)
    seconds = time.perf_counter() - start
    fitted = [m.fit_seconds for m in found]
    base = [measured(trained.baseline, data), measured(trained.default_tree, data)]
    rows = []
    for budget in sorted(budgets):
        pool = [m for m in [*base, *found[:budget]] if not m.pruned]
        choice = choose(spec, pool, [m.serving for m in pool], within_noise(spec, data, pool), searched())
        model = pool[choice.index]
        scores = smoothed(spec.smoothing_config(), model.predict(data.holdout.X), data.holdout.frame)
        holdout = evaluate(spec, data.holdout.y, scores, holdout_context(spec, data))[spec.primary_metric]
        rows.append(
            {
                "budget": budget,
                "pruned": sum(m.pruned for m in found[:budget]),
                "best_valid": abs(max(m.valid_score for m in pool)),
                "chosen_valid": abs(model.valid_score),
                "chosen_holdout": holdout,
                "family": model.family,
                "latency_ms": model.serving.latency_ms,
                "fit_seconds": sum(fitted[:budget]),
            }
        )
        print(
            f"{domain} {budget:>3} trials: best valid {rows[-1]['best_valid']:.4f}, chosen {model.family} "
            f"valid {abs(model.valid_score):.4f} holdout {holdout:.4f}, {model.serving.latency_ms:.3f} ms a row, "
            f"{rows[-1]['fit_seconds']:.1f}s of fitting ({rows[-1]['pruned']} pruned)",
            flush=True,
        )
    rows.append({"search_seconds": seconds})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--domains", nargs="+", default=["finance", "medical", "manufacturing"])
    parser.add_argument("--budgets", nargs="+", type=int, default=[0, 2, 4, 8, 16, 32])
    parser.add_argument("--manufacturing-budgets", nargs="+", type=int, default=[0, 2, 4, 8, 16])
    args = parser.parse_args()
    from bench.harness import write

    results = {
        domain: domain_curve(domain, args.manufacturing_budgets if domain == "manufacturing" else args.budgets)
        for domain in args.domains
    }
    print(write("budget", results))


if __name__ == "__main__":
    main()
