"""What a training records about its machine, and the refusal to train a GPU run on the CPU."""

from __future__ import annotations

from kdq import runfolder
from kdq.train import gpu

OLD_DRIVER = {
    "gpu": "NVIDIA H100 80GB HBM3",
    "driver": "550.54.15",
    "torch": "2.14.1+cu130",
    "cuda": "13.0",
    "cuda_usable": False,
    "cuda_error": "The NVIDIA driver on your system is too old (found version 12040).",
}


def test_an_unusable_gpu_is_named_with_driver_torch_and_cuda():
    message = gpu.unusable(OLD_DRIVER)
    assert message.startswith("CUDA is not usable here, so nothing was trained")
    for needle in ("GPU NVIDIA H100 80GB HBM3", "NVIDIA driver 550.54.15", "torch 2.14.1+cu130", "CUDA 13.0"):
        assert needle in message
    assert "driver on your system is too old" in message and "KDQ_MODAL_TORCH" in message
    assert gpu.unusable({**OLD_DRIVER, "cuda_usable": True}) is None
    none = gpu.unusable(
        {"gpu": None, "driver": None, "nvidia_smi": "FileNotFoundError: nvidia-smi", "cuda": None}
    )
    assert "GPU none visible" in none and "driver not found (FileNotFoundError" in none and "CPU-only" in none


def test_the_machine_is_described_without_a_gpu(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    info = gpu.describe()
    assert info["cuda_usable"] is False and info["torch"].startswith("2.")
    assert {"gpu", "driver", "cuda"} <= set(info)


def _entry(tmp_path, monkeypatch, device: str | None, machine: dict):
    from kdq.train import __main__ as entry
    from kdq.train import loop

    ran = []

    def fake_run(spec, run_dir, data_dir, cache_dir, saver=None):
        ran.append(spec.train.device)
        runfolder.write_progress(run_dir, epoch=1, epochs=1, phase="done")
        runfolder.write_json(run_dir / runfolder.METRICS, {"val_f1": 0.5})
        return {"best_f1": 0.5}

    monkeypatch.setattr(loop, "run", fake_run)
    monkeypatch.setattr(gpu, "describe", lambda: machine)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / runfolder.SPEC).write_text('{"name": "x"}')
    argv = [str(run_dir), "--data", str(tmp_path), "--cache", str(tmp_path)]
    code = entry.main(argv + (["--device", device] if device else []))
    return code, run_dir, ran


def test_progress_and_metrics_say_what_the_run_ran_on(tmp_path, monkeypatch):
    usable = {**OLD_DRIVER, "driver": "580.65.06", "cuda_usable": True, "cuda_error": None}
    code, run_dir, ran = _entry(tmp_path, monkeypatch, "cuda", usable)
    assert code == 0 and ran == ["cuda"]  # --device overrides train.device ("auto" by default)
    assert runfolder.read_json(run_dir / runfolder.METRICS)["gpu"] == usable
    progress = runfolder.read_json(run_dir / runfolder.PROGRESS)
    assert progress["gpu"] == usable and progress["phase"] == "done"  # later writes kept the record


def test_a_gpu_run_without_cuda_ends_with_its_error_before_training(tmp_path, monkeypatch):
    code, run_dir, ran = _entry(tmp_path, monkeypatch, "cuda", OLD_DRIVER)
    assert code == 1 and ran == []
    error = runfolder.error_message(run_dir)
    assert error.startswith("CudaUnusable: CUDA is not usable here") and "550.54.15" in error


def test_a_packed_run_takes_its_share_of_the_gpu_memory(monkeypatch):
    """Several trainings on one GPU (backend.pack): each process is bounded to 1/pack of the memory."""
    import torch

    set_to = []
    monkeypatch.setattr(torch.cuda, "set_per_process_memory_fraction", set_to.append)
    assert gpu.limit_memory({}) is None and set_to == []  # alone on its GPU: no bound
    assert gpu.limit_memory({gpu.MEMORY_FRACTION_ENV: "0.2500"}) == 0.25 and set_to == [0.25]
