"""Multi-scale attention backbone: end-aligned pooling, fusion weights, external timeframes,
heads that return logits, and the backbone contract."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from tradezoo.policies import ARCHITECTURES, make_backbone
from tradezoo.policies.msa import (
    MSABackbone,
    MSAConfig,
    MSAHeads,
    _EncoderLayer,
    end_aligned_pool,
)

N_FEATURES = 5


def backbone(seed: int = 0, external: list[int] | None = None, **cfg: object) -> MSABackbone:
    torch.manual_seed(seed)
    config = MSAConfig(**{"d_model": 8, "n_heads": 2, **cfg})  # type: ignore[arg-type]
    return MSABackbone(N_FEATURES, config, external_scales=external)


def timeframes(batch: int, lengths: list[int], seed: int = 1) -> list[Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, n, N_FEATURES, generator=generator) for n in lengths]


# -- registry and config ----------------------------------------------------------------------


def test_registered_under_its_name() -> None:
    arch = ARCHITECTURES["msa"]
    assert arch.backbone_cls is MSABackbone and arch.config_cls is MSAConfig
    net = make_backbone("msa", N_FEATURES, d_model=8, n_heads=2, scales=[1, 2])
    assert net.config.scales == (1, 2) and not net.emits_sequence


@pytest.mark.parametrize("scales", [(), (4, 1), (1, 1), (0, 2), (1.5,), "14"])
def test_bad_scales_are_rejected(scales: object) -> None:
    with pytest.raises(ValueError, match="scales"):
        MSAConfig(scales=scales)  # type: ignore[arg-type]


def test_other_config_rules() -> None:
    with pytest.raises(ValueError, match="n_heads"):
        MSAConfig(d_model=10, n_heads=4)
    with pytest.raises(ValueError, match="dropout"):
        MSAConfig(dropout=-0.1)
    with pytest.raises(ValueError, match="max_positions"):
        MSAConfig(max_positions=0)


# -- windows and shapes ------------------------------------------------------------------------


def test_min_window_is_the_largest_scale() -> None:
    assert MSABackbone.min_window(MSAConfig()) == 16
    assert MSABackbone.min_window(MSAConfig(scales=(1, 3))) == 3


@pytest.mark.parametrize("window", [1, 7, 16, 64, 257])
def test_shapes_or_window_error(window: int) -> None:
    net = backbone().eval()  # scales (1, 4, 16)
    x = torch.randn(2, window, N_FEATURES)
    if window < 16:
        with pytest.raises(ValueError, match=r"(?s)at least 16 bars.*window="):
            net(x)
        return
    with torch.no_grad():
        assert net(x).shape == (2, 8)


@pytest.mark.parametrize("window", [1, 7])
def test_scale_one_takes_any_window(window: int) -> None:
    net = backbone(scales=(1,)).eval()
    with torch.no_grad():
        assert net(torch.randn(2, window, N_FEATURES)).shape == (2, 8)


def test_windows_beyond_the_position_table_share_its_last_row() -> None:
    net = backbone(scales=(1, 4), max_positions=8).eval()
    rows = net._positions(0, 20)  # oldest first; row P-1-a of the table is age a
    assert rows.shape == (20, 8)
    torch.testing.assert_close(rows[-1], net.pos_emb[0, 7])  # the latest token: age 0
    torch.testing.assert_close(rows[-2], net.pos_emb[0, 6])  # age 1
    torch.testing.assert_close(rows[-8], net.pos_emb[0, 0])  # age 7: the far-past row
    torch.testing.assert_close(rows[0], net.pos_emb[0, 0])  # older than the table: clamped
    torch.testing.assert_close(net._positions(0, 3), net.pos_emb[0, 5:])
    with torch.no_grad():
        assert net(torch.randn(1, 40, N_FEATURES)).shape == (1, 8)


# -- end-aligned pooling ------------------------------------------------------------------------


def test_pooling_is_end_aligned_and_drops_the_oldest_remainder() -> None:
    x = torch.arange(10.0).view(1, 10, 1)
    pooled = end_aligned_pool(x, 4)  # bars 0-1 dropped; tokens over 2..5 and 6..9
    torch.testing.assert_close(pooled.flatten(), torch.tensor([3.5, 7.5]))
    assert end_aligned_pool(x, 1) is x
    with pytest.raises(ValueError, match="at least 11 bars"):
        end_aligned_pool(x, 11)


def test_dropped_oldest_bars_change_nothing_and_the_latest_bar_changes_the_output() -> None:
    net = backbone(scales=(4, 16)).eval()  # L=37: scale 4 drops bar 0, scale 16 drops 0..4
    x = torch.randn(2, 37, N_FEATURES)
    with torch.no_grad():
        base = net(x)
        dropped = x.clone()
        dropped[:, 0] = 100.0
        torch.testing.assert_close(net(dropped), base, rtol=0, atol=0)
        used = x.clone()
        used[:, 1] += 1.0  # kept by scale 4
        assert not torch.allclose(net(used), base)
        latest = x.clone()
        latest[:, -1] += 1.0
        assert not torch.allclose(net(latest), base)


def test_scale_encoders_are_causal() -> None:
    torch.manual_seed(5)
    layer = _EncoderLayer(8, 2, 2, 0.0).eval()
    tokens = torch.randn(2, 12, 8)
    with torch.no_grad():
        base = layer(tokens)
        moved = tokens.clone()
        moved[:, 7:] = torch.randn(2, 5, 8)
        torch.testing.assert_close(layer(moved)[:, :7], base[:, :7], rtol=0, atol=1e-6)


# -- contract ----------------------------------------------------------------------------------


def test_batch_equals_samples_one_by_one() -> None:
    net = backbone().eval()
    x = torch.randn(4, 37, N_FEATURES)
    with torch.no_grad():
        batched = net(x)
        single = torch.cat([net(x[i : i + 1]) for i in range(4)])
    torch.testing.assert_close(batched, single, rtol=0, atol=1e-5)


@pytest.mark.parametrize("scale", [1e3, 0.0])
def test_finite_outputs_and_gradients_for_huge_and_zero_inputs(scale: float) -> None:
    net = backbone().train()
    x = (torch.randn(2, 40, N_FEATURES) * scale).requires_grad_(True)
    out = net(x)
    assert torch.isfinite(out).all()
    out.pow(2).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())


def test_feature_count_mismatch_names_both_numbers() -> None:
    with pytest.raises(ValueError, match=r"(?s)7.*5"):
        backbone()(torch.zeros(1, 16, 7))


# -- fusion and attention diagnostics -----------------------------------------------------------


def test_explain_weights_are_distributions_and_fusion_renormalises() -> None:
    net = backbone(fusion="gated").eval()  # the fusion with per-scale weights
    with torch.no_grad():
        net.static_logits.copy_(torch.tensor([0.5, -1.0, 2.0]))
    info = net.explain(torch.randn(3, 37, N_FEATURES))  # tokens: 37 + 9 + 2
    assert info["attention"].shape == (3, 2, 3, 48)
    torch.testing.assert_close(info["attention"].sum(-1), torch.ones(3, 2, 3))
    assert info["token_scale"].tolist() == [0] * 37 + [1] * 9 + [2] * 2
    assert info["token_age"][36] == 0 and info["token_age"][0] == 36
    static, gates, weights = (info[k] for k in
                              ("scale_weights_static", "scale_gates", "scale_weights"))
    torch.testing.assert_close(static, torch.tensor([0.5, -1.0, 2.0]).softmax(0))
    assert gates.shape == (3, 3) and bool(((gates > 0) & (gates < 1)).all())
    product = static * gates
    torch.testing.assert_close(weights, product / product.sum(-1, keepdim=True))
    assert all(not v.requires_grad for v in info.values())


def test_scale_attention_is_the_attention_each_scales_tokens_receive() -> None:
    net = backbone().eval()
    info = net.explain(torch.randn(3, 37, N_FEATURES))
    per_token = info["attention"].mean(dim=(1, 2))  # [B, T]
    expected = torch.stack([per_token[:, info["token_scale"] == s].sum(-1) for s in range(3)],
                           -1)
    torch.testing.assert_close(info["scale_attention"], expected)
    torch.testing.assert_close(info["scale_attention"].sum(-1), torch.ones(3))


# Five columns: two decomposition bands (wav_d1 = columns 0 and 2, vmd_1 = 1, 3, 4)
BAND_NAMES = ("wav_d1", "vmd_m1", "wav_e_d1", "vmd_e1", "vmd_f1")


def test_band_attention_splits_scale_attention_over_the_bands() -> None:
    from tradezoo.policies.explain import explain

    net = backbone()
    x = torch.randn(2, 32, N_FEATURES)
    info = explain(net, x, feature_names=BAND_NAMES)
    bands = [k for k in info if k.startswith("band_attention/")]
    assert bands == ["band_attention/wav_d1", "band_attention/vmd_1"]  # no other column
    total = sum(info[k] for k in bands)
    torch.testing.assert_close(total, info["scale_attention"])
    # Only the wavelet band reaches the tokens: it carries all the attention each scale gets.
    with torch.no_grad():
        net.input_proj.weight[:, [1, 3, 4]] = 0.0
    info = explain(net, x, feature_names=BAND_NAMES[:4])  # column 4 then counts as "other"
    torch.testing.assert_close(info["band_attention/wav_d1"], info["scale_attention"])
    assert info["band_attention/vmd_1"].abs().max() == 0
    assert info["band_attention/other"].abs().max() == 0


def test_band_attention_needs_msa_and_band_columns() -> None:
    from tradezoo.policies.explain import explain

    x = torch.randn(1, 16, N_FEATURES)
    with pytest.raises(ValueError, match="no decomposition column"):
        explain(backbone(), x, feature_names=["a", "b", "c", "d", "e"])
    with pytest.raises(ValueError, match="6 feature_names for a model of 5"):
        explain(backbone(), x, feature_names=[*BAND_NAMES, "extra"])
    with pytest.raises(ValueError, match="msa models only"):
        explain(make_backbone("gru", N_FEATURES, d_model=8), x, feature_names=BAND_NAMES)


# -- external timeframes --------------------------------------------------------------------


def test_external_scales_shapes_and_batch_consistency() -> None:
    net = backbone(external=[30, 12, 5]).eval()
    xs = timeframes(3, [30, 12, 5])
    with torch.no_grad():
        out = net.forward_scales(xs)
        single = torch.cat([net.forward_scales([x[i : i + 1] for x in xs]) for i in range(3)])
    assert out.shape == (3, 8)
    torch.testing.assert_close(out, single, rtol=0, atol=1e-5)
    info = net.explain_scales(xs)
    assert info["attention"].shape == (3, 2, 3, 47) and info["scale_attention"].shape == (3, 3)
    gated = backbone(external=[30, 12, 5], fusion="gated").eval().explain_scales(xs)
    assert gated["scale_weights"].shape == (3, 3)


def test_external_scales_take_the_pooling_factors_out_of_play() -> None:
    net = backbone(external=[4, 2], scales=(1, 64))  # short windows although max(scales)=64
    with torch.no_grad():
        assert net.forward_scales(timeframes(2, [4, 2])).shape == (2, 8)
    with pytest.raises(ValueError, match=r"external_scales=\[4, 2\].*forward_scales"):
        net(torch.randn(2, 64, N_FEATURES))


def test_external_scales_bad_input() -> None:
    net = backbone(external=[6, 3])
    with pytest.raises(ValueError, match=r"list of 2 tensors.*got 1 tensors"):
        net.forward_scales(timeframes(2, [6]))
    with pytest.raises(ValueError, match="got a single tensor"):
        net.forward_scales(torch.randn(2, 6, N_FEATURES))  # type: ignore[arg-type]
    wrong_features = [torch.randn(2, 6, N_FEATURES), torch.randn(2, 3, N_FEATURES + 2)]
    with pytest.raises(ValueError, match=r"timeframe 1.*\[batch, 3, 5\].*\(2, 3, 7\)"):
        net.forward_scales(wrong_features)
    with pytest.raises(ValueError, match=r"timeframe 0.*window length 6.*\(2, 5, 5\)"):
        net.forward_scales(timeframes(2, [5, 3]))
    mixed_batch = [torch.randn(2, 6, N_FEATURES), torch.randn(3, 3, N_FEATURES)]
    with pytest.raises(ValueError, match="same batch size"):
        net.forward_scales(mixed_batch)
    with pytest.raises(ValueError, match="built with external_scales"):
        backbone().forward_scales(timeframes(2, [16]))


@pytest.mark.parametrize("lengths", [[], [4, 0], ["8"]])
def test_bad_external_scales_are_rejected(lengths: list[object]) -> None:
    with pytest.raises(ValueError, match="external_scales"):
        backbone(external=lengths)  # type: ignore[arg-type]


# -- heads --------------------------------------------------------------------------------------


def test_heads_return_logits_not_probabilities() -> None:
    torch.manual_seed(6)
    heads = MSAHeads(8, regression=True)
    with torch.no_grad():
        heads.direction.weight.mul_(50.0)  # a confident (e.g. trained) head
    out = heads(torch.randn(64, 8))
    assert set(out) == {"logits", "short", "medium", "long", "regression"}
    assert out["logits"].shape == (64, 3) and out["regression"].shape == (64, 3)
    for name in ("short", "medium", "long"):
        assert out[name].shape == (64,)
        # A sigmoid inside would keep every value in (0, 1).
        assert bool((out[name] < 0).any()) and bool((out[name] > 1).any())
    assert "regression" not in MSAHeads(8)(torch.randn(2, 8))


def test_head_losses_use_cross_entropy_and_bce_with_logits() -> None:
    torch.manual_seed(7)
    heads = MSAHeads(8, horizons=("h1", "h4"), regression=True)
    out = heads(torch.randn(5, 8))
    labels = torch.tensor([0, 1, 2, 1, 0])
    up = {"h1": torch.tensor([1, 0, 1, 1, 0]), "h4": torch.tensor([0.0, 0, 1, 1, 1])}
    targets = torch.randn(5, 2)
    losses = heads.loss(out, labels=labels, directions=up, targets=targets)
    torch.testing.assert_close(losses["class"], F.cross_entropy(out["logits"], labels))
    torch.testing.assert_close(
        losses["h1"], F.binary_cross_entropy_with_logits(out["h1"], up["h1"].float())
    )
    torch.testing.assert_close(losses["regression"], F.mse_loss(out["regression"], targets))
    torch.testing.assert_close(
        losses["total"], losses["class"] + losses["h1"] + losses["h4"] + losses["regression"]
    )
    losses["total"].backward()


def test_head_bad_input() -> None:
    with pytest.raises(ValueError, match="horizons"):
        MSAHeads(8, horizons=("a", "a"))
    with pytest.raises(ValueError, match="horizons"):
        MSAHeads(8, horizons=("logits",))
    with pytest.raises(ValueError, match="n_classes"):
        MSAHeads(8, n_classes=1)
    heads = MSAHeads(8)
    out = heads(torch.randn(2, 8))
    with pytest.raises(ValueError, match="unknown horizon 'weekly'"):
        heads.loss(out, directions={"weekly": torch.ones(2)})
    with pytest.raises(ValueError, match="regression=False"):
        heads.loss(out, targets=torch.ones(2, 3))
    with pytest.raises(ValueError, match="at least one"):
        heads.loss(out)


# -- chapter forms: attention pyramid, fusion MLP, depth per scale --------------------------------

OPTION_FORMS = [
    {"hierarchy": h, "fusion": f, "depths": depths}
    for h in ("parallel", "pyramid")
    for f in ("gated", "mlp")
    for depths in (None, (2, 1, 1))
]


def form_id(form: dict[str, object]) -> str:
    return "-".join(str(v) for v in form.values())


def test_default_is_bit_identical_to_the_explicit_chapter_fusion() -> None:
    default = backbone(seed=3)
    explicit = backbone(seed=3, hierarchy="parallel", fusion="mlp", depths=None)
    assert MSAConfig() == MSAConfig(hierarchy="parallel", fusion="mlp", depths=None)
    assert default.fusion_mlp is not None
    ours, theirs = default.state_dict(), explicit.state_dict()
    assert list(ours) == list(theirs)
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    x = torch.randn(3, 65, N_FEATURES)
    torch.manual_seed(4)
    train_out = default.train()(x)
    torch.manual_seed(4)
    torch.testing.assert_close(explicit.train()(x), train_out, rtol=0, atol=0)
    with torch.no_grad():
        torch.testing.assert_close(explicit.eval()(x), default.eval()(x), rtol=0, atol=0)
    # A depth per scale equal to n_layers everywhere is the same model too.
    same = backbone(seed=3, n_layers=2)
    per_scale = backbone(seed=3, n_layers=2, depths=(2, 2, 2))
    with torch.no_grad():
        torch.testing.assert_close(per_scale.eval()(x), same.eval()(x), rtol=0, atol=0)


def test_a_saved_config_without_the_fields_restores_the_previous_form() -> None:
    """A config saved before ``hierarchy`` and ``fusion`` existed is the parallel scales with
    the gated fusion (the model it was), not today's default fusion MLP."""
    previous = backbone(seed=3, fusion="gated").eval()
    saved = {k: v for k, v in previous.config.to_dict().items()
             if k not in ("hierarchy", "fusion")}
    restored = MSAConfig(**MSAConfig.restore_saved(saved))
    assert restored == previous.config
    rebuilt = MSABackbone(N_FEATURES, restored).eval()
    rebuilt.load_state_dict(previous.state_dict())
    x = torch.randn(2, 33, N_FEATURES)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), previous(x), rtol=0, atol=0)


def test_option_rules() -> None:
    with pytest.raises(ValueError, match=r"MSAConfig\.hierarchy.*'parallel', 'pyramid'"):
        MSAConfig(hierarchy="tree")
    with pytest.raises(ValueError, match=r"MSAConfig\.fusion.*'gated', 'mlp'"):
        MSAConfig(fusion="sum")
    with pytest.raises(ValueError, match=r"scales must each divide the next.*\(1, 3, 8\)"):
        MSAConfig(hierarchy="pyramid", scales=(1, 3, 8))
    MSAConfig(scales=(1, 3, 8))  # parallel scales need not divide
    for depths in [(), (0, 1, 1), (1.5,), "12"]:
        with pytest.raises(ValueError, match="depths"):
            MSAConfig(depths=depths)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"depths must have one entry per scale \(3\)"):
        backbone(depths=(1, 1))
    with pytest.raises(ValueError, match=r"depths must have one entry per scale \(2\)"):
        backbone(external=[8, 4], depths=(1, 1, 1))
    with pytest.raises(ValueError, match=r"hierarchy='pyramid'.*external timeframes"):
        backbone(external=[8, 4], hierarchy="pyramid")


@pytest.mark.parametrize("form", OPTION_FORMS, ids=form_id)
def test_config_round_trip(form: dict[str, object]) -> None:
    import json

    from tradezoo.policies.registry import make_config

    config = MSAConfig(d_model=8, n_heads=2, **form)  # type: ignore[arg-type]
    assert MSAConfig(**config.to_dict()) == config
    from_json = make_config("msa", **json.loads(json.dumps(config.to_dict())))
    assert from_json == config and from_json.depths == form["depths"]  # a list back to a tuple
    net = backbone(**form)
    rebuilt = MSABackbone(N_FEATURES, from_json)  # type: ignore[arg-type]
    rebuilt.load_state_dict(net.state_dict())
    x = torch.randn(2, 33, N_FEATURES)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt.eval()(x), net.eval()(x), rtol=0, atol=0)


@pytest.mark.parametrize("form", OPTION_FORMS, ids=form_id)
@pytest.mark.parametrize("window", [15, 63, 65])
def test_option_shapes_and_uneven_windows(form: dict[str, object], window: int) -> None:
    net = backbone(**form).eval()
    x = torch.randn(2, window, N_FEATURES)
    if window < 16:
        with pytest.raises(ValueError, match="at least 16 bars"):
            net(x)
        return
    with torch.no_grad():
        assert net(x).shape == (2, 8)
        levels = net.encode_levels(x)
        assert [e.shape for e in levels] == [(2, window // f, 8) for f in (1, 4, 16)]
        info = net.explain(x)
    n_tokens = sum(window // f for f in (1, 4, 16))
    assert info["attention"].shape == (2, 2, 3, n_tokens)
    torch.testing.assert_close(info["scale_attention"].sum(-1), torch.ones(2))
    gated_keys = {"scale_weights_static", "scale_gates", "scale_weights"}
    assert (gated_keys <= set(info)) == (form["fusion"] == "gated")


@pytest.mark.parametrize("window", [63, 65])
def test_pyramid_levels_pool_the_encoded_level_below(window: int) -> None:
    net = backbone(hierarchy="pyramid").eval()
    x = torch.randn(2, window, N_FEATURES)
    with torch.no_grad():
        levels = net.encode_levels(x)
        for s in (1, 2):
            # End-aligned: the oldest (L_s mod 4) tokens of the level below are dropped.
            pooled = end_aligned_pool(levels[s - 1], 4)
            expected = net.encoders[s](pooled + net._positions(s, pooled.shape[1]))
            torch.testing.assert_close(levels[s], expected, rtol=0, atol=0)
        first = net.encoders[0](net.input_proj(x) + net._positions(0, window))
        torch.testing.assert_close(levels[0], first, rtol=0, atol=0)
    assert net.input_proj.weight.shape == (8, N_FEATURES)  # only level 0 reads the bars


@pytest.mark.parametrize("form", OPTION_FORMS[::2], ids=form_id)
@pytest.mark.parametrize("window", [63, 65])
@pytest.mark.parametrize("cut", [10, 40, 62])
def test_level_tokens_never_see_later_bars(form: dict[str, object], window: int,
                                           cut: int) -> None:
    """Token j of scale s (block end ``L - (n_s - 1 - j) f_s - 1``) is unchanged when only bars
    from ``cut`` on change, whenever its block ends before ``cut``."""
    net = backbone(**form).eval()
    x = torch.randn(2, window, N_FEATURES)
    moved = x.clone()
    moved[:, cut:] = torch.randn(2, window - cut, N_FEATURES)
    with torch.no_grad():
        base, after = net.encode_levels(x), net.encode_levels(moved)
    for f, b, a in zip((1, 4, 16), base, after, strict=True):
        n = b.shape[1]
        block_end = window - (n - 1 - torch.arange(n)) * f - 1
        past = block_end < cut
        torch.testing.assert_close(a[:, past], b[:, past], rtol=0, atol=1e-6)
        assert not torch.allclose(a[:, -1], b[:, -1])  # every level ends at the last bar


@pytest.mark.parametrize("hierarchy", ["parallel", "pyramid"])
def test_the_latest_bar_reaches_every_levels_last_token_on_uneven_windows(
        hierarchy: str) -> None:
    # 65 = 4 * 16 + 1: start-aligned pooling (AvgPool1d) would leave the latest bar out of
    # the coarse levels; end-aligned pooling drops the oldest bar instead.
    net = backbone(hierarchy=hierarchy).eval()
    x = torch.randn(2, 65, N_FEATURES)
    latest = x.clone()
    latest[:, -1] += 1.0
    with torch.no_grad():
        for b, a in zip(net.encode_levels(x), net.encode_levels(latest), strict=True):
            assert not torch.allclose(a[:, -1], b[:, -1])


@pytest.mark.parametrize("form", OPTION_FORMS, ids=form_id)
def test_gradients_reach_every_parameter(form: dict[str, object]) -> None:
    net = backbone(**form).train()
    net(torch.randn(3, 37, N_FEATURES)).pow(2).sum().backward()
    missing = [name for name, p in net.named_parameters()
               if p.grad is None or not torch.isfinite(p.grad).all() or p.grad.abs().sum() == 0]
    assert not missing
    assert net.no_weight_decay() <= {name for name, _ in net.named_parameters()}


def test_depth_per_scale_builds_that_many_layers() -> None:
    net = backbone(depths=(3, 1, 2))
    counts = [sum(isinstance(m, _EncoderLayer) for m in enc) for enc in net.encoders]
    assert counts == [3, 1, 2]
    external = backbone(external=[8, 4], depths=(1, 2))
    assert [sum(isinstance(m, _EncoderLayer) for m in enc) for enc in external.encoders] == [1, 2]
    with torch.no_grad():
        assert external.forward_scales(timeframes(2, [8, 4])).shape == (2, 8)


@pytest.mark.parametrize("hierarchy", ["parallel", "pyramid"])
def test_fusion_mlp_maps_the_concatenated_summaries(hierarchy: str) -> None:
    net = backbone(fusion="mlp", hierarchy=hierarchy).eval()
    assert net.fusion_mlp is not None
    first, last = net.fusion_mlp[0], net.fusion_mlp[-1]
    assert (first.in_features, first.out_features) == (3 * 8, 16)
    assert (last.in_features, last.out_features) == (16, 8)
    assert not any(hasattr(net, name) for name in ("gate", "hier", "out_proj", "out_norm"))
    # No path bypasses the MLP: with its first layer's weights zeroed the output is the
    # constant W_2 SiLU(b_1) + b_2 whatever the window.
    with torch.no_grad():
        first.weight.zero_()
        constant = last(F.silu(first.bias))
        torch.testing.assert_close(net(torch.randn(2, 20, N_FEATURES)), constant.expand(2, 8))


def test_batch_equals_samples_one_by_one_in_the_chapter_form() -> None:
    net = backbone(hierarchy="pyramid", fusion="mlp", depths=(2, 1, 1)).eval()
    x = torch.randn(4, 65, N_FEATURES)
    with torch.no_grad():
        batched = net(x)
        single = torch.cat([net(x[i : i + 1]) for i in range(4)])
    torch.testing.assert_close(batched, single, rtol=0, atol=1e-5)


@pytest.mark.parametrize("form", OPTION_FORMS[::2], ids=form_id)
def test_band_attention_in_every_form(form: dict[str, object]) -> None:
    from tradezoo.policies.explain import explain

    net = backbone(**form)
    x = torch.randn(2, 33, N_FEATURES)
    info = explain(net, x, feature_names=BAND_NAMES)
    total = info["band_attention/wav_d1"] + info["band_attention/vmd_1"]
    torch.testing.assert_close(total, info["scale_attention"])
    with torch.no_grad():  # the vmd columns cut off from every level's input projection
        net.input_proj.weight[:, [1, 3, 4]] = 0.0
    info = explain(net, x, feature_names=BAND_NAMES)
    torch.testing.assert_close(info["band_attention/wav_d1"], info["scale_attention"])
    assert info["band_attention/vmd_1"].abs().max() == 0


@pytest.mark.parametrize("form", OPTION_FORMS, ids=form_id)
@pytest.mark.parametrize("scales", [(1, 4, 16), (2, 4, 8, 32)])
def test_size_estimate_is_the_parameter_count(form: dict[str, object],
                                              scales: tuple[int, ...]) -> None:
    from tradezoo.policies.size import estimate_parameters

    depths = form["depths"] and (2, 1, 1, 3)[: len(scales)]
    config = MSAConfig(d_model=8, n_heads=2, scales=scales, **{**form, "depths": depths})
    built = MSABackbone(N_FEATURES, config)
    count = sum(p.numel() for p in built.parameters()) + sum(b.numel() for b in built.buffers())
    assert estimate_parameters("msa", N_FEATURES, 32, config) == count
