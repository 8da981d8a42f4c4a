"""Compute placement: which device XGBoost trains on, and how many threads it may use."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess


@functools.cache
def gpu_visible() -> bool:
    """True when an NVIDIA GPU answers ``nvidia-smi -L`` and this XGBoost was built with CUDA."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in {"", "-1"} or shutil.which("nvidia-smi") is None:
        return False
    try:
        listed = subprocess.run(["nvidia-smi", "-L"], check=False, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    if listed.returncode != 0 or "GPU" not in listed.stdout:
        return False
    import xgboost

    return bool(xgboost.build_info().get("USE_CUDA"))


def choose_device(requested: str = "auto") -> str:
    """``cuda`` when asked or when a GPU is visible under ``auto``; ``cpu`` otherwise."""
    if requested == "cuda" and not gpu_visible():
        raise RuntimeError("LEPTON_DEVICE=cuda but no CUDA-capable GPU is visible to XGBoost")
    if requested == "auto":
        return "cuda" if gpu_visible() else "cpu"
    return requested


def cpu_threads() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
