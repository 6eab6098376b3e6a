#!/usr/bin/env python3
"""cockpit-for-pytorch 1.0.2 timing baseline for ``secondo bench --monitor``.

Times SGD training steps (lr 0.01) on one of bench_torch.py's problems (``--problem
mlp|3c3d``, the same model, seed, random inputs and labels, float32, CPU, torch's default
thread count) with Cockpit tracking, against plain steps timed alternately in the same
run:

- ``plain``: ``zero_grad``, forward, ``backward()``, ``opt.step()`` on the plain
  ``nn.Sequential`` (not ``extend``ed, no Cockpit);
- ``economy/1``, ``economy/16``, ``business/1``, ..., ``full/16``: the quantities of
  ``cockpit.utils.configuration(label)``, tracked every step (``linear(1)``) or every
  16th (``linear(16)``);
- ``loss/1``, ``grad_norm/1``, ..., ``tic_trace/1``: each Cockpit quantity alone
  (secondo's instrument names for Loss, GradNorm, ..., TICTrace), every step.

A monitored step is Cockpit's documented loop on an ``extend``ed copy of the model and an
``extend``ed loss::

    opt.zero_grad(); out = model(X); loss = lossfn(out, y); losses = ind_lossfn(out, y)
    with cockpit(t, info={"batch_size", "individual_losses", "loss", "optimizer"}):
        loss.backward(create_graph=cockpit.create_graph(t))
    opt.step()

Every row gets a fresh copy of the initial model, a fresh optimizer and a fresh Cockpit,
and trains on the same batch at every step; the plain model is one copy trained
throughout the run (as ``secondo bench --monitor`` does). A row runs ``--warmup-steps``
(1) untimed monitored steps, then up to ``--repeats`` timed rounds (``--single-repeats``
for the single-quantity rows), each round a block of consecutive monitored steps and then
a block of plain steps:

- every-16th rows: blocks of ``--block`` (``--steps``, 16) steps, rounded up to a multiple
  of 16, so that every block holds the same tracked steps (one start and one end point of
  the two-step quantities Alpha and UpdateSize, one step of each other quantity);
- every-step rows and the plain blocks: ``--block`` steps, or fewer where those would take
  longer than ``--max-block-s`` (judged from the steps timed so far), so that rows whose
  steps take seconds (``full/1``, HessMaxEV on 3c3d) still get several rounds.

``ms`` is the median over the rounds of the monitored block's time per step, ``plain_ms``
the same for the plain blocks interleaved with it, ``ratio`` = ``ms / plain_ms``. A row
stops early, after at least ``--min-repeats`` (3) rounds, once its rounds have taken
``--max-row-s`` seconds; ``repeats`` and ``steps`` in each row say how many rounds and
monitored steps it got.

Cockpit keeps every tracked value per step in each quantity's ``output`` dict (numpy
copies, made inside the timed steps, so that cost is measured). ``get_output`` is never
called in a timed block: after the first timed block it is called once (untimed) to check
that every quantity produced values, and after every timed block each quantity's
``output`` is emptied (untimed), so memory stays flat however many rounds run.

Output: one JSON object on stdout::

    {"problem": "mlp", "batch": 128, "threads": 2,
     "versions": {"torch": ..., "backpack": ..., "cockpit": ..., "python": ...},
     "block": 16, "lr": 0.01, "plain_ms": <median plain step over all rows>,
     "rows": {"economy/1": {"ms": ..., "ratio": ..., "plain_ms": ..., "repeats": ...,
                            "steps": ...}, ...},
     "skipped": {row: "failed: ..."}}

Rows that fail are left out of ``rows`` and listed in ``skipped``. Progress goes to stderr.
If Cockpit (or BackPACK, or torch) cannot be imported the script exits 1 with a one-line
message on stderr.

Usage::

    .venv/bin/python scripts/reference/bench_cockpit.py                  # mlp, every row
    .venv/bin/python scripts/reference/bench_cockpit.py --problem 3c3d
    .venv/bin/python scripts/reference/bench_cockpit.py --only economy/1,alpha
    .venv/bin/python scripts/reference/bench_cockpit.py --only full --repeats 5

``--only`` takes row names (``economy/16``, ``alpha/1``) or bare names (``economy`` is
both of its rows, ``alpha`` is ``alpha/1``).
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import os
import platform
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
try:
    import torch
    from torch import nn

    # bench_torch silences warnings (Cockpit's pkg_resources deprecation among them)
    from bench_torch import PROBLEMS, check_problems_json, eprint, pkg_version, timed_ms
    from common import build_model
    from make_cockpit_fixtures import KEYS  # Cockpit class -> secondo name
except Exception as e:  # one line on stderr, for secondo bench --monitor
    print(f"bench_cockpit.py: cannot import the reference side "
          f"({type(e).__name__}: {e})".replace("\n", " "), file=sys.stderr)
    sys.exit(1)

LR = 0.01
CONFIGS = ["economy", "business", "full"]
INTERVALS = [1, 16]
# secondo instrument name -> Cockpit quantity class, in secondo's order
SINGLES = {name: cls for cls, name in KEYS.items()}
BENCH_PROBLEMS = ["mlp", "3c3d"]


def all_rows() -> list[str]:
    return ([f"{c}/{k}" for c in CONFIGS for k in INTERVALS]
            + [f"{s}/1" for s in SINGLES])


def select_rows(only: str | None) -> list[str]:
    rows = all_rows()
    if only is None:
        return rows
    wanted, unknown = set(), []
    for item in (s.strip() for s in only.split(",")):
        if not item:
            continue
        hit = [r for r in rows if r == item or r.split("/")[0] == item]
        if not hit:
            unknown.append(item)
        wanted.update(hit)
    if unknown:
        raise ValueError(f"unknown rows {unknown}; rows are {', '.join(rows)} "
                         "(or a bare configuration / instrument name)")
    return [r for r in rows if r in wanted]


def import_cockpit():
    """(Cockpit, quantities, configuration, linear, extend), or exit 1 with one line."""
    try:
        from backpack import extend
        from cockpit import Cockpit, quantities
        from cockpit.utils.configuration import configuration
        from cockpit.utils.schedules import linear
    except Exception as e:  # ImportError, or pkg_resources missing with setuptools>=81
        msg = f"{type(e).__name__}: {e}".replace("\n", " ")
        eprint(f"cockpit-for-pytorch not importable ({msg})")
        sys.exit(1)
    return Cockpit, quantities, configuration, linear, extend


def make_quantities(row: str, Q, configuration, linear):
    """The quantity instances of a row and the Cockpit class names they output under."""
    name, every = row.split("/")
    sched = linear(interval=int(every))
    if name in CONFIGS:
        qs = configuration(name, track_schedule=sched)
    else:
        qs = [getattr(Q, SINGLES[name])(track_schedule=sched)]
    return qs, [type(q).__name__ for q in qs]


def check_outputs(cp, classes, steps):
    """Raise unless every quantity of the row has produced a value (untimed)."""
    got = {k for v in cp.get_output().values() for k in v}
    missing = [c for c in classes if c not in got]
    if missing:
        raise RuntimeError(f"no output from {missing} in the first {steps} steps")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--problem", default="mlp", choices=BENCH_PROBLEMS,
                    help="model and data, as bench_torch.py (default mlp)")
    ap.add_argument("--batch", type=int, default=None,
                    help="batch size (default per problem: mlp 128, 3c3d 64)")
    ap.add_argument("--only", default=None,
                    help="comma-separated rows (economy/1, alpha/1, ...) or bare names "
                         "(economy = economy/1,economy/16; alpha = alpha/1)")
    ap.add_argument("--block", "--steps", dest="block", type=int, default=16,
                    help="steps per timed block (default 16)")
    ap.add_argument("--repeats", type=int, default=None,
                    help="timed rounds per configuration row, at most (default mlp 9, "
                         "3c3d 5)")
    ap.add_argument("--single-repeats", type=int, default=None,
                    help="timed rounds per single-quantity row, at most (default mlp 7, "
                         "3c3d 5)")
    ap.add_argument("--min-repeats", type=int, default=3,
                    help="rounds a row gets even past --max-row-s (default 3)")
    ap.add_argument("--max-row-s", type=float, default=None,
                    help="stop a row's timed rounds after this many seconds, once it has "
                         "--min-repeats (default mlp 8, 3c3d 10; 0: no limit)")
    ap.add_argument("--warmup-steps", type=int, default=1,
                    help="untimed monitored steps per row before timing (default 1)")
    ap.add_argument("--max-block-s", type=float, default=None,
                    help="blocks of every-step rows and plain blocks: fewer than --block "
                         "steps where --block would take longer than this, judged from "
                         "the steps so far (default mlp 2, 3c3d 3; 0: always --block)")
    args = ap.parse_args()
    try:
        rows = select_rows(args.only)
    except ValueError as e:
        ap.error(str(e))
    if not rows:
        ap.error("--only selects no row")
    small = args.problem == "mlp"
    repeats = args.repeats if args.repeats is not None else (9 if small else 5)
    single_repeats = (args.single_repeats if args.single_repeats is not None
                      else (7 if small else 5))
    max_row_s = args.max_row_s if args.max_row_s is not None else (8.0 if small else 10.0)
    max_block_s = (args.max_block_s if args.max_block_s is not None
                   else (2.0 if small else 3.0))
    problem = PROBLEMS[args.problem]
    batch = problem["batch"] if args.batch is None else args.batch
    if batch < 2:
        ap.error("--batch must be at least 2 (Cockpit's variances divide by N - 1)")
    if args.block < 1 or repeats < 1 or single_repeats < 1 or args.min_repeats < 1:
        ap.error("--block, --repeats, --single-repeats, --min-repeats must be positive")
    if args.warmup_steps < 1:
        ap.error("--warmup-steps must be at least 1")
    check_problems_json()
    Cockpit, Q, configuration, linear, extend = import_cockpit()

    # the data exactly as bench_torch.py makes it
    torch.manual_seed(0)
    model0 = build_model(problem["spec"])
    X = torch.randn(batch, *problem["input_shape"])
    if args.problem == "mlp":
        y = torch.randint(0, 10, (batch,))
    else:
        y = torch.arange(batch) % 10
    block = args.block

    def block_steps(step_ms):
        """--block steps, or fewer where they would take over --max-block-s."""
        if max_block_s <= 0:
            return block
        return max(1, min(block, int(max_block_s * 1e3 / step_ms)))

    # ------------------------------------------------------------ plain steps
    pmodel = copy.deepcopy(model0)
    plossfn = nn.CrossEntropyLoss()
    popt = torch.optim.SGD(pmodel.parameters(), lr=LR)

    def plain_block():
        for _ in range(plain_steps):
            popt.zero_grad()
            plossfn(pmodel(X), y).backward()
            popt.step()

    versions = {"torch": torch.__version__, "backpack": pkg_version("backpack-for-pytorch"),
                "cockpit": pkg_version("cockpit-for-pytorch"),
                "python": platform.python_version()}
    eprint(f"bench_cockpit: {args.problem}, batch {batch}, {torch.get_num_threads()} "
           f"threads, blocks of {block} steps, torch {versions['torch']}, backpack "
           f"{versions['backpack']}, cockpit {versions['cockpit']}")
    t_start = time.perf_counter()
    plain_steps = block
    plain_block()  # warmup of the plain model
    plain_steps = block_steps(timed_ms(plain_block) / block)

    results, skipped, all_plain = {}, {}, []
    for row in rows:
        t_row = time.perf_counter()
        model = cp = qs = opt = None
        try:
            model = extend(copy.deepcopy(model0))
            lossfn = extend(nn.CrossEntropyLoss())
            ind_lossfn = nn.CrossEntropyLoss(reduction="none")
            opt = torch.optim.SGD(model.parameters(), lr=LR)
            qs, classes = make_quantities(row, Q, configuration, linear)
            cp = Cockpit(model.parameters(), quantities=qs)
            state = {"t": 0}

            def monitored_steps(k):
                for _ in range(k):
                    t = state["t"]
                    opt.zero_grad()
                    out = model(X)
                    loss = lossfn(out, y)
                    losses = ind_lossfn(out, y)
                    with cp(t, info={"batch_size": batch, "individual_losses": losses,
                                     "loss": loss, "optimizer": opt}):
                        loss.backward(create_graph=cp.create_graph(t))
                    opt.step()
                    state["t"] = t + 1

            def reset_outputs():
                for q in cp.quantities:
                    q.output.clear()
                cp.output.clear()

            every = int(row.split("/")[1])

            # warmup: step 0 untimed (tracked by every schedule)
            warm = [timed_ms(lambda: monitored_steps(1)) for _ in range(args.warmup_steps)]
            reset_outputs()
            # every-16th rows: whole multiples of 16 steps, the same tracked steps per block
            steps = -(-block // every) * every if every > 1 else block_steps(warm[-1])
            reps = repeats if row.split("/")[0] in CONFIGS else single_repeats
            mon, base, used = [], [], []
            t_timed = time.perf_counter()
            for r in range(reps):
                mon.append(timed_ms(lambda: monitored_steps(steps)) / steps)
                used.append(steps)
                if r == 0:  # untimed: every quantity produced values
                    check_outputs(cp, classes, state["t"])
                reset_outputs()
                base.append(timed_ms(plain_block) / plain_steps)
                if every == 1:
                    steps = block_steps(statistics.median(mon))
                if (max_row_s > 0 and r + 1 >= args.min_repeats
                        and time.perf_counter() - t_timed > max_row_s):
                    break
            ms, pms = statistics.median(mon), statistics.median(base)
            results[row] = {"ms": round(ms, 4), "ratio": round(ms / pms, 4),
                            "plain_ms": round(pms, 4), "repeats": len(mon),
                            "steps": sum(used)}
            all_plain += base
            eprint(f"{row}: {ms:.3f} ms/step, plain {pms:.3f} ms/step, ratio "
                   f"{ms / pms:.2f} ({len(mon)} rounds, {sum(used)} monitored steps, "
                   f"{time.perf_counter() - t_row:.1f} s)")
        except Exception as e:  # report and leave out
            msg = f"failed: {type(e).__name__}: {e}".replace("\n", " ")
            eprint(f"{row}: {msg}")
            skipped[row] = msg
        finally:
            if model is not None:
                for p in model.parameters():  # break create_graph's reference cycles
                    p.grad = None
            model = cp = qs = opt = None
            gc.collect()

    out = {
        "problem": args.problem,
        "batch": batch,
        "threads": torch.get_num_threads(),
        "versions": versions,
        "block": block,
        "lr": LR,
        "plain_ms": round(statistics.median(all_plain), 4) if all_plain else None,
        "rows": results,
        "skipped": skipped,
    }
    eprint(f"bench_cockpit: {len(results)} rows in {time.perf_counter() - t_start:.0f} s")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
