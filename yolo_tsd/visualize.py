"""Pictures of where the distillation focuses: importance maps, key and weak areas and regions, per head level.

``explain()`` renders them for any image and any teacher/student pair; ``TSDTrainer`` calls ``render_batch()`` on a few
fixed validation images at the first, middle and last epoch (``tsd_epoch*.png``) and plots every loss term over the
epochs at the end (``tsd_losses.png``).
"""

from __future__ import annotations

import csv
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import torch
from ultralytics.utils.ops import xywh2xyxy

from .config import TSDConfig
from .training.model import TSDModel
from .training.teacher import Teacher
from .ultralytics_internals import dense_output, label_file, load_model, raw_outputs, with_default_args

PANELS = ("teacher importance", "student importance", "key area", "weak area", "regions: high red, medium orange")


@torch.no_grad()
def significance_maps(student: torch.nn.Module, teacher: Teacher, batch: dict, cfg: TSDConfig) -> dict:
    """Significance of every anchor for a preprocessed batch, split into per-level (B, H, W) maps.

    Args:
        student (torch.nn.Module): Student ``DetectionModel`` with ``args`` (run in eval mode, untouched).
        teacher (Teacher): The frozen teacher.
        batch (dict): ``img``, ``batch_idx``, ``cls``, ``bboxes`` as Ultralytics' dataloader gives them.
        cfg (TSDConfig): Settings.

    Returns:
        (dict): ``imp_t``, ``imp_s``, ``key``, ``weak``, ``region`` -> list over levels of (B, H, W) numpy arrays.
    """
    if not cfg.distils:  # the significance does not depend on the weights; one must be on for it to be computed
        cfg = replace(cfg, lambda_cls=1.0)
    preds = raw_outputs(student, batch["img"])
    step = TSDModel(student, teacher, cfg).step(batch, preds)
    sig = next(iter(step.significance.values()))  # the dense branch (one-to-many for end-to-end heads)
    flat = {"imp_t": sig.imp_t, "imp_s": sig.imp_s, "key": sig.key, "weak": sig.weak, "region": sig.region}
    feats = dense_output(preds).neck_features
    sizes = [f.shape[2] * f.shape[3] for f in feats]
    return {
        k: [
            v.reshape(v.shape[0], f.shape[2], f.shape[3]).float().cpu().numpy()
            for v, f in zip(v.split(sizes, 1), feats)
        ]
        for k, v in flat.items()
    }


def render(image: np.ndarray, maps: dict, index: int, boxes: np.ndarray, path: str | Path, title: str = "") -> Path:
    """Draw one image's maps: a row per head level, a column per panel, ground-truth boxes on each.

    Args:
        image (np.ndarray): (H, W, 3) uint8 RGB image as the model saw it.
        maps (dict): Output of ``significance_maps``.
        index (int): Which image of the batch.
        boxes (np.ndarray): (N, 4) pixel xyxy ground-truth boxes.
        path (str | Path): PNG to write.
        title (str): Figure title.

    Returns:
        (Path): The written file.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Rectangle

    levels = len(maps["imp_t"])
    fig, axes = plt.subplots(levels, len(PANELS), figsize=(3 * len(PANELS), 3 * levels), squeeze=False)
    h, w = image.shape[:2]
    gray = cv2.cvtColor(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)  # overlays stand out on grey
    vmax = max(float(maps["imp_t"][0].max()), float(maps["imp_s"][0].max()), 4.0)
    for lv in range(levels):
        stride = h / maps["imp_t"][lv].shape[1]
        layers = [  # (map, colour map, vmin, vmax); values <= vmin are left transparent except for importance
            (maps["imp_t"][lv][index], "magma", 0, vmax),
            (maps["imp_s"][lv][index], "magma", 0, vmax),
            (maps["key"][lv][index], ListedColormap(["limegreen"]), 0, 1),
            (maps["weak"][lv][index], ListedColormap(["red"]), 0, 1),
            (2 - maps["region"][lv][index], ListedColormap(["orange", "red"]), 0, 2),  # 2 high, 1 medium, 0 low
        ]
        for col, (m, cmap, lo, hi) in enumerate(layers):
            ax = axes[lv, col]
            ax.imshow(gray)
            up = cv2.resize(m.astype(np.float32), (w, h), interpolation=cv2.INTER_NEAREST)
            if col >= 2:
                up = np.ma.masked_where(up <= lo, up)
                lo = lo + 1e-3 if col < 4 else 0.5
            ax.imshow(up, cmap=cmap, vmin=lo, vmax=hi, alpha=0.6)
            for x1, y1, x2, y2 in boxes:
                ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor="cyan", linewidth=1.2))
            ax.set_xticks([])
            ax.set_yticks([])
            if lv == 0:
                ax.set_title(PANELS[col], fontsize=10)
            if col == 0:
                ax.set_ylabel(f"P{int(round(np.log2(stride)))} (stride {stride:g})", fontsize=10)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def batch_boxes(batch: dict, index: int) -> np.ndarray:
    """Pixel xyxy ground-truth boxes of image ``index`` of a batch."""
    h, w = batch["img"].shape[2:]
    return xywh2xyxy(batch["bboxes"][batch["batch_idx"] == index].cpu().numpy() * np.array([w, h, w, h]))


def render_batch(student, teacher: Teacher, batch: dict, cfg: TSDConfig, prefix: str | Path, title: str) -> list[Path]:
    """Render every image of a preprocessed batch to ``{prefix}_{i}.png``."""
    maps = significance_maps(student, teacher, batch, cfg)
    images = (batch["img"].permute(0, 2, 3, 1).cpu().float().numpy() * 255).clip(0, 255).astype(np.uint8)
    return [
        render(img, maps, i, batch_boxes(batch, i), f"{prefix}_{i}.png", f"{title} — image {i}")
        for i, img in enumerate(images)
    ]


def plot_losses(results_csv: str | Path, path: str | Path) -> Path:
    """Plot every training loss term (detection and distillation) over the epochs from Ultralytics' results.csv."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(csv.DictReader(Path(results_csv).open()))
    keys = [k for k in rows[0] if k.startswith("train/") and k.endswith("loss")]
    epochs = [int(float(r["epoch"])) for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for k in keys:
        ax = axes[1] if k.split("/")[1].startswith("d") and k != "train/dfl_loss" else axes[0]
        ax.plot(epochs, [float(r[k]) for r in rows], marker=".", label=k.split("/")[1])
    for ax, title in zip(axes, ("detection losses", "distillation terms (weighted)")):
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def load_image(path: str | Path, imgsz: int) -> tuple[torch.Tensor, np.ndarray]:
    """Letterbox an image to ``imgsz`` as Ultralytics does and read its YOLO labels if a label file exists.

    Returns:
        (tuple): (1, 3, imgsz, imgsz) float image in [0, 1], and (N, 5) ``cls, x, y, w, h`` normalised to the
            letterboxed image (empty when there is no label file).
    """
    im = cv2.imread(str(path))
    if im is None:
        raise FileNotFoundError(f"source={path}: not an image file that OpenCV can read")
    h, w = im.shape[:2]
    r = min(imgsz / h, imgsz / w)
    nw, nh = round(w * r), round(h * r)
    left, top = (imgsz - nw) // 2, (imgsz - nh) // 2
    canvas = np.full((imgsz, imgsz, 3), 114, np.uint8)
    canvas[top : top + nh, left : left + nw] = cv2.resize(im, (nw, nh), interpolation=cv2.INTER_LINEAR)
    img = torch.from_numpy(canvas[..., ::-1].copy()).permute(2, 0, 1)[None].float() / 255
    labels_at = label_file(path)
    labels = np.zeros((0, 5), np.float32)
    if labels_at.is_file():
        rows = np.loadtxt(labels_at, ndmin=2, dtype=np.float32)
        if len(rows):
            labels = rows[:, :5].copy()
            labels[:, 1] = (labels[:, 1] * w * r + left) / imgsz
            labels[:, 2] = (labels[:, 2] * h * r + top) / imgsz
            labels[:, 3] *= w * r / imgsz
            labels[:, 4] *= h * r / imgsz
    return img, labels


def explain(
    teacher: str | Path,
    model: str | Path,
    source: str | Path,
    imgsz: int = 640,
    tsd: str | Path | dict | None = None,
    out: str | Path = "runs/tsd_explain",
) -> list[Path]:
    """Render the significance pictures for images and any teacher/student pair, outside training.

    Ground truth comes from YOLO label files found the Ultralytics way (``images/`` -> ``labels/``); without one the
    maps are drawn with no ground truth (then only the top-confidence rule can raise an anchor's importance).

    Args:
        teacher (str | Path): Teacher ``.pt``.
        model (str | Path): Student ``.pt`` (e.g. a run's ``best.pt``) or model yaml (random weights).
        source (str | Path): An image file or a folder of images.
        imgsz (int): Letterbox size.
        tsd (str | Path | dict | None): Settings (defaults if None).
        out (str | Path): Output folder.

    Returns:
        (list[Path]): One PNG per image, ``tsd_explain_<stem>.png``.
    """
    from ultralytics.nn.tasks import DetectionModel

    from .checks import resolve_weights

    cfg = TSDConfig.load(tsd)
    t = Teacher.load(teacher)
    if str(model).endswith(".pt"):
        student = load_model(resolve_weights(model, "model"))
    else:
        student = DetectionModel(str(model), nc=len(t.names), verbose=False)
        student.names = dict(enumerate(t.names))
    t.check_names(student.names)
    t.check_student(student)
    with_default_args(student)
    src = Path(source).expanduser()
    files = (
        sorted(p for p in src.iterdir() if p.suffix.lower() in {".jpg", ".jpeg", ".png", ".bmp"})
        if src.is_dir()
        else [src]
    )
    if not files:
        raise FileNotFoundError(f"source={source}: no images found")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for f in files:
        img, labels = load_image(f, imgsz)
        batch = {
            "img": img,
            "batch_idx": torch.zeros(len(labels)),
            "cls": torch.from_numpy(labels[:, :1]),
            "bboxes": torch.from_numpy(labels[:, 1:]),
        }
        maps = significance_maps(student, t, batch, cfg)
        rgb = (img[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8)
        title = f"{f.name}: teacher {Path(teacher).name} -> student {Path(model).name}"
        paths.append(render(rgb, maps, 0, batch_boxes(batch, 0), out / f"tsd_explain_{f.stem}.png", title))
    return paths
