"""SSR model: stages (ii)-(iv), ablation switches, training, scoring. (Stage (i) maths: test_spectral.py.)"""

import math

import pytest
import torch
import torch.nn.functional as F
from recbole.data.interaction import Interaction

from conftest import QUICK
from recbole_ssr.model.ssr_layers import BandGate, BandOperator, band_contrastive_loss, mask_bands
from recbole_ssr.quick_start import prepare, run
from recbole_ssr.utils import get_model


def build(make_mmrec, modalities=None, **overrides):
    root, name, _ = make_mmrec(modalities=modalities)
    config, _, (train, valid, test) = prepare("SSR", name, config_dict=dict(QUICK, data_path=root, **overrides))
    torch.manual_seed(0)
    return get_model("SSR")(config, train.dataset), train


def test_mask_never_drops_every_band_and_rescales():
    torch.manual_seed(0)
    bands = torch.randn(500, 4, 3)
    masked, keep = mask_bands(bands, 0.6)
    assert keep.any(dim=1).all()  # p = 0.6 would leave ~13% of nodes with nothing; they keep band 0
    lonely = keep.sum(dim=1) == 1
    assert lonely.any()
    assert torch.allclose(masked[keep], bands[keep] / 0.4) and torch.all(masked[~keep] == 0)
    assert 0.3 < (~keep).float().mean() < 0.6
    noisy, keep = mask_bands(bands, 0.5, fill="noise")
    assert torch.all(noisy[~keep] != 0)
    same, keep = mask_bands(bands, 0.0)
    assert same is bands and keep.all()


def test_band_kernel_is_column_stochastic_with_rank_at_most_r():
    operator = BandOperator(num_bands=6, dim=8, rank=2)
    torch.nn.init.normal_(operator.w_q)
    torch.nn.init.normal_(operator.w_k)
    mixing = operator.mixing()
    assert torch.allclose(mixing.sum(dim=0), torch.ones(6)) and torch.all(mixing > 0)
    assert torch.linalg.matrix_rank(operator.kernel()) <= 2
    bands, node = torch.randn(5, 6, 8), torch.randn(5, 8)
    out = operator(bands, node)
    # columns sum to one, so with unit gains and scale the band sum is preserved
    expected = torch.einsum("mn,bnd->bmd", mixing, bands)
    scale = operator.scale(node).unsqueeze(1) * operator.gains()
    assert torch.allclose(out, scale * expected, atol=1e-6)
    assert torch.allclose(expected.sum(1), bands.sum(1), atol=1e-5)
    assert operator.regularizer().item() == pytest.approx(operator.kernel().pow(2).mean().item())  # Λ starts at 0


def test_gate_starts_near_one_and_rescales_to_the_band_sum_norm():
    gate = BandGate(num_bands=3, dim=4)
    bands, node = torch.randn(7, 3, 4), torch.randn(7, 4)
    h, h_spec, weights = gate(bands, node)
    assert torch.allclose(weights, torch.ones_like(weights), atol=0.01)
    assert torch.allclose(h.norm(dim=1), bands.sum(1).norm(dim=1), atol=1e-5)
    assert h_spec.shape == (7, 12)


def test_first_occurrences_dedupes_batch_nodes():
    from recbole_ssr.model.ssr import first_occurrences

    ids = torch.tensor([7, 3, 7, 9, 3, 1])
    assert first_occurrences(ids).tolist() == [5, 1, 0, 3]  # values 1, 3, 7, 9


def test_infonce_positive_is_same_node_and_band():
    torch.manual_seed(0)
    a = torch.randn(3, 2, 4)  # 3 nodes, 2 bands, d = 4 per modality, two content modalities after 'id'
    b = torch.randn(3, 2, 4)
    bands = torch.cat([torch.zeros(3, 2, 4), a, b], dim=-1)
    slices = [slice(4, 8), slice(8, 12)]
    tau = 0.5
    za, zb = F.normalize(a.reshape(6, 4), dim=1), F.normalize(b.reshape(6, 4), dim=1)

    def one_way(x, y):
        total = 0.0
        for k in range(6):
            positives = math.exp(float(x[k] @ y[k]) / tau)
            cross = sum(math.exp(float(x[k] @ y[j]) / tau) for j in range(6))
            same = sum(math.exp(float(x[k] @ x[j]) / tau) for j in range(6) if j != k)
            total += -math.log(positives / (cross + same))
        return total / 6

    expected = (one_way(za, zb) + one_way(zb, za)) / 2
    assert band_contrastive_loss(bands, slices, tau).item() == pytest.approx(expected, rel=1e-5)
    aligned = torch.cat([torch.zeros(3, 2, 4), a, a], dim=-1)  # positives identical: lower loss
    assert band_contrastive_loss(aligned, slices, tau) < band_contrastive_loss(bands, slices, tau)
    assert band_contrastive_loss(bands, slices[:1], tau) == 0  # one content modality: no pair


def batch(model, n=16):
    generator = torch.Generator().manual_seed(1)
    users = torch.randint(1, model.n_users, (n,), generator=generator)
    return Interaction({"user_id": users, "item_id": torch.randint(1, model.n_items, (n,), generator=generator),
                        "neg_item_id": torch.randint(1, model.n_items, (n,), generator=generator)})


def grads_after_loss(model, interaction):
    model.zero_grad()
    torch.manual_seed(3)
    loss = model.calculate_loss(interaction)
    loss.backward()
    return loss.item(), {name: p.grad for name, p in model.named_parameters()}


@pytest.mark.parametrize("switch, removed", [
    ({"use_operator": False}, "operators."),
    ({"use_gate": False}, "gates."),
])
def test_operator_and_gate_switches_remove_their_modules(make_mmrec, switch, removed):
    full, _ = build(make_mmrec)
    ablated, _ = build(make_mmrec, **switch)
    interaction = batch(full)
    _, full_grads = grads_after_loss(full, interaction)
    _, grads = grads_after_loss(ablated, interaction)
    assert any(g is not None and g.abs().sum() > 0 for n, g in full_grads.items() if n.startswith(removed))
    assert all(g is None for n, g in grads.items() if n.startswith(removed))


def test_mask_and_contrastive_switches_remove_their_terms(make_mmrec, monkeypatch):
    import recbole_ssr.model.ssr as ssr_module

    calls = {"mask": 0, "cl": 0}
    real_mask, real_cl = ssr_module.mask_bands, ssr_module.band_contrastive_loss
    monkeypatch.setattr(ssr_module, "mask_bands", lambda *a, **k: calls.__setitem__("mask", calls["mask"] + 1)
                        or real_mask(*a, **k))
    monkeypatch.setattr(ssr_module, "band_contrastive_loss",
                        lambda *a, **k: calls.__setitem__("cl", calls["cl"] + 1) or real_cl(*a, **k))
    model, _ = build(make_mmrec)
    interaction = batch(model)
    loss_full, _ = grads_after_loss(model, interaction)
    assert calls == {"mask": 1, "cl": 2}  # one mask over users, positives, negatives; users and items contrasted
    for switch, term in (({"mask_weight": 0.0}, "mask"), ({"mask_rate": 0.0}, "mask"), ({"cl_weight": 0.0}, "cl")):
        calls.update(mask=0, cl=0)
        ablated, _ = build(make_mmrec, **switch)
        loss, _ = grads_after_loss(ablated, interaction)
        assert calls[term] == 0 and loss != pytest.approx(loss_full, rel=1e-7)


def test_contrastive_term_value(make_mmrec):
    with_cl, _ = build(make_mmrec, mask_weight=0.0, cl_weight=1.0)
    without, _ = build(make_mmrec, mask_weight=0.0, cl_weight=0.0)
    interaction = batch(with_cl)
    signal, _ = with_cl.graph_signal()
    bands = with_cl.decomposer(signal).transpose(0, 1)
    users, items, _ = with_cl.node_rows(interaction)
    expected = with_cl.contrastive_loss(bands[users], users, bands[items], items).item()
    assert expected > 0
    difference = with_cl.calculate_loss(interaction).item() - without.calculate_loss(interaction).item()
    assert difference == pytest.approx(expected, rel=1e-4)


@pytest.mark.parametrize("modalities", [{}, {"image": 6}, {"image": 6, "text": 4, "audio": 5}])
def test_any_number_of_modalities_and_scoring_agrees(make_mmrec, modalities):
    model, _ = build(make_mmrec, modalities=modalities)
    assert model.branches == ["id"] + sorted(modalities)  # discovered *_feat.npy, sorted by name
    loss = model.calculate_loss(batch(model))
    assert torch.isfinite(loss)
    model.eval()
    users, items = torch.tensor([1, 2, 3]), torch.tensor([4, 5, 6])
    full = model.full_sort_predict(Interaction({"user_id": users})).view(3, -1)
    assert full.shape == (3, model.n_items)
    pointwise = model.predict(Interaction({"user_id": users, "item_id": items}))
    assert torch.allclose(full[torch.arange(3), items], pointwise, atol=1e-5)
    again = model.full_sort_predict(Interaction({"user_id": users})).view(3, -1)
    assert torch.equal(full, again)  # no masking at inference


@pytest.mark.parametrize("out_mode", ["spec", "mix"])
def test_out_modes_score_with_their_embeddings(make_mmrec, out_mode):
    model, _ = build(make_mmrec, out_mode=out_mode)
    model.eval()
    users, items = model.forward()
    width = len(model.branches) * 64 * 3
    assert users.shape[1] == (width if out_mode == "spec" else width + len(model.branches) * 64)
    assert torch.isfinite(model.calculate_loss(batch(model)))


def test_ssr_loss_decreases_over_a_few_epochs(make_mmrec):
    root, name, _ = make_mmrec()
    losses = []
    from recbole_ssr.trainer import MultimodalTrainer

    config, _, (train, valid, _) = prepare("SSR", name, config_dict=dict(
        QUICK, data_path=root, epochs=6, learning_rate=0.01, eval_step=0))
    model = get_model("SSR")(config, train.dataset)
    trainer = MultimodalTrainer(config, model)
    trainer.fit(train, None, saved=False)
    losses = [trainer.train_loss_dict[e] for e in range(6)]
    assert losses[-1] < 0.8 * losses[0], losses


def test_ssr_runs_end_to_end_and_is_the_default(make_mmrec):
    from recbole_ssr.cli import default_model

    assert default_model() == "SSR"
    root, name, _ = make_mmrec()
    outcome = run("SSR", name, config_dict=dict(QUICK, data_path=root, epochs=2))
    assert outcome["epochs_run"] == 2 and all(0 <= v <= 1 for v in outcome["test_result"].values())
