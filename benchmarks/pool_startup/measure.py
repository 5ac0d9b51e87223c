"""Start-up time and memory of an unlabeled pool against its size (issue 27: a 10x pool must not cost 10x).

Run: python benchmarks/pool_startup/measure.py  (generates shapes pools of 256 ... 10240 images at 128 px into the
cache, then opens each in a fresh process: the image check, the loader, the first batch of 8).
"""

import json
import resource
import subprocess
import sys
import time

SIZES = (256, 1024, 2560, 10240)


def one(n: int) -> dict:
    """Open a pool of ``n`` images as a training run does, in this process; its times and memory."""
    from ultralytics.cfg import get_cfg

    from yolo_tsd.bench.data import make_pool
    from yolo_tsd.bench.regimes import cache_dir
    from yolo_tsd.training.unlabeled import UnlabeledPool
    from yolo_tsd.ultralytics_internals import image_files

    folder = make_pool(cache_dir() / "data", n, 128, 7)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    files = tuple(image_files([str(folder)]))
    pool = UnlabeledPool(files, 1.0)
    args = get_cfg(overrides={"imgsz": 128, "workers": 2})
    data = {"names": {i: str(i) for i in range(5)}, "nc": 5, "channels": 3}
    pool.open(args, data, 8, 32, -1, "cpu")
    t1 = time.perf_counter()
    pool.next_images(8)
    t2 = time.perf_counter()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"n": n, "open_s": t1 - t0, "first_batch_s": t2 - t1, "rss_mb": rss, "rss_growth_mb": rss - rss0}


if __name__ == "__main__":
    if len(sys.argv) > 1:
        print(json.dumps(one(int(sys.argv[1]))))
        sys.exit()
    rows = []
    for n in SIZES:
        out = subprocess.run([sys.executable, __file__, str(n)], check=True, capture_output=True, text=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
    print("| pool images | open (check + loader) s | first batch s | peak RSS MB | RSS growth MB |")
    print("|---|---|---|---|---|")
    for r in rows:
        cells = (r["n"], f"{r['open_s']:.2f}", f"{r['first_batch_s']:.2f}")
        cells += (f"{r['rss_mb']:.0f}", f"{r['rss_growth_mb']:.0f}")
        print("| " + " | ".join(map(str, cells)) + " |")
