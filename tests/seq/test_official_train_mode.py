"""One training-mode step equals the official ``SeqJEPA_Transforms.forward``, in float64.

The reference is written from ``hafezgh/seq-jepa`` ``seq-jepa/src/models.py``
(``SeqJEPA_Transforms.forward``, ``learn_act_emb=True``): the online encoder on the observed
views, the EMA target encoder on the predicted view, then the action projector called on the
predictor's action ``a_M`` *first* and on the token actions second; on the augmentation path
(``rel_latents=None``) the last token's action input is a zero vector *before* the projector (so
it enters the projector's BatchNorm statistics), on the 3DIEBench path (``rel_latents`` given) it
is ``a_M``; either way the last token's embedding is zeroed after the projector. Loss
``1 − cos(pred, sg(target))``. Compared: loss, ``z_agg``, every parameter gradient and every
BatchNorm running statistic after the step, to 1e-10.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from jepa_blocks import EMATarget, SeqJEPA, SmallCNN

D, E, A, B, M = 16, 8, 5, 6, 3


def build(last_token_action: str) -> SeqJEPA:
    torch.manual_seed(0)
    enc = SmallCNN(in_channels=1, out_dim=D, width=4)
    model = SeqJEPA.from_encoder(
        enc, EMATarget(enc, total_steps=10), encoder_dim=D, action_dim=A, action_embed_dim=E,
        predictor_hidden=32, depth=2, heads=2, dropout=0.0, last_token_action=last_token_action,
    )  # fmt: skip
    return model.double().train()


def official_forward(model: SeqJEPA, views: torch.Tensor, actions: torch.Tensor, path: str):
    """The official forward, step by step, with the model's own modules as the official ones."""
    x_obs, x_pred = views[:, :M], views[:, M]
    enc_obs = model.encoder(x_obs.reshape(B * M, *views.shape[2:])).reshape(B, M, D)
    with torch.no_grad():
        enc_pred = model.target.encoder(x_pred).detach()
    proj = model.action_encoder  # Linear(bias=False) → BatchNorm1d(affine=False)
    relative = torch.zeros_like(actions)
    if path == "augmentation":  # rel_latents is None
        relative[:, :-1] = actions[:, :-1]  # a_1 … a_{M-1}; the last slot stays zero
    else:  # 3DIEBench: rel_latents, whose last entry a_M also fills the last slot
        relative = actions.clone()
    act_pred = proj(actions[:, -1])  # first call: the predictor's action
    act_tok = proj(relative.reshape(-1, A)).reshape(B, M, E)  # second call: the tokens
    act_tok = act_tok.clone()
    act_tok[:, -1] = 0.0
    z_agg = model.aggregator(torch.cat([enc_obs, act_tok], dim=-1))
    pred = model.predictor(torch.cat([z_agg, act_pred], dim=-1))
    loss = 1 - F.cosine_similarity(pred, enc_pred, dim=-1).mean()
    return loss, z_agg


@pytest.mark.parametrize(
    ("last_token_action", "path"), [("zeros", "augmentation"), ("action", "3diebench")]
)
def test_one_train_step_equals_the_official_forward(last_token_action, path):
    model = build(last_token_action)
    ref = copy.deepcopy(model)
    g = torch.Generator().manual_seed(1)
    views = torch.randn(B, M + 1, 1, 8, 8, generator=g, dtype=torch.float64)
    actions = torch.randn(B, M, A, generator=g, dtype=torch.float64)

    out = model(views, actions)
    out.loss.backward()
    loss, z_agg = official_forward(ref, views, actions, path)
    loss.backward()

    torch.testing.assert_close(out.loss, loss, rtol=0, atol=1e-10)
    torch.testing.assert_close(out.z_agg, z_agg, rtol=0, atol=1e-10)
    grads = dict(model.named_parameters())
    for name, p in ref.named_parameters():
        if p.grad is None:
            assert grads[name].grad is None, name
            continue
        torch.testing.assert_close(grads[name].grad, p.grad, rtol=0, atol=1e-10, msg=name)
    buffers = dict(model.named_buffers())
    for name, buf in ref.named_buffers():
        torch.testing.assert_close(buffers[name], buf, rtol=0, atol=1e-10, msg=name)


def test_the_two_paths_differ_in_training_mode():
    """The options are not cosmetic: zeros vs a_M in the last slot changes BatchNorm statistics."""
    g = torch.Generator().manual_seed(2)
    views = torch.randn(B, M + 1, 1, 8, 8, generator=g, dtype=torch.float64)
    actions = torch.randn(B, M, A, generator=g, dtype=torch.float64)
    zeros, action = build("zeros")(views, actions), build("action")(views, actions)
    assert not torch.allclose(zeros.z_agg, action.z_agg)
