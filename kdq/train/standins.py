"""The randomly initialised SigLIP stand-ins, as data: name -> (vision config, text config) for a
transformers SiglipConfig. Torch-free, so `kdq enqueue` can cost a teacher's shape without importing it.
"""


def _tower(hidden: int, inter: int, layers: int, heads: int, **extra) -> dict:
    return dict(
        hidden_size=hidden,
        intermediate_size=inter,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        **extra,
    )


_IDS = dict(vocab_size=1000, bos_token_id=0, eos_token_id=2)  # token ids inside the small vocabulary
_SMALL_TEXT = _tower(64, 128, 1, 2, max_position_embeddings=16, **_IDS)
RANDOM = {  # name -> (vision config, text config): randomly initialised stand-ins
    "tiny": (
        _tower(32, 64, 2, 2, image_size=32, patch_size=8),
        _tower(32, 64, 2, 2, max_position_embeddings=16, **_IDS),
    ),
    "tiny-448": (_tower(32, 64, 1, 2, image_size=448, patch_size=56), _SMALL_TEXT),  # real decode size
    "random-b16-224": (_tower(768, 3072, 12, 12, image_size=224, patch_size=16), _SMALL_TEXT),
    "random-so400m-448": (_tower(1152, 4304, 27, 16, image_size=448, patch_size=14), _SMALL_TEXT),
}
