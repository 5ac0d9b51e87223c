"""The benchmark runner at toy scale: every output, the comparisons, and resuming instead of starting over."""

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from yolo_tsd.bench.cli import main
from yolo_tsd.bench.job import per_step
from yolo_tsd.bench.runner import as_list
from yolo_tsd.bench.summary import paired_interval, summarise, table
from yolo_tsd.bench.variants import VARIANTS
from yolo_tsd.cli import parse


def test_bench_runs_resumes_and_summarises(data_yaml, teacher_pt, tmp_path, capsys):
    args = [
        f"data={data_yaml}",
        f"teacher={teacher_pt}",
        "epochs=2",
        "imgsz=64",
        "batch=8",
        "seeds=0",
        "variants=plain,builtin,tsd",
        f"project={tmp_path}",
        "tsd_lambda_cls=0.25",  # this method's setting: must reach its variants only (plain/built-in would refuse it)
    ]
    main(args)
    runs = sorted(p.name for p in (tmp_path / "runs").glob("*.json"))
    assert runs == ["builtin-s0.json", "plain-s0.json", "tsd-s0.json"]
    result = json.loads((tmp_path / "runs" / "tsd-s0.json").read_text())
    assert result["step_s"] > 0 and result["teacher_s"] > 0 and result["terms_s"] > 0 and result["peak_mb"] > 100
    assert result["epoch_s"] >= result["step_s"]  # one pass over the training images, timed after the first
    assert 0 < result["grad_share"] < 1 and len(result["grad_share_per_epoch"]) == 2  # probed every epoch
    assert len(result["trust_per_epoch"]) == 2 and all(0 < t <= 1 for t in result["trust_per_epoch"])
    settings = result["job"]["settings"]  # every setting it trained with, defaults included, not only those given
    assert settings["lambda_cls"] == 0.25 and settings["trust"] == "quality" and settings["lambda_feat"] == 1.0
    assert json.loads((tmp_path / "runs" / "plain-s0.json").read_text())["teacher_s"] == 0
    assert json.loads((tmp_path / "runs" / "builtin-s0.json").read_text())["teacher_s"] > 0  # timed by hooks
    summary = (tmp_path / "summary.md").read_text()
    assert "settings: {'tsd_lambda_cls': 0.25}" in summary  # applied to this method's variants only
    assert "| tsd | 1 |" in summary and "| builtin | 1 |" in summary and "step × built-in" in summary
    rows = list(csv.DictReader((tmp_path / "summary.csv").open()))
    assert {r["variant"] for r in rows} == {"plain", "builtin", "tsd"}
    assert float(next(r for r in rows if r["variant"] == "builtin")["time_x_builtin"]) == 1.0
    assert (tmp_path / "summary.png").stat().st_size > 5000
    (tmp_path / "runs" / "plain-s0.json").unlink()  # as if interrupted before plain finished
    capsys.readouterr()
    main(args)
    out = capsys.readouterr().out
    assert "tsd-s0.json done, skipping" in out and "builtin-s0.json done, skipping" in out
    assert "plain-s0.json done" not in out and (tmp_path / "runs" / "plain-s0.json").is_file()
    with pytest.raises(ValueError, match="new project="):  # other settings never mix into finished results
        main([a for a in args if not a.startswith("tsd_")] + ["tsd_lambda_cls=2.0"])
    (tmp_path / "summary.md").unlink()
    main(["report", f"project={tmp_path}", "variants=tsd,plain"])  # summarises what is done, trains nothing
    report = (tmp_path / "summary.md").read_text()
    assert "| tsd | 1 |" in report and "| plain | 1 |" in report and "| builtin |" not in report
    tsd_map = json.loads((tmp_path / "runs" / "tsd-s0.json").read_text())["mAP50-95"]
    assert f"| tsd | {tsd_map:.4f} |" in report  # the per-seed table
    with pytest.raises(ValueError, match="needs project="):
        main(["report", f"project={tmp_path / 'nothing'}"])


def test_pool_variants_train_on_the_pool_and_on_the_teachers_labels(data_yaml, teacher_pt, tmp_path):
    pool = tmp_path / "pool"  # the training images without labels: the images the test teacher detects confidently
    shutil.copytree(data_yaml.parent / "images" / "train", pool)
    base = [f"data={data_yaml}", f"teacher={teacher_pt}", "epochs=1", "imgsz=64", "batch=8", "seeds=0"]
    with pytest.raises(ValueError, match="unlabeled=path/to/images"):  # before any training
        main([*base, "variants=pseudo", f"project={tmp_path / 'none'}"])
    # the test teacher is weak (object confidence ~1e-2): a low threshold gives it labels to write
    main([*base, f"unlabeled={pool}", "pseudo_conf=0.001", "variants=pseudo,tsd_pool", f"project={tmp_path}"])
    pseudo = json.loads((tmp_path / "runs" / "pseudo-s0.json").read_text())
    spec = yaml.safe_load(Path(pseudo["job"]["train"]["data"]).read_text())
    pool_files = sorted(p.name for p in pool.iterdir())
    pseudo_dir, labeled_dir = (Path(t) for t in spec["train"])
    assert len(list(labeled_dir.iterdir())) == len(pool_files) == 16
    assert sorted(p.name for p in pseudo_dir.iterdir()) == pool_files
    labels = [(pseudo_dir.parent / "labels" / f"{Path(f).stem}.txt").read_text().split("\n") for f in pool_files]
    rows = [list(map(float, r.split())) for lines in labels for r in lines if r]
    assert len(rows) == spec["pseudo_boxes"] > 0 and all(0 <= r[0] < 5 and 0 < min(r[1:]) for r in rows)
    trained = yaml.safe_load((Path(pseudo["save_dir"]) / "args.yaml").read_text())
    assert pseudo["job"]["tsd"] == {} and trained["data"] == pseudo["job"]["train"]["data"]  # plain, on that set
    ours = json.loads((tmp_path / "runs" / "tsd_pool-s0.json").read_text())
    assert ours["job"]["tsd"] == {"unlabeled": str(pool)} and ours["job"]["train"]["data"] == str(data_yaml)
    args = yaml.safe_load((Path(ours["save_dir"]) / "args.yaml").read_text())
    assert args["unlabeled"] == [str(pool)]  # the run trained with the pool
    assert "unlabeled pool" in (tmp_path / "summary.md").read_text()


def test_a_setting_added_since_at_its_default_does_not_invalidate_finished_runs(tmp_path):
    from yolo_tsd.bench.runner import check_same_job
    from yolo_tsd.config import TSDConfig

    settings = TSDConfig().to_dict()
    job = {"regime": "r", "train": {"epochs": 1}, "teacher": "t.pt", "tsd": {}, "settings": settings, "dis": None}
    older = {**settings}
    del older["unlabeled_det"]  # measured before the setting existed
    done = tmp_path / "tsd-s0.json"
    done.write_text(json.dumps({"job": {**job, "settings": older}}))
    check_same_job(done, job)  # the same run
    with pytest.raises(ValueError, match="new project="):  # the new setting away from its default: another run
        check_same_job(done, {**job, "settings": {**settings, "unlabeled_det": 2.0}})
    with pytest.raises(ValueError, match="new project="):
        check_same_job(done, {**job, "settings": {**settings, "lambda_cls": 2.0}})


def test_command_line_lists():
    """``seeds=0,1,2`` reaches the runner as a tuple (Ultralytics' value parsing), ``seeds=0`` as an int."""
    _, overrides = parse(["seeds=0,1,2", "variants=plain,tsd", "project=x"])
    assert as_list(overrides["seeds"]) == ["0", "1", "2"] and as_list(overrides["variants"]) == ["plain", "tsd"]
    assert as_list(parse(["seeds=0"])[1]["seeds"]) == ["0"]


def test_paired_differences_intervals_and_ratios():
    results = [
        {
            "variant": v,
            "seed": s,
            "mAP50-95": m,
            "mAP50": m,
            "step_s": t,
            "peak_mb": 1.0,
            "teacher_s": 0.5 * t,
            "terms_s": 0.1 * t,
        }
        for v, s, m, t in [
            ("plain", 0, 0.20, 1.0),
            ("plain", 1, 0.30, 1.0),
            ("plain", 2, 0.25, 1.0),
            ("builtin", 0, 0.21, 2.0),
            ("builtin", 1, 0.31, 2.0),
            ("builtin", 2, 0.27, 2.0),
            ("tsd", 0, 0.25, 2.2),
            ("tsd", 1, 0.33, 2.2),
            ("tsd", 2, 0.29, 2.2),
        ]
    ]
    rows = summarise(results, ["plain", "builtin", "tsd"])
    tsd = next(r for r in rows if r["variant"] == "tsd")
    # paired differences in points: plain 5, 3, 4 -> mean 4, sd 1, t(0.975, 2) = 4.303: 4 ± 2.484
    assert abs(tsd["d_plain"] - 4.0) < 1e-9
    assert abs(tsd["d_plain_lo"] - (4 - 4.303 / 3**0.5)) < 1e-6 and abs(tsd["d_plain_hi"] - (4 + 4.303 / 3**0.5)) < 1e-6
    assert abs(tsd["d_builtin"] - 8 / 3) < 1e-9 and abs(tsd["time_x_builtin"] - 1.1) < 1e-9
    assert "+4.00 [+1.52, +6.48]" in table(rows)
    assert paired_interval([1.0])[1] != paired_interval([1.0])[1]  # one seed: no interval (NaN)


def test_help_and_every_ablation_is_a_variant():
    out = subprocess.run([sys.executable, "-m", "yolo_tsd.bench", "help"], capture_output=True, text=True)
    assert out.returncode == 0 and "seeds=" in out.stdout
    names = ("plain", "builtin", "tsd", "uniform", "teacher_score", "fixed_iou", "cls_only", "reg_only", "no_weak")
    for name in (*names, "binary", "feat_only", "logits_only"):
        assert name in VARIANTS and name in out.stdout
    for regime in ("shapes", "shapes_tune", "scenes", "finetune", "finetune_pt", "yolo26"):
        assert f"  {regime} " in out.stdout


def test_training_defaults_follow_the_regime_or_the_data(monkeypatch, tmp_path, data_yaml, teacher_pt):
    """A regime: its own recipe (here the scenes one); a user's data=: Ultralytics' defaults (imgsz 640, its device)."""
    import yolo_tsd.bench.regimes as regimes
    import yolo_tsd.bench.runner as bench

    jobs = []
    recipe = regimes.REGIMES["scenes"].student
    monkeypatch.setattr(
        regimes, "regime_inputs", lambda name, cache, common, own: (data_yaml, teacher_pt, dict(recipe))
    )
    monkeypatch.setattr(bench.subprocess, "run", lambda cmd, **kw: jobs.append(json.loads(cmd[-1])))
    bench.run(regime="scenes", seeds="0,1", variants="plain,builtin", project=str(tmp_path / "a"), dis=1.5)
    assert jobs[-1]["train"]["imgsz"] == 256 and jobs[-1]["train"]["batch"] == 16 and "nbs" not in jobs[-1]["train"]
    assert jobs[-1]["train"]["device"] == "cpu" and jobs[-1]["regime"] == "scenes"
    assert [j["dis"] for j in jobs] == [None, 1.5, None, 1.5]  # the built-in's weight reaches the built-in only
    bench.run(seeds=0, variants="plain", project=str(tmp_path / "b"), data=str(data_yaml), teacher=str(teacher_pt))
    assert not {"imgsz", "nbs", "epochs", "device"} & set(jobs[-1]["train"])
    given = []  # regime= with teacher=: the regime's recipe, the given teacher (resolved) handed to regime_inputs
    monkeypatch.setattr(
        regimes, "regime_inputs", lambda name, cache, common, own: given.append(own) or (data_yaml, own, dict(recipe))
    )
    bench.run(regime="scenes", seeds=0, variants="tsd", project=str(tmp_path / "c"), teacher=str(teacher_pt))
    assert given == [teacher_pt.resolve()] and jobs[-1]["teacher"] == str(teacher_pt.resolve())
    assert jobs[-1]["train"]["imgsz"] == 256 and jobs[-1]["regime"] == "scenes"
    with pytest.raises(FileNotFoundError, match="never downloads"):
        bench.run(regime="scenes", teacher=str(tmp_path / "missing_teacher.pt"))
    with pytest.raises(ValueError, match="unknown regime"):
        bench.run(regime="nope")
    with pytest.raises(ValueError, match="needs teacher="):
        bench.run(data=str(data_yaml))
    with pytest.raises(FileNotFoundError, match="never downloads"):
        bench.run(data=str(data_yaml), teacher=str(tmp_path / "missing_teacher.pt"))
    with pytest.raises(ValueError, match="one device"):
        bench.run(data=str(data_yaml), teacher=str(teacher_pt), device="0,1")


def test_a_variant_carries_its_own_settings_to_its_own_method_only(monkeypatch, tmp_path, data_yaml, teacher_pt):
    """``builtin:dis=2`` and ``tsd:lambda_feat=0.5`` tune each method in one table; a wrong setting stops at once."""
    import yolo_tsd.bench.runner as bench

    jobs = []
    monkeypatch.setattr(bench.subprocess, "run", lambda cmd, **kw: jobs.append(json.loads(cmd[-1])))
    variants = "plain,builtin,builtin:dis=2,tsd,tsd:lambda_feat=0.5:weak_mode=abs,uniform:lambda_cls=0"
    bench.run(seeds=0, variants=variants, project=str(tmp_path), data=str(data_yaml), teacher=str(teacher_pt))
    by = {j["variant"]: j for j in jobs}
    assert [by[v]["dis"] for v in ("plain", "builtin", "builtin:dis=2")] == [None, bench.BUILTIN_DIS, 2.0]
    assert by["builtin:dis=2"]["tsd"] == {} and by["plain"]["teacher"] is None
    assert by["tsd:lambda_feat=0.5:weak_mode=abs"]["tsd"] == {"tsd_lambda_feat": 0.5, "tsd_weak_mode": "abs"}
    assert by["uniform:lambda_cls=0"]["tsd"] == {"tsd_weighting": "uniform", "tsd_lambda_cls": 0}  # ablation kept
    for bad, match in (
        ("tsd:lambda_fet=1", "lambda_feat"),  # did-you-mean from the settings
        ("builtin:lambda_feat=1", "only dis="),
        ("plain:dis=1", "no settings"),
        ("tsd:lambda_feat", "not key=value"),
        ("nope", "unknown variant"),
    ):
        with pytest.raises(ValueError, match=match):
            bench.run(seeds=0, variants=bad, project=str(tmp_path), data=str(data_yaml), teacher=str(teacher_pt))


def test_a_part_that_ran_on_some_steps_only_is_counted_per_step():
    assert per_step([0.4, 0.5, 0.6], 3) == 0.5  # every step: its median
    assert per_step([0.5], 4) == 0.125  # a teacher resting on 3 steps of 4
    assert per_step([], 4) == 0.0
