"""Tests for jepa_blocks.seq.reverse_sequence."""

from __future__ import annotations

import pytest
import torch

from jepa_blocks.seq import negate_actions, reverse_sequence


def test_reverse_sequence_pairs_views_with_inverse_actions():
    b, m, a = 2, 3, 2
    # parameters t_i per view; action i = t_{i+1} - t_i maps view i to view i+1
    t = torch.randn(b, m + 1, a)
    views = t[..., None, None].expand(b, m + 1, a, 3, 3)  # views carry their parameters
    actions = t[:, 1:] - t[:, :-1]
    rv, ra = reverse_sequence(views, actions)
    rt = t.flip(1)
    assert torch.equal(rv, views.flip(1))
    torch.testing.assert_close(ra, rt[:, 1:] - rt[:, :-1])  # reversed actions map reversed views
    v2, a2 = reverse_sequence(rv, ra)
    assert torch.equal(v2, views) and torch.equal(a2, actions)


def test_custom_inverse_and_errors():
    views, actions = torch.randn(2, 3, 1, 2, 2), torch.randn(2, 2, 4)
    _, ra = reverse_sequence(views, actions, invert=lambda x: x * 2)
    torch.testing.assert_close(ra, (actions * 2).flip(1))
    assert torch.equal(negate_actions(actions), -actions)
    with pytest.raises(ValueError, match=r"\(B, M, A\) = \(2, 2, A\)"):
        reverse_sequence(views, torch.randn(2, 3, 4))
    with pytest.raises(ValueError, match="invert must keep the action shape"):
        reverse_sequence(views, actions, invert=lambda x: x[..., :2])
