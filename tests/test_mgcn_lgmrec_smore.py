"""MGCN, LGMRec and SMORE: training through run() with 1-3 modalities, scoring, and each model's key mechanism."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from recbole.data.interaction import Interaction

from conftest import QUICK
from recbole_ssr.core.errors import ConfigError
from recbole_ssr.model.graph import bipartite_adjacency, sparse_max, user_item_block
from recbole_ssr.model.layers import per_modality
from recbole_ssr.model.smore import FUSION, SpectralFilter
from recbole_ssr.experiments.run import run
from recbole_ssr.training.build import prepare
from recbole_ssr.model.registry import get_model

MODELS = ["MGCN", "LGMRec", "SMORE"]
MODALITY_SETS = {1: {"image": 16}, 2: {"image": 16, "text": 8}, 3: {"image": 16, "text": 8, "audio": 5}}


def build(make_mmrec, model, modalities=None, **overrides):
    root, name, _ = make_mmrec(modalities=modalities)
    config, _, (train, _, _) = prepare(model, name, config_dict=dict(QUICK, data_path=root, **overrides))
    return get_model(model)(config, train.dataset).to(config["device"]), train


def first_batch(train):
    return next(iter(train))


@pytest.mark.parametrize("n_modalities", [1, 2, 3])
@pytest.mark.parametrize("model", MODELS)
def test_trains_one_epoch_through_run(make_mmrec, model, n_modalities):
    root, name, _ = make_mmrec(modalities=MODALITY_SETS[n_modalities])
    outcome = run(model, name, config_dict=dict(QUICK, data_path=root))  # RecBole stops on a NaN loss
    assert outcome["epochs_run"] == 1 and outcome["n_params"] > 0
    assert all(0.0 <= v <= 1.0 for v in outcome["test_result"].values())


@pytest.mark.parametrize("model", MODELS)
def test_loss_finite_gradients_reach_every_part(make_mmrec, model):
    net, train = build(make_mmrec, model)
    loss = net.calculate_loss(first_batch(train))
    assert loss.dim() == 0 and math.isfinite(loss.item())
    loss.backward()
    assert net.user_embedding.weight.grad.abs().sum() > 0
    assert net.item_id_embedding.weight.grad.abs().sum() > 0
    for name in net.modality_names:  # the content path: projection matrix per modality
        weight = net.projection[name] if model == "LGMRec" else net.projection[name].weight
        assert weight.grad is not None and weight.grad.abs().sum() > 0, name


@pytest.mark.parametrize("model", MODELS)
def test_full_sort_predict_agrees_with_predict(make_mmrec, model):
    net, train = build(make_mmrec, model)
    net.eval()
    users = torch.tensor([1, 5, 17])
    with torch.no_grad():
        full = net.full_sort_predict(Interaction({net.USER_ID: users}))
        assert full.shape == (3 * net.n_items,)
        full = full.view(3, net.n_items)
        items = torch.tensor([0, 3, 29])
        pairs = Interaction({net.USER_ID: users.repeat_interleave(3), net.ITEM_ID: items.repeat(3)})
        single = net.predict(pairs).view(3, 3)
    assert torch.allclose(single, full[:, items], atol=1e-5)
    assert torch.isfinite(full).all()


# -- MGCN --------------------------------------------------------------------------------------------------------------
def test_mgcn_purifier_depends_on_ids_and_features(make_mmrec):
    net, _ = build(make_mmrec, "MGCN")
    with torch.no_grad():
        base = net.purified("image")
        gate_only = net.purifier["image"](net.projection["image"](net.features["image"]))
        assert torch.allclose(base, net.item_id_embedding.weight * gate_only)
        assert ((gate_only > 0) & (gate_only < 1)).all()
        net.item_id_embedding.weight[3] += 1.0
        changed_id = net.purified("image")
        assert not torch.allclose(changed_id[3], base[3]) and torch.allclose(changed_id[4], base[4])
        net.features["image"][5] += 1.0
        changed_feat = net.purified("image")
        assert not torch.allclose(changed_feat[5], changed_id[5]) and torch.allclose(changed_feat[6], changed_id[6])
        net.item_id_embedding.weight.zero_()
        assert net.purified("image").abs().sum() == 0  # multiplicative: nothing passes without an ID signal
    assert net.features["image"].requires_grad  # fine-tuned raw features, as the authors


def test_mgcn_fuser_with_one_modality_has_no_specific_part(make_mmrec):
    net, _ = build(make_mmrec, "MGCN", modalities={"image": 16})
    with torch.no_grad():
        view = net.modality_view("image")
        side = net.fuse([view], torch.randn_like(view))
    assert torch.allclose(side, view / 2, atol=1e-6)  # shared part = the view, specific part = 0, (E_s + 0) / 2


# -- LGMRec ------------------------------------------------------------------------------------------------------------
def test_lgmrec_hyperedge_assignment_rows_sum_to_one(make_mmrec):
    net, _ = build(make_mmrec, "LGMRec")
    for training in (True, False):
        net.train(training)
        for name in net.modality_names:
            items, users = net.hyperedge_assignments(name)
            assert items.shape == (net.n_items, net.hyper_num) and users.shape == (net.n_users, net.hyper_num)
            assert (items >= 0).all() and (users >= 0).all()
            assert torch.allclose(items.sum(1), torch.ones(net.n_items), atol=1e-5)
            assert torch.allclose(users.sum(1), torch.ones(net.n_users), atol=1e-5)


def test_lgmrec_noise_free_evaluation_is_deterministic(make_mmrec):
    net, _ = build(make_mmrec, "LGMRec", gumbel_at_eval=False)
    net.eval()
    with torch.no_grad():
        first, second = net.forward(), net.forward()
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    net.train()
    with torch.no_grad():  # training: Gumbel noise + edge dropout
        assert not torch.equal(net.forward()[1], net.forward()[1])


def test_lgmrec_contrast_runs_over_modality_pairs(make_mmrec):
    def loss_with_and_without_cl(net, batch):
        losses = []
        for weight in (1.0, 0.0):
            net.cl_weight = weight
            torch.manual_seed(0)  # the same Gumbel noise and edge dropout
            losses.append(net.calculate_loss(batch).item())
        return losses

    one, train = build(make_mmrec, "LGMRec", modalities={"image": 16}, reg_weight=0.0)
    with_cl, without = loss_with_and_without_cl(one, first_batch(train))
    assert with_cl == pytest.approx(without)  # one modality: no pair, no term
    two, train = build(make_mmrec, "LGMRec", reg_weight=0.0)
    with_cl, without = loss_with_and_without_cl(two, first_batch(train))
    assert with_cl > without + 1.0  # summed over the batch: ~ 2 * 64 * log(candidates)


def test_lgmrec_infonce_equals_cross_entropy_over_all_candidates(make_mmrec):
    net, _ = build(make_mmrec, "LGMRec")
    torch.manual_seed(0)
    candidates = torch.randn(30, 8)
    picked = torch.tensor([3, 7, 7, 0])  # positives are candidates (rows of the other modality), repeats allowed
    anchors = torch.randn(4, 8)
    for tau in (0.2, 0.005):  # the plain exp-sum path and the overflow-safe path
        net.tau = tau
        logits = F.normalize(anchors, dim=1) @ F.normalize(candidates, dim=1).T / tau
        expected = F.cross_entropy(logits, picked, reduction="sum")
        got = net.hypergraph_infonce(anchors, candidates[picked], candidates)
        assert torch.isfinite(got) and got.item() == pytest.approx(expected.item(), rel=1e-5)


# -- SMORE -------------------------------------------------------------------------------------------------------------
def test_spectral_filter_identity_passes_and_filtering_changes_signal():
    torch.manual_seed(0)
    signal = torch.randn(7, 64)
    filt = SpectralFilter(64, init="identity")
    assert torch.allclose(filt(signal), signal, atol=1e-5)
    with torch.no_grad():
        filt.weight[10:] = 0.0  # low-pass: drop bins 10..32
    low = filt(signal)
    assert not torch.allclose(low, signal, atol=1e-3)
    spectrum = torch.fft.rfft(low, dim=-1, norm="ortho")
    assert spectrum[:, 10:].abs().max() < 1e-4  # those frequencies are really gone
    assert torch.allclose(spectrum[:, :10], torch.fft.rfft(signal, dim=-1, norm="ortho")[:, :10], atol=1e-4)
    with pytest.raises(ConfigError, match="spectral_filter_init"):
        SpectralFilter(64, init="ones")


def test_smore_fusion_filter_is_a_convolution_of_all_modalities(make_mmrec):
    net, _ = build(make_mmrec, "SMORE", modalities=MODALITY_SETS[3], spectral_filter_init="identity")
    with torch.no_grad():
        signals = net.spectral_signals()
        projected = {m: net.projection[m](net.features[m]) for m in net.modality_names}
        for name in net.modality_names:  # identity filters leave each projected modality unchanged
            assert torch.allclose(signals[name], projected[name], atol=1e-5)
        # identity fusion filter: product of spectra = circular convolution of the signals (ortho: / sqrt(d) each)
        d = projected["image"].shape[1]
        expected = projected["image"].double()
        for name in ("text", "audio"):
            other = projected[name].double()
            shifts = torch.stack([torch.roll(other.flip(1), k + 1, dims=1) for k in range(d)], dim=1)  # [I, d, d]
            expected = (expected.unsqueeze(1) * shifts).sum(-1) / math.sqrt(d)
        assert torch.allclose(signals[FUSION].double(), expected, atol=1e-4)
        # changing a filter changes the model's output
        before = net.forward()[1].clone()
        net.filters["text"].weight.mul_(-0.5)
        assert not torch.allclose(net.forward()[1], before)


def test_smore_fusion_graph_is_elementwise_max(make_mmrec):
    net, _ = build(make_mmrec, "SMORE", knn_k={"image": 5, "text": 3})
    image, text = net.item_graph_image.to_dense(), net.item_graph_text.to_dense()
    fusion = getattr(net, f"item_graph_{FUSION}").to_dense()
    per_row = torch.bincount(net.item_graph_image.coalesce().indices()[0], minlength=net.n_items)
    assert (per_row[1:] == 5).all() and per_row[0] == 1  # the padding item 0: only itself
    assert torch.allclose(fusion, torch.maximum(image, text))  # non-negative weights: the dense max is the union max


def test_mm_layers_helpers():
    a = torch.sparse_coo_tensor(torch.tensor([[0, 1], [1, 2]]), torch.tensor([0.5, -1.0]), (3, 3))
    b = torch.sparse_coo_tensor(torch.tensor([[1, 2], [2, 0]]), torch.tensor([-2.0, 0.3]), (3, 3))
    fused = sparse_max([a, b]).to_dense()
    expected = torch.zeros(3, 3)
    expected[0, 1], expected[1, 2], expected[2, 0] = 0.5, -1.0, 0.3  # missing edges do not enter the max
    assert torch.equal(fused, expected)
    assert per_modality(7, ["image", "audio"], "knn_k") == {"image": 7, "audio": 7}
    assert per_modality({"image": 40, "text": 15, "default": 10}, ["image", "audio"], "knn_k") == \
        {"image": 40, "audio": 10}
    with pytest.raises(ConfigError, match="knn_k gives no value for modality 'audio'"):
        per_modality({"image": 40}, ["image", "audio"], "knn_k")
    with pytest.raises(ConfigError, match="knn_k must be a number or a"):
        per_modality("{image: 40}", ["image"], "knn_k")  # a yaml-style mapping left as a string by the CLI
    users, items = np.array([0, 0, 1]), np.array([0, 1, 1])
    block = user_item_block(bipartite_adjacency(users, items, 2, 2), 2, 2).to_dense()
    assert torch.allclose(block, torch.tensor([[1 / math.sqrt(2), 1 / 2], [0.0, 1 / math.sqrt(2)]]))
