"""The text of a small spec file, for the tests and the benchmarks: the tiny student on 32-pixel generated
pictures, no teacher, plain cross-entropy. Everything else is kdq's default.

    tiny_spec()                                          # name "tiny", 2 epochs, policy "never"
    tiny_spec("s", extra=SMALL_SEARCH)                   # a [search] table (or a [sweep]) appended
    tiny_spec(train_extra='device = "cpu"', data_extra="holdout_fraction = 0.25")  # more lines

No import of kdq or pytest: a benchmark reads it as well (``benchmarks/search.py``).
"""

from __future__ import annotations

TEMPLATE = """
name = "{name}"
[student]
library = "kdq"
name = "tiny_cnn"
[teacher]
kind = "none"
[distill]
loss = "ce"
[train]
epochs = {epochs}
batch_size = 32
image_size = 32
seed = {seed}
{train_extra}
[data]
dataset = "{dataset}"
decode_size = {decode_size}
{data_extra}
[submit]
policy = "{policy}"
{extra}"""

# A small search: six trials, two at a time, over the learning rate and the epochs.
SMALL_SEARCH = """
[search]
trials = 6
parallel = 2
[search.space]
"train.lr" = { low = 1e-4, high = 1e-2, log = true }
"train.epochs" = { low = 2, high = 6 }
"""


def tiny_spec(
    name: str = "tiny",
    *,
    epochs: int = 2,
    policy: str = "never",
    seed: int = 0,
    dataset: str = "synth",
    train_extra: str = "",
    data_extra: str = "",
    extra: str = "",
    decode_size: int = 40,
) -> str:
    return TEMPLATE.format(
        name=name,
        decode_size=decode_size,
        epochs=epochs,
        policy=policy,
        seed=seed,
        dataset=dataset,
        train_extra=train_extra,
        data_extra=data_extra,
        extra=extra,
    )
