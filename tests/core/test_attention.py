"""The ELITE cross-attention processor against a plain re-computation of paper Eq. 6 and Eq. 8."""

import pytest
import torch
from diffusers.models.attention_processor import Attention

from elite.models.attention import EliteConditioning, EliteCrossAttnProcessor, KVProjections

HEADS, DIM, TEXT, P = 4, 32, 16, 9


@pytest.fixture()
def layer():
    torch.manual_seed(0)
    attn = Attention(query_dim=DIM, cross_attention_dim=TEXT, heads=HEADS, dim_head=DIM // HEADS).eval()
    shapes = {"x": (TEXT, DIM, DIM)}
    g, loc = KVProjections(shapes), KVProjections(shapes)
    for p in [*g.parameters(), *loc.parameters()]:
        torch.nn.init.normal_(p, std=0.3)
    attn.set_processor(EliteCrossAttnProcessor(g.layers["x"], loc.layers["x"]))
    return attn, g.layers["x"], loc.layers["x"]


def _inputs(batch=2, seed=1):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(batch, 6, DIM, generator=g),
        torch.randn(batch, 7, TEXT, generator=g),
        torch.randn(batch, P, TEXT, generator=g),
    )


def reference(attn, gkv, lkv, x, text, local, lam, idx):
    """Eq. 8 written out per sample and per head, straight from the paper."""
    return reference_branches(attn, gkv, lkv, x, text, [(local, [[i] for i in idx.tolist()])], lam)


def reference_branches(attn, gkv, lkv, x, text, branches, lam):
    """out = A_g V_g + sum over branches of lam * (M / max M) * A_l V_l, per sample and per head; a branch is
    (local tokens (B, P, D), per sample the text positions whose attention maps are summed into its M)."""
    d = DIM // HEADS
    outs = []
    for b in range(x.shape[0]):
        q = attn.to_q(x[b]).view(-1, HEADS, d).transpose(0, 1)
        kg = gkv["to_k"](text[b]).view(-1, HEADS, d).transpose(0, 1)
        vg = gkv["to_v"](text[b]).view(-1, HEADS, d).transpose(0, 1)
        ag = torch.softmax(q @ kg.transpose(1, 2) / d**0.5, -1)
        heads = ag @ vg
        for local, positions in branches:
            kl = lkv["to_k"](local[b]).view(-1, HEADS, d).transpose(0, 1)
            vl = lkv["to_v"](local[b]).view(-1, HEADS, d).transpose(0, 1)
            al = torch.softmax(q @ kl.transpose(1, 2) / d**0.5, -1)
            m = sum(ag[..., i] for i in positions[b])
            heads = heads + lam[b] * (m / m.max())[..., None] * (al @ vl)
        outs.append(attn.to_out[0](heads.transpose(0, 1).reshape(-1, DIM)))
    return torch.stack(outs)


@torch.no_grad()
def test_eq8_matches_plain_recomputation(layer):
    attn, gkv, lkv = layer
    x, text, local = _inputs()
    lam, idx = torch.tensor([0.8, 0.6]), torch.tensor([3, 5])
    out = attn(x, encoder_hidden_states=EliteConditioning(text, local, lam, idx))
    torch.testing.assert_close(out, reference(attn, gkv, lkv, x, text, local, lam, idx), rtol=1e-5, atol=1e-5)
    # one concept written the several-concepts way (a tuple of one, a (B, 1) word index) is bit-identical
    assert torch.equal(out, attn(x, encoder_hidden_states=EliteConditioning(text, (local,), lam, idx[:, None])))
    assert torch.equal(out, attn(x, encoder_hidden_states=EliteConditioning(text, local, lam, idx[:, None])))


@torch.no_grad()
def test_lambda_zero_is_exactly_global_only(layer):
    attn, gkv, lkv = layer
    x, text, local = _inputs()
    global_only = attn(x, encoder_hidden_states=text)
    zero = attn(x, encoder_hidden_states=EliteConditioning(text, local, torch.zeros(2), torch.tensor([3, 3])))
    assert torch.equal(zero, global_only)
    # and the global K/V replace the layer's own K/V
    own = Attention(query_dim=DIM, cross_attention_dim=TEXT, heads=HEADS, dim_head=DIM // HEADS).eval()
    own.load_state_dict(attn.state_dict())
    assert not torch.allclose(own(x, encoder_hidden_states=text), global_only)


@torch.no_grad()
def test_unconditional_rows_get_no_local_term_and_rows_are_independent(layer):
    attn, gkv, lkv = layer
    x, text, local = _inputs()
    both = attn(
        x, encoder_hidden_states=EliteConditioning(text, local, torch.tensor([0.0, 1.0]), torch.tensor([0, 4]))
    )
    alone = attn(
        x[1:], encoder_hidden_states=EliteConditioning(text[1:], local[1:], torch.tensor([1.0]), torch.tensor([4]))
    )
    assert torch.equal(both[:1], attn(x[:1], encoder_hidden_states=text[:1]))
    # per-sample max: a row's output does not depend on the other rows of the batch
    torch.testing.assert_close(both[1:], alone)


@torch.no_grad()
def test_local_term_grows_with_lambda(layer):
    attn, gkv, lkv = layer
    x, text, local = _inputs(batch=1)
    base = attn(x, encoder_hidden_states=text)
    diffs = [
        (
            attn(x, encoder_hidden_states=EliteConditioning(text, local, torch.tensor([lam]), torch.tensor([2])))
            - base
        ).norm()
        for lam in (0.3, 0.6, 1.2)
    ]
    assert diffs[0] < diffs[1] < diffs[2]


@torch.no_grad()
def test_two_concepts_eq8_per_concept_matches_plain_recomputation(layer):
    """Each concept's local branch (its own tokens, of any count) weighted by its own w0's map, and the naive
    baseline (all tokens in one branch, the maps summed), against the per-sample, per-head formula."""
    attn, gkv, lkv = layer
    x, text, first = _inputs(batch=3)
    second = torch.randn(3, 2 * P, TEXT, generator=torch.Generator().manual_seed(7))  # a concept from two images
    lam, idx = torch.tensor([0.8, 0.0, 0.6]), torch.tensor([[2, 5], [0, 0], [6, 1]])
    out = attn(x, encoder_hidden_states=EliteConditioning(text, (first, second), lam, idx))
    cols = idx.tolist()
    expected = reference_branches(
        attn, gkv, lkv, x, text, [(first, [[c[0]] for c in cols]), (second, [[c[1]] for c in cols])], lam
    )
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    assert torch.equal(out[1:2], attn(x[1:2], encoder_hidden_states=text[1:2]))  # lambda 0: no local term

    naive = attn(x, encoder_hidden_states=EliteConditioning(text, torch.cat([first, second], 1), lam, idx))
    expected = reference_branches(attn, gkv, lkv, x, text, [(torch.cat([first, second], 1), cols)], lam)
    torch.testing.assert_close(naive, expected, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(naive, out, rtol=1e-3, atol=1e-3)
