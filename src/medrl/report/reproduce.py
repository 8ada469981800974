"""The report's Reproducibility section: what produced the run (provenance.json) and how to repeat it."""

from __future__ import annotations

from typing import Any


def reproducibility_blocks(provenance: dict[str, Any] | None, run_uri: str | None = None) -> list[tuple]:
    """Report blocks for a run's provenance.json (a note that there is none, for runs older than it).

    >>> doc = {"medrl": {"version": "0.1.0", "git": {"commit": "abc123", "dirty": False}}, "python": "3.11.7",
    ...     "libraries": {"trl": "1.16.0", "vllm": None}, "hardware": {"cpus": 2}, "seeds": {"data": 0},
    ...     "splits": {"test": {"rows": 3, "images": 3, "sha256": "f" * 64}}}
    >>> rows = reproducibility_blocks(doc)[1][2]
    >>> rows[0], rows[2], rows[-1][0]
    (['medrl', '0.1.0 (commit abc123)'], ['trl', '1.16.0'], 'test split')
    """
    if not provenance:
        return [("h2", "Reproducibility"), ("p", "This run has no provenance.json (it predates it).")]
    medrl = provenance.get("medrl") or {}
    git = medrl.get("git") or {}
    version = str(medrl.get("version", "-"))
    if git.get("commit"):
        version += f" (commit {git['commit'][:12]}{', uncommitted changes' if git.get('dirty') else ''})"
    rows = [["medrl", version], ["python", str(provenance.get("python", "-"))]]
    rows += [[name, v] for name, v in (provenance.get("libraries") or {}).items() if v]
    hw = provenance.get("hardware") or {}
    gpus = hw.get("gpus")
    rows.append(
        ["hardware", f"{gpus['count']} x {', '.join(gpus['models'])}" if gpus else f"CPU only ({hw.get('cpus')} cores)"]
    )
    if hw.get("cuda") or hw.get("driver"):
        rows.append(["CUDA (torch build) / driver", f"{hw.get('cuda') or '-'} / {hw.get('driver') or '-'}"])
    images = provenance.get("images") or {}
    for name, container in (images.get("containers") or {}).items():
        rows.append([f"image ({name})", str(container.get("digest") or container.get("image"))])
    if images.get("image") and not images.get("containers"):
        rows.append(["image", str(images["image"])])
    seeds = provenance.get("seeds") or {}
    rows.append(["seeds", ", ".join(f"{k} {v}" for k, v in seeds.items())])
    for split, fp in (provenance.get("splits") or {}).items():
        rows.append(
            [f"{split} split", f"{fp.get('rows')} rows, {fp.get('images')} images, sha256 {str(fp.get('sha256'))[:16]}"]
        )
    again = f"`medrl run --like {run_uri}`" if run_uri else "`medrl run --like <run>`"
    note = (
        f"Repeat with {again}: the same config and seeds; it names every version, image and data fingerprint that "
        "differs from this run's. A split's fingerprint is a sha256 over its rows and the sha256 of each image."
    )
    return [("h2", "Reproducibility"), ("table", ["", "this run"], rows, "reproducibility"), ("p", note)]
