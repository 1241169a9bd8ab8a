"""One-shot GPU check (run on a CUDA machine): Loupe picks ``cuda``, the zoo reaches its accuracy
there, every reference explainer gives the same maps on the GPU as on the CPU (device follows the
inputs), the embedded cluster runs jobs on a GPU worker, and the metric/explainer timings on the
GPU. Prints one line per check and writes ``gpu_check.json`` into ``--out``.

Run from the repository root: ``python -m bench.gpu_check --out DIR``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]

import numpy as np  # noqa: E402
import torch  # noqa: E402

from data.builtin import load_builtin  # noqa: E402
from explainers.registry import all_explainers  # noqa: E402
from explainers.runner import explain_samples  # noqa: E402
from model_registry.base import pick_device  # noqa: E402
from model_registry.zoo import ZOO, load_zoo_model  # noqa: E402

SMALL = {"integrated_gradients": {"n_steps": 16}, "gradient_shap": {"n_samples": 8},
         "smoothgrad": {"nt_samples": 8}, "shap": {}}


def synced(fn):
    torch.cuda.synchronize()
    start = time.perf_counter()
    out = fn()
    torch.cuda.synchronize()
    return out, time.perf_counter() - start


def check_accuracy(report: dict) -> None:
    for model_id, entry in ZOO.items():
        handle, ds = load_zoo_model(model_id, torch.device("cuda")), load_builtin(entry.dataset)
        pred = handle.logits(ds.inputs(ds.ids)).argmax(1).numpy()
        acc = float((pred == ds.labels(ds.ids)).mean())
        report["accuracy"][model_id] = acc
        print(f"accuracy on cuda: {model_id} {acc:.4f} (needs >= {entry.min_accuracy})")


def check_explainers(report: dict) -> None:
    for model_id in ("shapes_cnn", "shapes_resnet", "breast_cancer_mlp"):
        ds = load_builtin(ZOO[model_id].dataset)
        cpu, gpu = load_zoo_model(model_id, torch.device("cpu")), load_zoo_model(model_id, torch.device("cuda"))
        for eid, explainer in all_explainers().items():
            if explainer.unsupported_reason(cpu):
                continue
            params = SMALL.get(eid, {})
            a = explain_samples(cpu, ds, range(8), eid, params)
            b, seconds = synced(lambda: explain_samples(gpu, ds, range(8), eid, params))
            scale = float(np.abs(a.attributions).max()) or 1.0
            diff = float(np.abs(a.attributions - b.attributions).max()) / scale
            same_pred = bool((a.predictions == b.predictions).all())
            report["explainers"][f"{model_id}/{eid}"] = {"rel_max_diff": diff, "same_predictions": same_pred,
                                                         "gpu_seconds_8": seconds}
            print(f"cpu vs cuda: {model_id:18s} {eid:22s} max|diff|/max|cpu| {diff:.2e} "
                  f"same predictions {same_pred} ({seconds:.2f} s for 8 on cuda)")


def check_cluster(report: dict) -> None:
    import loupe
    from worker.cluster import get_client, shutdown, uses_gpu_resources

    res = loupe.explain("shapes_resnet", "shapes", "0:64", "integrated_gradients", params={"n_steps": 32})
    gpu_workers = uses_gpu_resources(get_client())
    again = loupe.explain("shapes_resnet", "shapes", "0:64", "integrated_gradients", params={"n_steps": 32})
    report["cluster"] = {"device": res.provenance["device"], "gpu_resource": gpu_workers,
                         "seconds": res.provenance["seconds"], "cached_again": again.cached}
    print(f"embedded cluster: device {res.provenance['device']}, GPU resource {gpu_workers}, "
          f"64 images IG(32) {res.provenance['seconds']:.2f} s incl. start, second call cached {again.cached}")
    shutdown()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=".")
    args = parser.parse_args()
    report: dict = {"device": str(pick_device()), "name": torch.cuda.get_device_name(0),
                    "torch": torch.__version__, "accuracy": {}, "explainers": {}}
    print(f"pick_device: {report['device']} ({report['name']}, torch {report['torch']})")
    for check in (check_accuracy, check_explainers, check_cluster):
        try:
            check(report)
        except Exception as err:  # noqa: BLE001 - report every check even if one fails
            report.setdefault("errors", []).append(f"{check.__name__}: {type(err).__name__}: {err}")
            print(f"FAILED {check.__name__}: {type(err).__name__}: {err}")
    Path(args.out, "gpu_check.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
