"""The SigLIP teacher model: loading (the vision tower alone unless zero-shot prompts need the text
tower), its own preprocessing, image embeddings of replayable views, zero-shot logits.

``name`` is a Hugging Face id (``google/medsiglip-448``: gated; huggingface_hub finds the user's
token), or a randomly initialised stand-in built from a SiglipConfig (``RANDOM``). MedSigLIP is used
for inference only: nothing here updates its weights.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from kdq import hf
from kdq.train import augment
from kdq.train.standins import RANDOM

TEXT_LENGTH = 64  # SigLIP's text tower was trained on prompts padded to 64 tokens


@dataclass
class Teacher:
    vision: torch.nn.Module  # the vision tower (a transformers SiglipVisionModel)
    name: str
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    device: torch.device
    dtype: torch.dtype
    model: torch.nn.Module | None = None  # the whole SiglipModel: loaded only for zero-shot prompts
    features: str = "pooled"  # or "pooled+patch": the mean of the last layer's patch tokens beside it

    @torch.no_grad()
    def embed(
        self,
        images: torch.Tensor,
        params: torch.Tensor | None,
        aspect: torch.Tensor | None = None,
        partners: torch.Tensor | None = None,
        partner_aspect: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Image embeddings (float32 [B, D], or [B, 2D] with the patch mean) of views of uint8
        ``images`` (padded when ``aspect``; mixed with ``partners`` as ``params`` say), on the device."""
        x = augment.render(
            images.to(self.device),
            params,
            self.image_size,
            self.mean,
            self.std,
            self.dtype,
            aspect,
            None if partners is None else partners.to(self.device),
            partner_aspect,
        )
        out = self.vision(pixel_values=x)
        if self.features == "pooled":
            return out.pooler_output.float()
        return torch.cat([out.pooler_output, out.last_hidden_state.mean(1)], -1).float()

    @torch.no_grad()
    def embed_text(self, prompts: list[str]) -> torch.Tensor:
        if self.name not in RANDOM:  # only the tokenizer is needed here, so only it is loaded, only here
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(self.name)
            tok = tokenizer(
                prompts, padding="max_length", max_length=TEXT_LENGTH, truncation=True, return_tensors="pt"
            )
            ids = tok["input_ids"].to(self.device)
        else:  # random stand-in: a deterministic byte-level "tokenizer" into its small vocabulary
            length = self.model.config.text_config.max_position_embeddings
            vocab = self.model.config.text_config.vocab_size
            rows = [[(b % (vocab - 2)) + 2 for b in p.encode()[:length]] for p in prompts]
            ids = torch.tensor([r + [1] * (length - len(r)) for r in rows], device=self.device)
        out = self.model.get_text_features(input_ids=ids)  # type: ignore[union-attr]
        return (out if isinstance(out, torch.Tensor) else out.pooler_output).float()


def _unavailable(name: str, exc: OSError) -> RuntimeError:
    """What to do first (a status line shows the first line), then what Hugging Face said, whole."""
    said = str(exc).strip().splitlines() or [type(exc).__name__]
    return RuntimeError(
        f"teacher.model = {name!r} could not be loaded: accept its terms at https://huggingface.co/{name}, "
        "log in with `hf auth login` (or set HF_TOKEN), then `kdq retry`; offline, use teacher.model = "
        f"'tiny'. Hugging Face said: {said[0]}" + "".join(f"\n{line}" for line in said[1:])
    )


def load(name: str, device: torch.device, text: bool = False, features: str = "pooled") -> Teacher:
    """The teacher on ``device``: only its vision tower, unless ``text`` (zero-shot prompts) needs the
    whole model (half the weights of a SigLIP are its text tower)."""
    from transformers import SiglipConfig, SiglipModel

    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    if name in RANDOM:
        vision, txt = RANDOM[name]
        cfg = SiglipConfig(vision_config=vision, text_config=txt)
        cfg._attn_implementation = "sdpa"
        with torch.random.fork_rng(devices=[]):  # the same random teacher every time (its cache stays
            torch.manual_seed(0)  # valid), without touching the caller's random stream
            model = SiglipModel(cfg)
        model = model.to(device=device, dtype=dtype).eval()
        prep = (vision["image_size"], (0.5,) * 3, (0.5,) * 3)
        return Teacher(model.vision_model, name, *prep, device, dtype, model if text else None, features)
    if hf.is_stand_in(name):
        raise ValueError(f"teacher.model = {name!r}: unknown stand-in; choose one of {', '.join(RANDOM)}")
    from transformers import AutoModel, SiglipVisionModel
    from transformers.utils import logging as hf_logging

    kind = AutoModel if text else SiglipVisionModel  # the vision tower's weights alone are read
    was = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # not a table of the text tower's weights, "unexpected" by design
    try:  # huggingface_hub finds the token (HF_TOKEN or `hf auth login`) by itself
        model = kind.from_pretrained(name, dtype=dtype, attn_implementation="sdpa").to(device).eval()
        size, mean, std = preprocessing(name)
    except OSError as exc:
        raise _unavailable(name, exc) from None
    finally:
        hf_logging.set_verbosity(was)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    vision = model.vision_model if text else model
    return Teacher(vision, name, size, mean, std, device, dtype, model if text else None, features)


def preprocessing(name: str) -> tuple[int, tuple, tuple]:
    """(input size, mean, std) of a teacher (its own image processor's), without loading its weights."""
    if name in RANDOM:
        return RANDOM[name][0]["image_size"], (0.5,) * 3, (0.5,) * 3
    from transformers import AutoImageProcessor

    try:
        proc = AutoImageProcessor.from_pretrained(name)
    except OSError as exc:
        raise _unavailable(name, exc) from None
    size = proc.size.get("height") or proc.size.get("shortest_edge")
    return int(size), tuple(proc.image_mean), tuple(proc.image_std)


# ---------------------------------------------------------------- the embedding cache


def zero_shot_logits(teacher: Teacher, classes: list[str], emb: torch.Tensor) -> torch.Tensor:
    """SigLIP logits of every image embedding against one prompt per class."""
    names = [c.split(". ", 1)[-1] for c in classes]
    text = F.normalize(
        teacher.embed_text([f"a dermatology photo of {n.lower()}" for n in names]), dim=-1
    ).cpu()
    scale = float(teacher.model.logit_scale.detach().float().exp())
    bias = float(teacher.model.logit_bias.detach().float())
    return F.normalize(emb.float(), dim=-1) @ text.T * scale + bias


# ---------------------------------------------------------------- what the loop uses
