"""ELITE cross-attention as a diffusers attention processor (paper Eq. 6 and Eq. 8).

Like diffusers' IP-Adapter processors, the extra projections live beside the UNet (here in
`KVProjections`) and the processor only references them; the UNet's own `to_k`/`to_v` of the
cross-attention layers are not used once ELITE is attached (the global K/V replace them).

The local branch receives its inputs through `encoder_hidden_states` as a `EliteConditioning`
tuple, the way IP-Adapter passes image tokens, so no per-call state is kept on the processor and no
library class is patched. Per row of the batch it carries a local scale (lambda; 0 for the
unconditional half of classifier-free guidance) and the index of the word w0 in the text sequence.

    out = A_g V_g + lambda * (M / max M) * A_l V_l,   M = A_g[..., idx(w0)]

The max is taken per sample over all heads and pixels of the call (the authors take one max over the
whole batch; the two agree at batch size 1, which is how they sampled).

Several concepts in one prompt (S1*, S2*; beyond the paper): `word_index` has one column per concept.
With `local_tokens` a tuple (one tensor per concept) each concept gets its own local branch, weighted
by the attention map of its own w0 (Eq. 8 per concept), so one concept's details stay on its object:

    out = A_g V_g + sum_c lambda * (M_c / max M_c) * A_l^c V_l^c,   M_c = A_g[..., idx(w0 of c)]

With `local_tokens` one tensor and several columns, the tokens form one branch weighted by the sum of
the w0 maps (the naive baseline: M = sum_c M_c).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention
from torch import nn

from elite.errors import EliteError
from elite.models.local_control import layer_lambda


class EliteConditioning(NamedTuple):
    # (B, 77, D) text encoder states, or one such tensor per cross-attention layer keyed like
    # KVProjections (the P+ space of Extended Textual Inversion)
    # (None only in local-branch inputs that travel apart from the text: elite.loader)
    text: torch.Tensor | Mapping[str, torch.Tensor] | None
    # (B, P, D) local mapper output e: one local branch; or a tuple with one (B, P_c, D) per concept:
    # one branch per concept, each weighted by its own w0's map (column c of word_index)
    local_tokens: torch.Tensor | tuple[torch.Tensor, ...] | None = None
    local_scale: torch.Tensor | None = None  # (B,) lambda per row; 0 = no local term
    # (B,) position of w0 in the text sequence; (B, C) the positions of C concepts' w0
    word_index: torch.Tensor | None = None
    # (B, P) added to the local attention logits per token (weighted several-image concepts), as local_tokens
    # one tensor, or a tuple per concept (None: no bias for that concept)
    local_bias: torch.Tensor | tuple[torch.Tensor | None, ...] | None = None
    # lambda per cross-attention block (elite.models.local_control), multiplying local_scale layer by layer
    layer_scale: Mapping[str, Any] | None = None


class KVProjections(nn.Module):
    """One (to_k, to_v) pair per UNet cross-attention layer, keyed by the layer path with '_' for '.'."""

    def __init__(self, shapes: dict[str, tuple[int, int, int]]) -> None:
        super().__init__()
        # shapes: key -> (in_features, k_out, v_out)
        self.layers = nn.ModuleDict(
            {
                key: nn.ModuleDict(
                    {"to_k": nn.Linear(cin, k_out, bias=False), "to_v": nn.Linear(cin, v_out, bias=False)}
                )
                for key, (cin, k_out, v_out) in shapes.items()
            }
        )

    @staticmethod
    def key(module_path: str) -> str:
        return module_path.replace(".", "_")

    @classmethod
    def from_unet(cls, unet: nn.Module) -> KVProjections:
        """Copies of the UNet's own cross-attention K/V (how both ELITE stages initialise theirs)."""
        layers = cross_attention_layers(unet)
        kv = cls(
            {cls.key(p): (a.to_k.in_features, a.to_k.out_features, a.to_v.out_features) for p, a in layers.items()}
        )
        with torch.no_grad():
            for path, attn in layers.items():
                pair = kv.pair(cls.key(path))
                for name, own in (("to_k", attn.to_k), ("to_v", attn.to_v)):
                    target = pair[name]
                    assert isinstance(target, nn.Linear)
                    target.weight.copy_(own.weight)
        return kv

    def pair(self, key: str) -> nn.ModuleDict:
        """The layer's {"to_k", "to_v"}."""
        pair = self.layers[key]
        assert isinstance(pair, nn.ModuleDict)
        return pair

    def _linear(self, key: str, name: str) -> nn.Linear:
        layer = self.pair(key)[name]
        assert isinstance(layer, nn.Linear)
        return layer

    def shapes(self) -> dict[str, tuple[int, int, int]]:
        return {
            key: (
                self._linear(key, "to_k").in_features,
                self._linear(key, "to_k").out_features,
                self._linear(key, "to_v").out_features,
            )
            for key in self.layers
        }


def attach_processors(unet: nn.Module, global_kv: KVProjections, local_kv: KVProjections | None = None) -> None:
    """Install an EliteCrossAttnProcessor on each cross-attention layer (self-attention is untouched)."""
    layers = cross_attention_layers(unet)
    mismatch = set(global_kv.layers) ^ {KVProjections.key(p) for p in layers}
    if mismatch:
        raise EliteError(f"ELITE weights do not match this UNet's cross-attention layers: {sorted(mismatch)[:3]} ...")
    for path, attn in layers.items():
        key = KVProjections.key(path)
        local = local_kv.pair(key) if local_kv is not None else None
        attn.set_processor(EliteCrossAttnProcessor(global_kv.pair(key), local, layer=key))


def attach_base_processors(unet: nn.Module) -> None:
    """Processors that use each layer's own K/V: plain Stable Diffusion, but accepting EliteConditioning
    (so injected words, and per-layer text states, work on the base model; the baselines use this)."""
    for path, attn in cross_attention_layers(unet).items():
        own = nn.ModuleDict({"to_k": attn.to_k, "to_v": attn.to_v})
        attn.set_processor(EliteCrossAttnProcessor(own, None, layer=KVProjections.key(path)))


class KeepProcessor:
    """Runs a layer's own processor and drops ELITE's `elite` keyword: installed on the layers ELITE leaves alone
    (self-attention) while `elite` travels in a diffusers pipeline's `cross_attention_kwargs`, which diffusers
    hands to every attention layer."""

    def __init__(self, processor) -> None:
        self.processor = processor

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        elite: EliteConditioning | None = None,
    ) -> torch.Tensor:
        return self.processor(attn, hidden_states, encoder_hidden_states, attention_mask, temb)


def layer_level(key: str, num_levels: int) -> int:
    """Resolution level of a cross-attention layer: 0 = finest (64x64 latents in SD), num_levels-1 = coarsest."""
    block, index = key.split("_")[0:2], key.split("_")[2]
    if block == ["mid", "block"]:
        return num_levels - 1
    if block == ["down", "blocks"]:
        return int(index)
    return num_levels - 1 - int(index)


def cross_attention_layers(unet: nn.Module) -> dict[str, Attention]:
    """The UNet's cross-attention modules (`attn2`, 16 in Stable Diffusion v1) by module path."""
    return {
        name: module
        for name, module in unet.named_modules()
        if isinstance(module, Attention) and name.endswith("attn2") and module.is_cross_attention
    }


class EliteCrossAttnProcessor:
    """Processor for one cross-attention layer: global K/V (Eq. 6) plus the local branch (Eq. 8)."""

    def __init__(self, global_kv: nn.ModuleDict, local_kv: nn.ModuleDict | None = None, layer: str = "") -> None:
        self.global_kv = global_kv
        self.local_kv = local_kv
        self.layer = layer  # this layer's key, to pick its text states when they differ per layer

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: EliteConditioning | torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        elite: EliteConditioning | None = None,
    ) -> torch.Tensor:
        """`elite`: the local-branch inputs when `encoder_hidden_states` is a plain tensor, as a diffusers
        pipeline passes them through `cross_attention_kwargs={"elite": ...}` (elite.loader)."""
        cond = encoder_hidden_states
        if not isinstance(cond, EliteConditioning):
            if cond is None:
                raise ValueError("ELITE cross-attention needs encoder_hidden_states (text states)")
            cond = elite._replace(text=cond) if elite is not None else EliteConditioning(text=cond)
        if cond.layer_scale is not None and cond.local_scale is not None:  # this layer's lambda
            cond = cond._replace(local_scale=cond.local_scale * layer_lambda(cond.layer_scale, self.layer))
        if cond.text is None:
            raise ValueError("ELITE cross-attention needs text states in EliteConditioning.text")
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            b, c, h, w = hidden_states.shape
            hidden_states = hidden_states.view(b, c, h * w).transpose(1, 2)
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        batch = hidden_states.shape[0]
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, attention_mask.shape[-1], batch)
            attention_mask = attention_mask.view(batch, attn.heads, -1, attention_mask.shape[-1])

        query = _heads(attn.to_q(hidden_states), attn.heads)
        text = (cond.text[self.layer] if isinstance(cond.text, Mapping) else cond.text).to(query.dtype)
        key = _heads(self.global_kv["to_k"](text), attn.heads)
        value = _heads(self.global_kv["to_v"](text), attn.heads)
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)

        rows = _local_rows(cond) if self.local_kv is not None else None
        if rows is None or rows.numel() == 0:
            out = F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask)
        else:  # rows with a local term need A_g explicitly (for M); the others keep the fused kernel
            out = self._with_local(attn, query, key, value, attention_mask, cond, rows)
            if rows.numel() < batch:
                rest = torch.ones(batch, dtype=torch.bool, device=query.device)
                rest[rows] = False
                rest = torch.nonzero(rest).flatten()
                mask = attention_mask[rest] if attention_mask is not None else None
                plain = F.scaled_dot_product_attention(query[rest], key[rest], value[rest], attn_mask=mask)
                full = query.new_empty(batch, query.shape[1], query.shape[2], value.shape[-1])
                out = full.index_copy(0, rows, out).index_copy(0, rest, plain)

        out = out.transpose(1, 2).reshape(batch, -1, attn.heads * query.shape[-1]).to(query.dtype)
        out = attn.to_out[1](attn.to_out[0](out))
        if input_ndim == 4:
            out = out.transpose(-1, -2).reshape(b, c, h, w)
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor

    def _with_local(self, attn, query, key, value, attention_mask, cond: EliteConditioning, rows) -> torch.Tensor:
        q, k, v = query[rows], key[rows], value[rows]
        scale = 1.0 / math.sqrt(q.shape[-1])
        logits = q @ k.transpose(-1, -2) * scale
        if attention_mask is not None:
            logits = logits + attention_mask[rows]
        probs_g = logits.softmax(dim=-1)  # (R, heads, Nq, 77)
        out_g = probs_g @ v

        assert cond.word_index is not None and cond.local_scale is not None and cond.local_tokens is not None
        idx = cond.word_index[rows].to(q.device)
        lam = cond.local_scale[rows].to(q.dtype)[:, None, None, None]
        bias = cond.local_bias
        if isinstance(cond.local_tokens, torch.Tensor):  # one branch (one concept, or the naive baseline)
            assert not isinstance(bias, tuple)
            out_l = self._local(attn, q, cond.local_tokens[rows], None if bias is None else bias[rows])
            return out_g + lam * _w0_weight(probs_g, idx)[..., None] * out_l
        if idx.ndim != 2 or idx.shape[1] != len(cond.local_tokens):
            raise ValueError("EliteConditioning: per-concept local tokens need word_index of shape (B, concepts)")
        biases = bias if isinstance(bias, tuple) else (None,) * len(cond.local_tokens)
        out = out_g
        for c, (tokens, b) in enumerate(zip(cond.local_tokens, biases, strict=True)):  # Eq. 8 per concept
            out_l = self._local(attn, q, tokens[rows], None if b is None else b[rows])
            out = out + lam * _w0_weight(probs_g, idx[:, c])[..., None] * out_l
        return out

    def _local(self, attn, q, tokens, bias: torch.Tensor | None = None) -> torch.Tensor:
        """A_l V_l: the queries attend over the local tokens (bias (R, P): added to the logits per token)."""
        tokens = tokens.to(q.dtype)
        assert self.local_kv is not None
        k_l = _heads(self.local_kv["to_k"](tokens), attn.heads)
        v_l = _heads(self.local_kv["to_v"](tokens), attn.heads)
        mask = None if bias is None else bias.to(q.dtype)[:, None, None, :]
        return F.scaled_dot_product_attention(q, k_l, v_l, attn_mask=mask)


def _w0_weight(probs_g: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """M / max M per sample: M the attention of each pixel to w0 (idx (R,)), or the sum of the maps of
    several w0 (idx (R, C)). probs_g (R, heads, Nq, L) -> (R, heads, Nq)."""
    rows = torch.arange(len(idx), device=idx.device)
    # several w0: (R, C, heads, Nq) summed -> (R, heads, Nq)
    attn_w0 = probs_g[rows, :, :, idx] if idx.ndim == 1 else probs_g[rows[:, None], :, :, idx].sum(dim=1)
    peak = attn_w0.flatten(1).amax(dim=1).clamp_min(torch.finfo(probs_g.dtype).tiny)
    return attn_w0 / peak[:, None, None]


def _heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    b, n, d = x.shape
    return x.view(b, n, heads, d // heads).transpose(1, 2)


def _local_rows(cond: EliteConditioning) -> torch.Tensor | None:
    if cond.local_tokens is None or cond.local_scale is None:
        return None
    if cond.word_index is None:
        raise ValueError("EliteConditioning.word_index is required with local tokens")
    return torch.nonzero(cond.local_scale != 0).flatten()
