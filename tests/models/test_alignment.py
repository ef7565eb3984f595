"""Ridge heads and LEA's alignment heads against a numpy reference."""
import numpy as np
import pytest
import torch

from models.alignment import AlignmentHeads, RidgeHead, kfold_indices, out_of_fold_decode, restandardize
from utils.config import AlignConfig
from utils.errors import CheckpointError, ConfigError, DataError


def numpy_ridge(x, y, alpha, fit_intercept):
    """Reference: minimise ||y - xW - b||^2 + alpha ||W||^2 (b unpenalised) via the primal normal equations."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if fit_intercept:
        xm, ym = x.mean(0), y.mean(0)
    else:
        xm, ym = np.zeros(x.shape[1]), np.zeros(y.shape[1])
    xc, yc = x - xm, y - ym
    w = np.linalg.solve(xc.T @ xc + alpha * np.eye(x.shape[1]), xc.T @ yc)
    return w, ym - xm @ w


def data(n=60, d_in=12, d_out=5, seed=0, noise=0.1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d_in, generator=g, dtype=torch.float64) + 2.0
    w = torch.randn(d_in, d_out, generator=g, dtype=torch.float64)
    y = x @ w + 3.0 + noise * torch.randn(n, d_out, generator=g, dtype=torch.float64)
    return x, y


@pytest.mark.parametrize("fit_intercept", [True, False])
@pytest.mark.parametrize("solver", ["primal", "dual", "auto"])
@pytest.mark.parametrize("shape", [(60, 12), (15, 40)])
def test_matches_numpy_reference(fit_intercept, solver, shape):
    x, y = data(n=shape[0], d_in=shape[1])
    head = RidgeHead(alpha=3.0, fit_intercept=fit_intercept, solver=solver).fit(x, y)
    w_ref, b_ref = numpy_ridge(x.numpy(), y.numpy(), 3.0, fit_intercept)
    np.testing.assert_allclose(head.weight.numpy(), w_ref, atol=1e-6, rtol=1e-6)
    np.testing.assert_allclose(head.intercept.numpy(), b_ref, atol=1e-6, rtol=1e-6)
    np.testing.assert_allclose(head.predict(x).numpy(), x.numpy() @ w_ref + b_ref, atol=1e-6)


def test_primal_and_dual_agree_float32_inputs():
    x, y = data(n=30, d_in=20)
    heads = [RidgeHead(alpha=0.5, solver=s).fit(x.float(), y.float()) for s in ("primal", "dual")]
    torch.testing.assert_close(heads[0].weight, heads[1].weight, atol=1e-9, rtol=1e-9)
    pred = heads[0].predict(x.float())
    assert pred.dtype == torch.float32 and pred.shape == (30, 5)


def test_intercept_handling():
    x, y = data(noise=0.0)
    no_b = RidgeHead(alpha=1e-3, fit_intercept=False).fit(x, y)
    with_b = RidgeHead(alpha=1e-3, fit_intercept=True).fit(x, y)
    assert torch.count_nonzero(no_b.intercept) == 0
    torch.testing.assert_close(with_b.intercept, torch.full((5,), 3.0, dtype=torch.float64), atol=1e-3, rtol=0)
    # with an intercept the fit is exact on noiseless affine data; without it, it is not
    assert (with_b.predict(x) - y).abs().max() < 1e-3
    assert (no_b.predict(x) - y).abs().max() > 1e-2


def test_cv_scores_match_reference_and_pick_best():
    x, y = data(n=50, d_in=8, noise=0.0)
    grid = [1e-4, 10.0, 1e4]
    head = RidgeHead(alphas=grid, cv=5).fit(x, y)
    assert head.alpha == 1e-4  # noiseless affine data: least shrinkage wins
    for alpha in grid:                      # every recorded score equals a numpy k-fold reference
        errs = []
        for val in kfold_indices(50, 5):
            train = np.setdiff1d(np.arange(50), val.numpy())
            w, b = numpy_ridge(x[train].numpy(), y[train].numpy(), alpha, True)
            errs.append(((x[val].numpy() @ w + b - y[val].numpy()) ** 2).mean())
        assert head.cv_scores[alpha] == pytest.approx(np.mean(errs), rel=1e-6)

    noise_only = torch.randn(50, 5, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    assert RidgeHead(alphas=grid, cv=5).fit(x, noise_only).alpha == 1e4  # targets unrelated to inputs


def test_kfold_partition():
    folds = kfold_indices(23, 5)
    assert sorted(torch.cat(folds).tolist()) == list(range(23))
    assert [len(f) for f in folds] == [5, 5, 5, 4, 4]
    with pytest.raises(ConfigError):
        kfold_indices(3, 5)


def test_restandardize_statistics():
    g = torch.Generator().manual_seed(1)
    pred = torch.randn(40, 6, generator=g) * 0.01 + 5.0
    mean, std = torch.arange(6.0), torch.linspace(0.5, 3.0, 6)
    out = restandardize(pred, mean, std)
    torch.testing.assert_close(out.mean(0), mean, atol=1e-4, rtol=0)
    torch.testing.assert_close(out.std(0, unbiased=False), std, atol=1e-4, rtol=1e-4)
    # order within each column is kept (a monotone map per dimension)
    assert torch.equal(out.argsort(0), pred.argsort(0))
    with pytest.raises(DataError):
        restandardize(pred[:1], mean, std)
    with pytest.raises(DataError):
        restandardize(pred, mean[:3], std)


def test_alignment_heads_paper_settings_and_restandardize_flag():
    g = torch.Generator().manual_seed(2)
    z_f = torch.randn(80, 16, generator=g)
    z_i = z_f @ torch.randn(16, 10, generator=g) * 0.1 + 1.0
    heads = AlignmentHeads().fit(z_f, z_i)
    info = heads.describe()
    assert (info["decode_alpha"], info["decode_intercept"]) == (500.0, False)
    assert (info["encode_alpha"], info["encode_intercept"]) == (500.0, True)
    assert info["restandardize"] is True and info["fmri_dim"] == 16 and info["image_dim"] == 10
    decoded = heads.decode(z_f[:20])
    torch.testing.assert_close(decoded.mean(0).double(), z_i.double().mean(0), atol=1e-4, rtol=0)
    raw = AlignmentHeads(restandardize=False).fit(z_f, z_i)
    torch.testing.assert_close(raw.decode(z_f[:20]), raw.decoder.predict(z_f[:20]))
    assert heads.encode(z_i[:20]).shape == (20, 16)


def test_out_of_fold_decode_never_sees_its_own_rows():
    x, y = data(n=50, d_in=8, d_out=4, seed=3)
    align = AlignConfig(decode_alpha=1.0, alphas=[0.1, 1.0, 10.0], cv_folds=3)
    oof = out_of_fold_decode(align, x, y, folds=5)
    assert oof.shape == y.shape and oof.dtype == y.dtype
    # each fold equals heads fitted on the other folds and re-standardised over that fold alone
    val = kfold_indices(50, 5)[2]
    rest = torch.ones(50, dtype=torch.bool)
    rest[val] = False
    torch.testing.assert_close(oof[val], AlignmentHeads.from_config(align).fit(x[rest], y[rest]).decode(x[val]))
    # a row's own target (and its fold's) does not move its prediction; another fold's does
    changed = y.clone()
    changed[val] += 100.0
    again = out_of_fold_decode(align, x, changed, folds=5)
    torch.testing.assert_close(again[val], oof[val])
    assert not torch.allclose(again[rest], oof[rest])
    with pytest.raises(DataError):
        out_of_fold_decode(align, x, y[:10])


def test_out_of_fold_decode_holds_out_whole_groups():
    x, y = data(n=48, d_in=8, d_out=4, seed=4)
    align = AlignConfig(decode_alpha=1.0)
    groups = torch.arange(48) // 4  # 12 groups of 4 rows
    oof = out_of_fold_decode(align, x, y, folds=3, groups=groups)
    # shifting every target of group 5 leaves its own rows' predictions alone: the group is held out whole
    changed = y.clone()
    changed[groups == 5] += 100.0
    again = out_of_fold_decode(align, x, changed, folds=3, groups=groups)
    torch.testing.assert_close(again[groups == 5], oof[groups == 5])
    # without groups some rows of group 5 are predicted by heads that saw the others
    plain = out_of_fold_decode(align, x, y, folds=3)
    plain_changed = out_of_fold_decode(align, x, changed, folds=3)
    assert not torch.allclose(plain_changed[groups == 5], plain[groups == 5])
    with pytest.raises(DataError):
        out_of_fold_decode(align, x, y, folds=3, groups=groups[:10])


def test_save_load_round_trip(tmp_path):
    x, y = data()
    head = RidgeHead(alphas=[0.1, 1.0], cv=3, fit_intercept=True).fit(x, y)
    head.save(tmp_path / "ridge.pt")
    again = RidgeHead.load(tmp_path / "ridge.pt")
    torch.testing.assert_close(again.predict(x), head.predict(x))
    assert again.cv_scores == head.cv_scores and again.alpha == head.alpha

    heads = AlignmentHeads(restandardize=False).fit(x.float(), y.float())
    heads.save(tmp_path / "align.pt")
    loaded = AlignmentHeads.load(tmp_path / "align.pt")
    assert loaded.describe() == heads.describe()
    torch.testing.assert_close(loaded.decode(x.float()), heads.decode(x.float()))
    torch.testing.assert_close(loaded.encode(y.float()), heads.encode(y.float()))


def test_load_errors_name_file_and_key(tmp_path):
    x, y = data()
    heads = AlignmentHeads().fit(x, y)
    state = heads.state_dict()
    state["stats"]["image_std"] = torch.ones(3)
    bad = tmp_path / "bad.pt"
    torch.save({"format": "lea.alignment_heads", "version": 1, "state": state}, bad)
    with pytest.raises(CheckpointError, match=r"bad\.pt.*stats\.image_std.*\[5\]"):
        AlignmentHeads.load(bad)
    with pytest.raises(CheckpointError, match="not found"):
        AlignmentHeads.load(tmp_path / "missing.pt")
    heads.decoder.save(tmp_path / "ridge.pt")
    with pytest.raises(CheckpointError, match="lea.alignment_heads"):
        AlignmentHeads.load(tmp_path / "ridge.pt")


def test_shape_and_value_errors():
    x, y = data()
    with pytest.raises(DataError, match="rows"):
        RidgeHead().fit(x, y[:-1])
    with pytest.raises(DataError, match="2-D"):
        RidgeHead().fit(x[:, :, None], y)
    with pytest.raises(DataError, match="finite"):
        RidgeHead().fit(torch.full_like(x, float("nan")), y)
    head = RidgeHead().fit(x, y)
    with pytest.raises(DataError, match="12 columns"):
        head.predict(x[:, :3])
    with pytest.raises(ConfigError):
        RidgeHead(alpha=0.0)
    with pytest.raises(ConfigError):
        RidgeHead().predict(x)
