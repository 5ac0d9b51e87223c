"""README cannot drift from the code: every fenced command in it runs here, in order, at toy scale.

Each command is matched by exactly one rule below: either it runs (with tiny settings and this test's data and teacher
substituted for the README's placeholders), or it is skipped with the reason it cannot run offline on a CPU. A command
that no rule matches fails the test, so a new README command needs a rule.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
BIN = Path(sys.executable).parent

SKIP = {  # README commands (or parts of one joined by &&) that cannot run here, and why
    r"^python3 -m venv \.venv$": "set-up: .ci/run makes a fresh environment",
    r"^\.venv/bin/pip install -e": "set-up: .ci/run installs into it",
    r"\.venv/bin/python -m pytest": "the test suite itself (this test is part of it)",
    r"format=engine": "TensorRT needs an NVIDIA GPU",
    r"format=coreml": "CoreML export needs coremltools (and numpy<=2.3.5): a separate environment",
    r"data=coco\.yaml": "COCO and official weights need internet and a GPU",
    r"^\.venv/bin/ruff": "lint: .ci/run runs it",
    r"-m yolo_tsd\.config": "rewrites tracked files; test_config checks they are current",
}
TINY = {  # README value -> toy value, applied to every command that runs
    r"\bepochs=\d+": "epochs=1",
    r"\bteacher_epochs=\d+": "teacher_epochs=1",
    r"\bimgsz=\d+": "imgsz=64",
    r"\bbatch=\d+": "batch=8",
    r"\bdevice=0\b": "device=cpu",
    r"\bseeds=[\d,]+": "seeds=0",
    r"\bbatches=[\d,]+": "batches=2",
    r"\bboxes=[\d,]+": "boxes=5",
    r"\bteacher=yolov8x\.yaml": "teacher=yolov8s.yaml",
    r'"epochs": \d+': '"epochs": 1',
    r'"imgsz": \d+': '"imgsz": 64',
    r"\bepochs=\d+\)": "epochs=1)",
    r"\bimgsz=\d+\)": "imgsz=64)",
}
DEMO_TINY = "n_train=16 n_val=8 teacher_epochs=1 epochs=1 imgsz=64"


def fenced_blocks(text: str) -> list[tuple[str, str]]:
    """(language, body) of every fenced code block, in order."""
    return re.findall(r"```(\w+)\n(.*?)```", text, flags=re.S)


def commands(body: str) -> list[str]:
    """The shell commands of a bash block: continuation lines joined, trailing comments removed, ``&&`` chains split."""
    joined = re.sub(r"\\\n\s*", " ", body)
    out = []
    for line in joined.splitlines():
        line = re.sub(r"\s+#.*$", "", line).strip()
        if line and not line.startswith("#"):
            out += [part.strip() for part in line.split(" && ")]
    return out


def readme_steps() -> list[tuple[str, str]]:
    """("bash" | "python", text) for every runnable step of README, in order."""
    steps = []
    for lang, body in fenced_blocks(README.read_text()):
        if lang == "bash":
            steps += [("bash", c) for c in commands(body)]
        elif lang == "python":
            steps.append(("python", body))
    return steps


def skip_reason(text: str) -> str | None:
    return next((why for pattern, why in SKIP.items() if re.search(pattern, text)), None)


def substitute(text: str, env: dict) -> str:
    """README placeholders -> this test's files; full-size values -> toy ones."""
    for pattern, value in TINY.items():
        text = re.sub(pattern, value, text)
    places = {
        "path/to/yolov8x.pt": env["teacher"],
        "path/to/teacher.pt": env["teacher"],
        "path/to/image.jpg": env["image"],
        "my.yaml": env["data"],
        ".venv/bin/": f"{BIN}/",
    }
    for placeholder, value in places.items():
        text = text.replace(placeholder, str(value))
    if re.search(r"yolo-tsd demo\b", text):
        text = re.sub(r"(yolo-tsd demo)\b", rf"\1 {DEMO_TINY}", text)
    if ("yolo_tsd.bench" in text or "yolo-tsd bench" in text) and "data=" not in text:  # a regime: toy data instead
        text += f" data={env['data']} teacher={env['teacher']} epochs=1 imgsz=64 batch=8"
    return text


def test_ci_runs_readmes_set_up_and_test_commands():
    ci = (ROOT / ".ci" / "run").read_text()
    first = re.search(r"```bash\n(.*?)\n", README.read_text()).group(1)  # the set-up and demo command
    setup = first.split(" && .venv/bin/yolo-tsd demo")[0]
    assert setup in ci, (setup, ci)  # the same fresh environment and install
    assert ".venv/bin/python -m pytest -q" in ci and ".venv/bin/python -m pytest -q" in README.read_text()


def test_readme_walk(tmp_path, data_yaml, teacher_pt):
    """Run every runnable README step in order in one folder, as a newcomer would."""
    image = sorted((data_yaml.parent / "images" / "val").iterdir())[0]
    env = {"teacher": teacher_pt, "data": data_yaml, "image": image}
    work = tmp_path / "work"
    work.mkdir()
    shell_env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}  # the steps run as a user's would
    shell_env.update(YOLO_TSD_CACHE=str(tmp_path / "cache"), YOLO_CONFIG_DIR=str(tmp_path / "ultralytics"))
    shell_env["PATH"] = f"{BIN}:{os.environ['PATH']}"
    settings = f"from ultralytics import settings; settings.update(runs_dir={str(work / 'runs')!r})"
    subprocess.run([sys.executable, "-c", settings], env=shell_env, check=True, capture_output=True)  # runs in work/
    ran = []
    for lang, text in readme_steps():
        if skip_reason(text):
            continue
        if lang == "python":
            code = substitute(text, env)
            cmd = [sys.executable, "-c", code]
        else:
            cmd = ["bash", "-c", substitute(text, env)]
        cwd = ROOT if "train.py" in text else work
        out = subprocess.run(cmd, cwd=cwd, env=shell_env, capture_output=True, text=True, timeout=900)
        assert out.returncode == 0, f"README step failed:\n{text}\n--- ran ---\n{cmd[-1]}\n{out.stderr[-3000:]}"
        ran.append(text)
    assert len(ran) >= 6, ran


@pytest.mark.parametrize("pattern", list(SKIP))
def test_each_skip_rule_matches_a_readme_command(pattern):
    """A skip rule for a command README no longer has is stale: remove it."""
    assert any(re.search(pattern, text) for _, text in readme_steps()), pattern
