"""Mixed views: cached renders of two pictures mixed (mixup, or a cutmix box), replayable like any view.

    params, blocks = plan(spec, fold, fingerprint)          # [N,M,F]: a partner per mixed view
    emb = embed(teacher, decode, size, params, blocks)      # the teacher sees each mixed picture once
    x = augment.replay(images, idx, params[idx, m], 224, mixed=True)   # the student: the same pixels

A partner is drawn from the picture's own block of up to ``BLOCK`` pictures of one dataset fold, so the
out-of-fold head that predicts a mixed view has seen neither picture, and the teacher needs only one
block of pictures (at its own size) in memory. The student trains only on mixes of two training
pictures (``partners_in_training``). Function matching with mixed pictures is Beyer et al. 2022 ("A good
teacher is patient and consistent"); caching the mixed views with their parameters is the FKD design.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch

from kdq.train import augment

BLOCK = 64  # a mixed view's partner is one of this many pictures of its fold, embedded together
BATCH = 256  # views per teacher forward


def plan(spec, fold: np.ndarray, fingerprint: str) -> tuple[torch.Tensor, list]:
    """The ``spec.mix_views`` mixed views of every picture ([N,M,F] parameters, partners as picture
    indices) and the blocks of pictures they are rendered in: a partner is drawn from the picture's own
    block of up to ``BLOCK`` pictures of one fold, so a mixed view is out-of-fold for both."""
    n, m = len(fold), spec.mix_views
    seed = int(fingerprint[8:16], 16)
    rng, gen = np.random.default_rng(seed), torch.Generator().manual_seed(seed)
    base = augment.sample(n * m, gen, **augment.options(spec))
    partner, blocks = torch.empty(n, m, dtype=torch.long), []
    for f in np.unique(fold):
        members = rng.permutation(np.flatnonzero(fold == f))
        for k in range(0, len(members), BLOCK):
            block = members[k : k + BLOCK]
            step = rng.integers(1, max(len(block), 2), size=(len(block), m))  # never itself, if it can
            partner[block] = torch.from_numpy(block[(np.arange(len(block))[:, None] + step) % len(block)])
            blocks.append(block)
    p = augment.mix(base, partner.flatten(), rng, spec.mix_alpha, spec.mix_cutmix)
    return p.view(n, m, -1), blocks


def rechunk(chunks: Iterable[tuple[int, torch.Tensor]], sizes: Iterable[int]):
    """The pictures of ``chunks`` regrouped into tensors of ``sizes`` pictures, in order."""
    it, buf = iter(chunks), None
    for size in sizes:
        while buf is None or len(buf) < size:
            got = next(it)[1]
            buf = got if buf is None else torch.cat([buf, got])
        yield buf[:size]
        buf = buf[size:]


def embed(teacher, decode, size: int, params, blocks, aspect=None, batch: int = BATCH):
    """Embeddings [N,M,D] fp16 of the mixed views ``params`` [N,M,F], block by block: ``decode(size,
    index)`` streams the pictures of all blocks in order, so a picture and its partners are in memory
    together and never more than one block."""
    n, m = params.shape[:2]
    order = np.concatenate(blocks)
    out, local = None, torch.full((n,), -1, dtype=torch.long)
    for block, pics in zip(blocks, rechunk(decode(size, order), [len(b) for b in blocks])):
        block = torch.from_numpy(block)
        local[block] = torch.arange(len(block))
        p = params[block].flatten(0, 1)
        own = torch.arange(len(block)).repeat_interleave(m)
        mate = local[p[:, augment.PARTNER].long()]
        asp = (None, None) if aspect is None else (aspect[block[own]], aspect[block[mate]])
        emb = torch.cat(
            [
                teacher.embed(
                    pics[own[i : i + batch]],
                    p[i : i + batch],
                    None if asp[0] is None else asp[0][i : i + batch],
                    pics[mate[i : i + batch]],
                    None if asp[1] is None else asp[1][i : i + batch],
                ).half()
                for i in range(0, len(p), batch)
            ]
        ).cpu()
        out = torch.empty(n, m, emb.shape[-1], dtype=torch.float16) if out is None else out
        out[block] = emb.view(len(block), m, -1)
    return out


def partners_in_training(train_idx, v: int, *views: torch.Tensor) -> None:
    """A training picture's mixed view whose partner is not a training picture (validation, holdout) is
    replaced, in every tensor of ``views`` [N,V+1+M,...], by one of its augmented views: the student
    never sees a picture outside its split. ``views[0]`` holds the parameters."""
    m = views[0].shape[1] - v
    if not m:
        return
    inside = torch.zeros(len(views[0]), dtype=torch.bool)
    inside[train_idx] = True
    bad = ~inside[views[0][train_idx, v:, augment.PARTNER].long()]  # [n_train, M]
    rows = train_idx[:, None].expand(-1, m)[bad]
    cols = torch.arange(v, v + m)[None].expand(len(train_idx), -1)[bad]
    src = (torch.arange(m) % max(v - 1, 1) + (1 if v > 1 else 0))[None].expand(len(train_idx), -1)[bad]
    for t in views:
        t[rows, cols] = t[rows, src]
