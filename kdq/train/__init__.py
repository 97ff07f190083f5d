"""Training: ``python -m kdq.train RUN_DIR --data DIR --cache DIR`` runs ``kdq.train.loop.run``.

data.py      class folders, decode once (uint8 cache), duplicate groups, stratified split
augment.py   replayable on-device views and the grader's normalization
teacher.py   SigLIP view embeddings cached once; linear probe (out-of-fold) or zero-shot logits
students.py  kdq / timm / torchvision students, size checked before training
losses.py    CE, Hinton KD, DKD, embedding distillation, macro-F1
bias.py      per-class logit bias tuned on validation (cross-fitted score)
export.py    TorchScript fp32 CPU, bias and flip-TTA baked in
loop.py      the loop that ties them together and writes the run folder
"""
