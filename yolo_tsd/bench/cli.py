"""``python -m yolo_tsd.bench`` (also ``yolo-tsd bench``): the benchmark and its reports, the overhead and scale checks.

``main`` is registered as the ``bench`` command of ``yolo-tsd`` (entry point group ``yolo_tsd.commands``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ..cli import exit_status, parse
from ..errors import UsageError
from .variants import BUILTIN_DIS, VARIANTS

USAGE = """Benchmark: python -m yolo_tsd.bench [report|ranking|overhead|scalecheck] [key=value ...]  (or yolo-tsd bench)

  regime=shapes            one of the built-in regimes (data generated offline, teacher trained once into the cache):
{regimes}
  data=PATH teacher=PATH   your own dataset yaml and teacher instead of a regime (Ultralytics' training defaults)
  regime=R teacher=PATH    the regime's data and student recipe with another teacher (same classes), e.g. another
                           split's, or one trained longer; the regime's own teacher is then not trained
  seeds=0,1,2              seeds; every variant runs with each (seed=<seed>, deterministic=True, plots=False)
  variants=a,b,...         subset of: {variants}
                           a variant may carry its own settings after colons, to tune or compare in one table:
                           builtin:dis=2 (the built-in's weight), tsd:lambda_feat=0.5:weak_mode=abs (this method's)
  project=PATH             output folder (default runs/tsd_bench/<regime>; re-run the same command to resume)
  tsd=PATH tsd_<key>=V     this method's settings for all its variants (an ablation's own setting wins)
  dis=X                    Ultralytics' built-in distillation weight for the builtin variant (default {dis}: tuned on
                           the tuning regime like this method's weights; Ultralytics' own default is 6.0)
  unlabeled=PATH           with data=: images without labels for the pool variants (tsd_pool: this method with
                           unlabeled=; pseudo / tsd_pseudo: the pool labeled by the teacher, then trained on); a regime
                           brings its own pool, 4x its labeled set
  pseudo_conf=0.25         the least confidence of a teacher's box kept as a pseudo label (predict's default)
  any yolo train key       applies to every variant (e.g. epochs=2 for a quick check)
  report project=PATH      summarise the finished runs of a benchmark folder (all, or variants=/seeds=) without training
  ranking project=PATH     AP at IoU 0.5 / 0.75 / 0.9 and how well each run's scores rank its own boxes (score-IoU
                           rank correlation), from every finished run's best.pt (device=0 on a GPU)
  overhead regime=R        time one training step of plain, built-in and tsd (forward and backward) on the regime's
                           data instead of training
  scalecheck memory|flops  what a COCO-scale step costs on the CPU (python -m yolo_tsd.bench scalecheck for its keys)
"""


def usage() -> str:
    """The help text, with the regimes and variants filled in."""
    from .regimes import describe

    return USAGE.format(variants=", ".join(VARIANTS), regimes=describe(), dis=BUILTIN_DIS)


def report(command: str, argv: list[str]) -> None:
    """``report`` or ``ranking``: read the finished runs of a benchmark folder, train nothing."""
    from .runner import as_list, as_seeds, write_ranking, write_summary

    args = parse(argv)[1]
    if not args.get("project") or not (Path(args["project"]) / "runs").is_dir():
        raise UsageError(f"{command} needs project=PATH, the folder of a benchmark (it holds runs/)")
    out = Path(args["project"]).resolve()
    if command == "ranking":
        write_ranking(out, str(args.get("device", "cpu")))
        return
    variants = as_list(args["variants"]) if args.get("variants") else None
    seeds = as_seeds(args["seeds"]) if args.get("seeds") is not None else None
    write_summary(out, f"Benchmark {out.name} (report of the finished runs)", variants, seeds)


def main(argv: list[str]) -> None:
    """Run one of the lab's commands; a refused input raises ``UsageError``."""
    if argv[:1] == ["_one"]:  # the per-(variant, seed) worker the runner starts
        from .job import finish

        finish(json.loads(argv[1]))
        return
    if argv[:1] in (["report"], ["ranking"]):
        report(argv[0], argv[1:])
        return
    if argv[:1] == ["overhead"]:
        from .overhead import run_overhead

        run_overhead(**parse(argv[1:])[1])
        return
    if argv[:1] == ["scalecheck"]:
        from .scalecheck import main as scalecheck

        scalecheck(argv[1:])
        return
    command, overrides = parse(argv)
    if command == "help":
        print(usage())
        return
    from .runner import run

    run(**overrides)


def entrypoint(argv: list[str] | None = None) -> int:
    """``python -m yolo_tsd.bench``: ``main()`` with a refused input printed as one line and exit status 2."""
    return exit_status(lambda: main(sys.argv[1:] if argv is None else argv))
