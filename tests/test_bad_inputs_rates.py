"""Bad-input table: the rates, the log-det core, the distributed helpers (see tests/bad_inputs.py)."""

from __future__ import annotations

import pytest
import torch

from bad_inputs import Case, run_case
from jepa_blocks import (
    CodingRate,
    LocalCodingRate,
    NonFiniteError,
    RateReduction,
    SimDINOExpansion,
    TotalCodingRate,
    UnitNormRate,
    VariationalRate,
    coding_rate,
    eps_from_code,
    rate_reduction,
    simdino_expansion,
    total_coding_rate,
    variational_rate,
)
from jepa_blocks.distributed import all_gather_rows, all_reduce_sum, global_sum, world_size
from jepa_blocks.linalg import compute_dtype, half_logdet_i_plus_gram, resolve_form

Z = torch.nn.functional.normalize(torch.randn(12, 6, generator=torch.Generator().manual_seed(0)))
LABELS = torch.arange(12) % 3
SOFT = torch.softmax(torch.randn(12, 3, generator=torch.Generator().manual_seed(1)), dim=-1)
NAN = Z.clone()
NAN[2, 3] = float("nan")


def _value(expected: float, tol: float = 1e-6):
    return lambda v: abs(float(v) - expected) <= tol * max(1.0, abs(expected))


CASES: list[Case] = [
    # coding_rate / CodingRate
    Case("coding_rate-z-list", lambda: coding_rate([[1.0, 2.0]]), match="z must be a torch.Tensor"),
    Case("coding_rate-z-int", lambda: coding_rate(LABELS[None].repeat(4, 1)), match="floating"),
    Case("coding_rate-z-1d", lambda: coding_rate(torch.ones(5)), match=r"at least 2 dim.*\(5,\)"),
    Case("coding_rate-z-empty-n", lambda: coding_rate(torch.ones(0, 4)), match=r"\(0, 4\)"),
    Case("coding_rate-z-empty-d", lambda: coding_rate(torch.ones(3, 0)), match=r"\(3, 0\)"),
    Case("coding_rate-z-complex", lambda: coding_rate(Z.to(torch.complex64)), match="real|float"),
    Case("coding_rate-z-nan", lambda: coding_rate(NAN), raises=NonFiniteError, match="NaN or inf"),
    Case("coding_rate-eps-0", lambda: coding_rate(Z, eps=0.0), match="eps must be a finite"),
    Case("coding_rate-eps-neg", lambda: coding_rate(Z, eps=-1), match="eps must be a finite"),
    Case("coding_rate-eps-nan", lambda: coding_rate(Z, eps=float("nan")), match="eps"),
    Case("coding_rate-eps-str", lambda: coding_rate(Z, eps="0.5"), match="eps must be a real"),
    Case("coding_rate-scale-neg", lambda: coding_rate(Z, scale=-2.0), match="scale"),
    Case("coding_rate-scale-0", lambda: coding_rate(Z, scale=0.0), raises=None, check=_value(0.0)),
    Case(
        "coding_rate-center-str", lambda: coding_rate(Z, center="no"), match="center must be a bool"
    ),
    Case("coding_rate-precision", lambda: coding_rate(Z, precision="fp16"), match="precision"),
    Case("coding_rate-form", lambda: coding_rate(Z, form="qr"), match="form"),
    Case(
        "coding_rate-distributed", lambda: coding_rate(Z, distributed="ring"), match="distributed"
    ),
    Case("coding_rate-one-sample", lambda: coding_rate(Z[:1]), raises=None, check=lambda v: v > 0),
    Case(
        "coding_rate-bf16",
        lambda: coding_rate(Z.bfloat16()),
        raises=None,
        check=lambda v: v.dtype == torch.float32 and abs(float(v) - float(coding_rate(Z))) < 0.05,
    ),
    Case("CodingRate-eps-0", lambda: CodingRate(eps=0), match="eps"),
    Case("CodingRate-center-str", lambda: CodingRate(center="no"), match="center must be a bool"),
    Case("CodingRate-precision", lambda: CodingRate(precision="half"), match="precision"),
    Case("CodingRate-form", lambda: CodingRate(form="lu"), match="form"),
    Case("CodingRate-z-3d-nan", lambda: CodingRate()(NAN[None]), raises=NonFiniteError),
    # rate_reduction / RateReduction
    Case(
        "rate_reduction-labels-n",
        lambda: rate_reduction(Z, torch.zeros(5, dtype=torch.long)),
        match=r"membership.*n=12.*\(5,\)",
    ),
    Case(
        "rate_reduction-soft-n",
        lambda: rate_reduction(Z, torch.ones(5, 2) / 2),
        match=r"membership.*n=12.*\(5, 2\)",
    ),
    Case("rate_reduction-list", lambda: rate_reduction(Z, [0] * 12), match="membership"),
    Case(
        "rate_reduction-label-negative",
        lambda: rate_reduction(Z, LABELS - 1),
        match=r"labels must lie in \[0, num_classes",
    ),
    Case(
        "rate_reduction-label-too-large",
        lambda: rate_reduction(Z, LABELS, num_classes=2),
        match=r"num_classes=2.*\[0, 2\]",
    ),
    Case("rate_reduction-soft-negative", lambda: rate_reduction(Z, SOFT - 0.2), match=">= 0"),
    Case(
        "rate_reduction-soft-not-normalised", lambda: rate_reduction(Z, 2 * SOFT), match="sum to 1"
    ),
    Case(
        "rate_reduction-soft-nan",
        lambda: rate_reduction(Z, torch.full((12, 3), float("nan"))),
        raises=NonFiniteError,
        match="membership",
    ),
    Case(
        "rate_reduction-soft-k-mismatch",
        lambda: rate_reduction(Z, SOFT, num_classes=4),
        match=r"n=12, 4",
    ),
    Case(
        "rate_reduction-num_classes-0",
        lambda: rate_reduction(Z, LABELS, num_classes=0),
        match="num_classes",
    ),
    Case("rate_reduction-gamma-neg", lambda: rate_reduction(Z, LABELS, gamma=-1.0), match="gamma"),
    Case(
        "rate_reduction-distributed",
        lambda: rate_reduction(Z, LABELS, distributed="gram"),
        match="distributed",
    ),
    Case(
        "rate_reduction-empty-class",
        lambda: rate_reduction(Z, LABELS, num_classes=5, return_parts=True).per_class,
        raises=None,
        check=lambda v: float(v[3]) == 0.0 and float(v[4]) == 0.0,
    ),
    Case(
        "rate_reduction-hard-equals-one-hot",
        lambda: (
            rate_reduction(Z, LABELS, num_classes=3)
            - rate_reduction(Z, torch.nn.functional.one_hot(LABELS, 3).float())
        ),
        raises=None,
        check=_value(0.0),
    ),
    Case("RateReduction-num_classes-0", lambda: RateReduction(num_classes=0), match="num_classes"),
    Case(
        "RateReduction-return_parts-str",
        lambda: RateReduction(return_parts="yes"),
        match="return_parts",
    ),
    Case(
        "RateReduction-distributed",
        lambda: RateReduction(distributed="gather"),
        match="distributed",
    ),
    # TCR / SimDINO / eps / UnitNormRate
    Case("total_coding_rate-empty", lambda: total_coding_rate([]), match="at least one view"),
    Case(
        "total_coding_rate-2d",
        lambda: total_coding_rate(torch.ones(4, 3)),
        match=r"\(\.\.\., V, n, d\)",
    ),
    Case(
        "total_coding_rate-ragged",
        lambda: total_coding_rate([torch.ones(4, 3), torch.ones(5, 3)]),
        match="one shape",
    ),
    Case("TotalCodingRate-eps", lambda: TotalCodingRate(eps=-1), match="eps"),
    Case("simdino-balance-str", lambda: SimDINOExpansion(balance="no"), match="balance"),
    Case(
        "simdino-local-scale-str",
        lambda: SimDINOExpansion(official_local_scale=1),
        match="official_local_scale",
    ),
    Case("simdino-nan", lambda: simdino_expansion(NAN[None]), raises=NonFiniteError),
    Case("eps_from_code-neg", lambda: eps_from_code(-0.2), match="eps_code"),
    Case("eps_from_code-str", lambda: eps_from_code("0.2"), match="eps_code"),
    Case("eps_from_code-value", lambda: eps_from_code(0.25), raises=None, check=_value(0.5)),
    Case("UnitNormRate-not-callable", lambda: UnitNormRate(3), match="rate must be callable"),
    Case(
        "UnitNormRate-scale-invariant",
        lambda: UnitNormRate(CodingRate())(10 * Z) - CodingRate()(Z),
        raises=None,
        check=_value(0.0, 1e-5),
    ),
    # the log-det core
    Case("half_logdet-scale-neg", lambda: half_logdet_i_plus_gram(Z, -1.0), match="scale"),
    Case(
        "half_logdet-scale-tensor-neg",
        lambda: half_logdet_i_plus_gram(Z[None].repeat(2, 1, 1), torch.tensor([1.0, -1.0])),
        match="scale must be finite and >= 0",
    ),
    Case(
        "half_logdet-scale-tensor-int",
        lambda: half_logdet_i_plus_gram(Z, torch.tensor(2)),
        match="floating tensor",
    ),
    Case(
        "half_logdet-scale-str",
        lambda: half_logdet_i_plus_gram(Z, "1"),
        match="scale must be a float",
    ),
    Case("half_logdet-scale-bool", lambda: half_logdet_i_plus_gram(Z, True), match="scale"),
    Case(
        "half_logdet-fallback-str",
        lambda: half_logdet_i_plus_gram(Z, 1.0, fallback="no"),
        match="fallback",
    ),
    Case(
        "half_logdet-all_reduce-nxn",
        lambda: half_logdet_i_plus_gram(Z.T, 1.0, form="nxn", all_reduce=True),
        match="all_reduce",
    ),
    Case(
        "half_logdet-z-empty",
        lambda: half_logdet_i_plus_gram(torch.ones(0, 3), 1.0),
        match="non-empty",
    ),
    Case("half_logdet-z-nan", lambda: half_logdet_i_plus_gram(NAN, 1.0), raises=NonFiniteError),
    Case("resolve_form-bad", lambda: resolve_form(3, 4, "chol"), match="form"),
    Case("compute_dtype-bad", lambda: compute_dtype(torch.float32, "bf16"), match="precision"),
    # the variational rate
    Case("variational-labels-no-k", lambda: variational_rate(Z, LABELS, None), match="num_classes"),
    Case(
        "variational-labels-range",
        lambda: variational_rate(Z, LABELS, None, num_classes=2),
        match=r"\[0, num_classes=2\)",
    ),
    Case(
        "variational-soft-not-normalised",
        lambda: variational_rate(Z, 3 * SOFT, None),
        match="sum to 1",
    ),
    Case(
        "variational-projections-d",
        lambda: variational_rate(Z, SOFT, torch.eye(5).expand(3, 5, 5)),
        match=r"d=6",
    ),
    Case("variational-eps", lambda: variational_rate(Z, SOFT, None, eps=0), match="eps"),
    Case(
        "variational-distributed",
        lambda: variational_rate(Z, SOFT, None, distributed="x"),
        match="distributed",
    ),
    Case("VariationalRate-k", lambda: VariationalRate(num_classes=0), match="num_classes"),
    # the sliding-window rate
    Case("LocalCodingRate-dim-0", lambda: LocalCodingRate(0), match="dim"),
    Case("LocalCodingRate-window-float", lambda: LocalCodingRate(4, window=2.5), match="window"),
    Case("LocalCodingRate-z-dim", lambda: LocalCodingRate(5)(Z), match=r"\(b, 5\)"),
    Case(
        "LocalCodingRate-push-nan",
        lambda: LocalCodingRate(6).push(NAN),
        raises=NonFiniteError,
        match="window is unchanged",
    ),
    Case(
        "LocalCodingRate-distributed",
        lambda: LocalCodingRate(6, distributed="all"),
        match="distributed",
    ),
    # distributed helpers outside a job: identities
    Case(
        "all_gather_rows-single",
        lambda: all_gather_rows(Z) - Z,
        raises=None,
        check=lambda v: bool((v == 0).all()),
    ),
    Case(
        "global_sum-single",
        lambda: global_sum(Z) - Z,
        raises=None,
        check=lambda v: bool((v == 0).all()),
    ),
    Case(
        "all_reduce_sum-detached",
        lambda: all_reduce_sum(Z.requires_grad_(False)).requires_grad,
        raises=None,
        check=lambda v: v is False,
    ),
    Case("world_size-single", lambda: world_size(), raises=None, check=lambda v: v == 1),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_bad_input(case: Case) -> None:
    run_case(case)


def test_a_rejected_push_leaves_the_window_unchanged() -> None:
    reg = LocalCodingRate(6, window=8)
    reg(Z[:4])
    before = {k: v.clone() for k, v in reg.state_dict().items()}
    with pytest.raises(NonFiniteError):
        reg.push(NAN)
    with pytest.raises(NonFiniteError):
        reg(NAN)  # the rate refuses first; nothing is pushed
    for k, v in reg.state_dict().items():
        assert torch.equal(v, before[k]), k
