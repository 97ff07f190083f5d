"""Training: ``python -m kdq.train RUN_DIR --data DIR --cache DIR`` runs ``kdq.train.loop.run``.

layout.py    the class folders and their pictures, found without decoding (no torch)
data.py      decode once (uint8, bounded memory), duplicate groups, train/val/holdout
augment.py   replayable on-device views (squashed or padded) and the grader's normalization
teacher.py   SigLIP embeddings of the plain picture, V views and mixed views, cached once; head logits
siglip.py    the SigLIP model: vision tower only unless zero-shot, preprocessing, zero-shot logits
probe.py     the teacher head (probe, MLP, ensemble): L2 by grouped CV, out-of-fold, calibrated
mixing.py    mixed views (mixup, cutmix) cached with their partners, replayed by the student
students.py  kdq / timm / torchvision students, size checked before training
losses.py    CE, Hinton KD, DKD, DIST, embedding distillation, macro-F1; the spec's loss of one batch
step.py      one training step on the device; the optimizer, its schedule and the EMA
bias.py      per-class logit bias tuned on validation (cross-fitted score)
evaluate.py  predictions on whole pictures; the holdout's macro-F1 and its bootstrap interval
export.py    TorchScript fp32 CPU, bias and flip-TTA baked in
estimate.py  what a run costs: the enqueue-time warning, the H100 minutes at --dry-run
loop.py      the loop that ties them together in phases and writes the run folder
finish.py    its last phases: the best epoch exported, the holdout scored once
"""
