"""Print the markdown tables of docs/benchmarks.md from the JSON results (no typed numbers).

python -m benchmarks.tables [FOLDER]    (default: benchmarks/results)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def table(title: str, header: list[str], rows: list[list[str]]) -> None:
    print(f"### {title}\n")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print()


def pair(a: float, b: float) -> str:
    return f"{a:.2f}x / {b:.2f}x"


def selection(name: str, data: dict[str, Any]) -> None:
    rows = []
    for r in data.get("cpu", []):
        ex, lz = r["exact"], r["lanczos"]
        rows.append(
            [
                str(r["n"]),
                str(r["d"]),
                f"{r['reference_ms']:.2f}",
                pair(ex["speedup_single"], ex["speedup_epoch_call"]),
                pair(lz["speedup_single"], lz["speedup_epoch_call"]),
                f"{ex['jaccard_mean']:.3f}",
                f"{lz['jaccard_mean']:.3f}",
                f"{r['gram_ms']:.2f} / {r['speedup_cap_from_gram']:.1f}x"
                if "gram_ms" in r
                else "-",
            ]
        )
    header = [
        "n",
        "d",
        "reference ms/batch",
        "exact: single / epoch",
        "lanczos: single / epoch",
        "Jaccard exact",
        "Jaccard lanczos",
        "Gram alone: ms / cap",
    ]
    if rows:
        table(f"{name} ({data['machine']['cpu']}, {data['machine']['date']})", header, rows)
    if "cuda" in data:
        cuda(name, data)


def where(data: dict[str, Any]) -> str:
    m = data["machine"]
    return f"{m.get('gpu', m['cpu'])}, torch {m['torch']}, {m['date']}"


def cuda(name: str, data: dict[str, Any]) -> None:
    c = data["cuda"]
    header = ["batches x n x d", "lanczos epoch ms", "torch.linalg.eigh epoch ms", "speed-up"]
    header.append("Jaccard vs eigh")
    row = [
        f"{c['epoch_batches']} x {c['n']} x {c['d']}",
        f"{c['lanczos_epoch_ms']:.1f}",
        f"{c['torch_eigh_epoch_ms']:.1f}",
        f"{c['speedup_vs_torch_eigh']:.1f}x",
        f"{c['jaccard_vs_eigh_mean']:.3f}",
    ]
    if "lanczos_cuda_graph_epoch_ms" in c:  # absent from files written before it existed
        header += ["lanczos from a CUDA graph, ms", "graph / eager Jaccard"]
        row += [
            f"{c['lanczos_cuda_graph_epoch_ms']:.1f}",
            f"{c['jaccard_cuda_graph_vs_eager_mean']:.3f}",
        ]
    table(f"{name} ({where(data)})", header, [row])


def with_eager_share(result: dict[str, Any]) -> dict[str, Any]:
    """The selection share with an eager solve, from a file of any version: older files ran
    every solve eagerly unless a key says graphed."""
    eager = result.get(
        "selection_share_of_saln_epoch_eager_selection", result.get("selection_share_of_saln_epoch")
    )
    return {**result, "eager_selection_share": eager} if eager is not None else result


def gpu(name: str, data: dict[str, Any]) -> None:
    keys = [
        ("pure_train_img_per_s", "pure step img/s", "{:.0f}"),
        ("engine_standard_img_per_s", "engine img/s", "{:.0f}"),
        ("standard_throughput_ratio", "engine / pure (>= 0.8)", "{:.2f}"),
        (
            "saln_vs_standard_fixed_learner_batch",
            "saln / standard, fixed batch (<= 0.25)",
            "{:.2f}",
        ),
        ("saln_vs_standard_paper_convention", "saln / standard, paper", "{:.2f}"),
        ("eager_selection_share", "selection / saln epoch, eager solve (<= 0.01)", "{:.3f}"),
        ("selection_share_of_saln_epoch_cuda_graph", "same, graphed solve", "{:.3f}"),
    ]
    rows = [
        [
            size,
            "graphed" if r.get("steps_graphed") else "eager",
            *(fmt.format(r[k]) if k in r else "not measured" for k, _, fmt in keys),
        ]
        for size, r in ((s, with_eager_share(r)) for s, r in data["results"].items())
    ]
    if rows:
        header = ["size", "train steps", *(label for _, label, _ in keys)]
        table(f"{name} ({where(data)})", header, rows)
    if "graphs" in data:
        g = data["graphs"]
        rows = [
            [
                str(n),
                f"{g[f'eager_steps_per_s_{n}']:.0f}",
                f"{g[f'graphed_steps_per_s_{n}']:.0f}",
                f"{g[f'graphed_vs_eager_{n}']:.2f}x",
            ]
            for n in (12, 64)
        ]
        header = ["rows per step", "eager steps/s", "graphed steps/s", "graphed / eager"]
        table(f"{name}: CUDA graphs, resnet18_cifar 32 px ({where(data)})", header, rows)
        print(
            f"SALN epoch through the engine (paper convention): eager"
            f" {g['engine_saln_paper_epoch_s_eager']:.2f} s, graphs"
            f" {g['engine_saln_paper_epoch_s_graphs']:.2f} s\n"
        )


def concurrency(name: str, data: dict[str, Any]) -> None:
    rows = [
        [key, f"{r['steps_per_s_total']:.1f}", f"{r['total_vs_one_process']:.2f}"]
        for key, r in data["results"].items()
    ]
    header = ["rows per step x processes", "steps/s, all processes", "vs one process"]
    table(f"{name} ({where(data)})", header, rows)


def step(name: str, data: dict[str, Any]) -> None:
    rows = [
        [
            method,
            f"{r['loaded_batch']} / {r['kept_batch']}",
            f"{r['train']:.3f}",
            f"{r['epoch_time_vs_standard']:.2f}",
            f"{r['selection_share_of_step']:.2f}",
        ]
        for method, r in data["methods"].items()
    ]
    header = ["method", "loaded / trained rows", "epoch s", "epoch vs standard", "selection / step"]
    table(f"{name} (overrides: {' '.join(data['overrides']) or 'none'})", header, rows)


def features(name: str, data: dict[str, Any]) -> None:
    rows = [
        [
            r["loader"] + (" (images decoded before)" if r.get("decoded_before") else ""),
            f"{r['extraction_img_per_s']:.1f}",
            f"{r['pure_inference_img_per_s']:.1f}",
            f"{r['ratio']:.2f}",
            f"{r['encode_ratio']:.2f}" if "encode_ratio" in r else "not recorded",
        ]
        for r in data["rows"]
    ]
    header = ["loader", "extraction img/s", "pure inference img/s", "ratio", "encode-loop ratio"]
    table(
        f"{name} ({data['encoder']}, {data['image_size']} px, {data['images']} images;"
        f" {where(data)})",
        header,
        rows,
    )


KINDS = {
    "selection": selection,
    "step": step,
    "features": features,
    "gpu": gpu,
    "concurrency": concurrency,
}

if __name__ == "__main__":
    folder = Path(sys.argv[1]) if len(sys.argv) > 1 else RESULTS  # default: the committed ones
    for result in sorted(folder.glob("*.json")):
        kind = result.stem.split("_")[0]
        if kind in KINDS:
            KINDS[kind](result.name, json.loads(result.read_text()))
