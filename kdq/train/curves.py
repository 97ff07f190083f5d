"""TensorBoard event files beside history.csv: every run's curves, overlaid by ``tensorboard --logdir``.

    with Curves(run_dir) as curves:      # one event file per training process, in the run folder
        curves.epoch(row)                # a history.csv row: loss parts, accuracies, val F1, lr

The scalars are grouped the way people look at them: ``loss/*`` (the total and each part), ``val/f1``,
``val/acc``, ``val/best_f1``, ``train/acc``, ``lr``, ``seconds`` per epoch, at step = epoch (from 1).
A resumed run writes a second file into the same folder; TensorBoard reads both as one run.
"""

from __future__ import annotations

from pathlib import Path

from kdq.runfolder import EVENTS

TAGS = {
    "loss": "loss/total",
    "ce": "loss/ce",
    "kd": "loss/kd",
    "tckd": "loss/tckd",
    "nckd": "loss/nckd",
    "embed": "loss/embed",
    "train_acc": "train/acc",
    "val_f1": "val/f1",
    "val_acc": "val/acc",
    "best_f1": "val/best_f1",
    "lr": "lr",
    "seconds": "seconds",
}


class Curves:
    def __init__(self, run_dir: Path):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(run_dir), flush_secs=30)

    def epoch(self, row: dict) -> None:
        step = int(row["epoch"])
        for key, tag in TAGS.items():
            if row.get(key) is not None:
                self.writer.add_scalar(tag, float(row[key]), step)
        self.writer.flush()  # once an epoch: a run followed live shows every epoch as it ends

    def close(self) -> None:
        self.writer.close()

    def __enter__(self) -> Curves:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def event_files(folder: Path) -> list[Path]:
    return sorted(p for p in Path(folder).glob(f"{EVENTS}*") if p.is_file())
