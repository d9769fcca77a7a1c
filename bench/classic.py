"""The authors' style of sampling step, for the step figure (not used by the pipeline).

The authors' code (diffusers 0.11 era) ran classifier-free guidance as two UNet calls per step
(unconditional, then conditional, batch 1 each) and computed attention the classic way: heads
folded into the batch dimension, `baddbmm` for the scores, softmax, `bmm` with the values (no
`scaled_dot_product_attention`). Here:

- self-attention (`attn1`): diffusers' own classic `AttnProcessor`;
- cross-attention (`attn2`): `ClassicEliteCrossAttn`, the same ELITE computation as
  `elite.models.attention.EliteCrossAttnProcessor` (global K/V, plus the local branch weighted by the
  w0 attention map over its maximum, Eq. 8) written the classic way. As in the authors' code the
  maximum is one scalar over the whole call, which equals our per-sample maximum at batch 1 (and
  each of the two calls is batch 1). The step figure checks that both give the same noise.
"""

from __future__ import annotations

import torch
from diffusers.models.attention_processor import Attention, AttnProcessor

from elite.models.attention import EliteConditioning, KVProjections
from elite.models.elite_model import EliteModel


class ClassicEliteCrossAttn:
    def __init__(self, global_kv, local_kv=None) -> None:
        self.global_kv, self.local_kv = global_kv, local_kv

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: EliteConditioning | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
    ) -> torch.Tensor:
        cond = encoder_hidden_states
        query = attn.head_to_batch_dim(attn.to_q(hidden_states))
        key = attn.head_to_batch_dim(self.global_kv["to_k"](cond.text))
        value = attn.head_to_batch_dim(self.global_kv["to_v"](cond.text))
        probs = attn.get_attention_scores(query, key, None)  # baddbmm + softmax, (B*heads, Nq, 77)
        out = torch.bmm(probs, value)
        if self.local_kv is not None and cond.local_tokens is not None:
            lam = float(cond.local_scale[0])
            if lam != 0:
                key_l = attn.head_to_batch_dim(self.local_kv["to_k"](cond.local_tokens))
                value_l = attn.head_to_batch_dim(self.local_kv["to_v"](cond.local_tokens))
                out_l = torch.bmm(attn.get_attention_scores(query, key_l, None), value_l)
                w0 = probs[:, :, int(cond.word_index[0])]  # (B*heads, Nq): each pixel's attention to w0
                out = out + lam * (w0 / w0.max())[..., None] * out_l
        out = attn.batch_to_head_dim(out)
        return attn.to_out[1](attn.to_out[0](out)) / attn.rescale_output_factor


def classic_processors(unet, elite: EliteModel | None) -> dict:
    """Processors for every attention layer: classic self-attention; classic ELITE cross-attention
    (with `elite`) or diffusers' classic processor everywhere (plain SD, `elite=None`)."""
    procs = {}
    for name in unet.attn_processors:
        path = name[: -len(".processor")]
        if elite is not None and path.endswith("attn2"):
            key = KVProjections.key(path)
            local = elite.local_kv.layers[key] if elite.local_kv is not None else None
            procs[name] = ClassicEliteCrossAttn(elite.global_kv.layers[key], local)
        else:
            procs[name] = AttnProcessor()
    return procs


def batched_step(unet, scheduler, latents, t, cond, guidance: float) -> torch.Tensor:
    """Our step: both halves of classifier-free guidance in one UNet call (`cond` holds both)."""
    model_in = scheduler.scale_model_input(torch.cat([latents] * 2), t)
    uncond, text = unet(model_in, t, encoder_hidden_states=cond).sample.chunk(2)
    return uncond + guidance * (text - uncond)


def two_call_step(unet, scheduler, latents, t, uncond, cond, guidance: float) -> torch.Tensor:
    """The authors' step: the unconditional and the conditional half as two UNet calls."""
    model_in = scheduler.scale_model_input(latents, t)
    u = unet(model_in, t, encoder_hidden_states=uncond).sample
    c = unet(model_in, t, encoder_hidden_states=cond).sample
    return u + guidance * (c - u)
