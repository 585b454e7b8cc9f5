"""SSR model: stages (ii)-(iv), ablation switches, training, scoring. (Stage (i) maths: test_spectral.py.)"""

import math

import pytest
import torch
import torch.nn.functional as F
from recbole.data.interaction import Interaction

from conftest import QUICK
from recbole_ssr.core.errors import ConfigError
from recbole_ssr.model.ssr_layers import BandGate, BandOperator, band_contrastive_loss, mask_bands
from recbole_ssr.experiments.run import run
from recbole_ssr.training.build import prepare
from recbole_ssr.model.registry import get_model


def build(make_mmrec, modalities=None, dataset="tiny", **overrides):
    root, name, _ = make_mmrec(name=dataset, modalities=modalities)
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
    expected_reg = operator.kernel().pow(2).mean() + operator.gain_logits.pow(2).mean()
    assert operator.regularizer().item() == pytest.approx(expected_reg.item())
    shared = operator(bands, node, node_scale=operator.node_scale(node))
    assert torch.equal(shared, out)  # s(x) passed in (a masked pass reusing the clean pass's) = computed here


def test_operator_and_gate_start_as_the_reference():
    """W_q, W_k xavier-normal (std √(2/(M+r))), Λ ~ N(0, 1), gate hidden width D/4 (docs/ssr.md, stage (iii))."""
    torch.manual_seed(0)
    num_bands, rank, dim = 3, 4, 192
    draws = [BandOperator(num_bands, dim, rank) for _ in range(200)]
    w = torch.stack([torch.cat([o.w_q.flatten(), o.w_k.flatten()]) for o in draws])
    assert w.std().item() == pytest.approx(math.sqrt(2 / (num_bands + rank)), rel=0.05)
    gains = torch.cat([o.gain_logits.flatten() for o in draws[:20]])
    assert gains.mean().abs() < 0.02 and gains.std().item() == pytest.approx(1.0, rel=0.03)
    # with that init the mixing matrix S is far from uniform (the old 0.1·randn kept it within ±0.01 of 1/M)
    spread = torch.stack([(o.mixing() - 1 / num_bands).abs().max() for o in draws])
    assert spread.median() > 0.1
    gate = BandGate(num_bands, dim)
    assert gate.mlp[0].out_features == dim // 4 and gate.mlp[2].in_features == dim // 4


def test_gate_starts_near_one_and_rescales_to_the_band_sum_norm():
    gate = BandGate(num_bands=3, dim=4)
    bands, node = torch.randn(7, 3, 4), torch.randn(7, 4)
    h, h_spec, weights = gate(bands, node)
    assert torch.allclose(weights, torch.ones_like(weights), atol=0.01)
    assert torch.allclose(h.norm(dim=1), bands.sum(1).norm(dim=1), atol=1e-5)
    assert h_spec.shape == (7, 12)
    # the split first layer (W_x x + b) + W_c c is the MLP on the concatenation [x; mean_m Y_m]
    torch.nn.init.normal_(gate.mlp[-1].weight)
    logits = gate.mlp(torch.cat([node, bands.mean(dim=1)], dim=-1))
    expected = 1 + gate.gamma * torch.tanh(logits)
    assert torch.allclose(gate(bands, node)[2], expected, atol=1e-6)
    assert torch.equal(gate(bands, node, node_logits=gate.node_logits(node))[2], gate(bands, node)[2])


@pytest.mark.parametrize("self_negative", [False, True])
def test_infonce_positive_is_same_node_and_band(self_negative):
    """Dense hand-written InfoNCE; ``self_negative`` (the reference) keeps a_k·a_k among the negatives."""
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
            same = sum(math.exp(float(x[k] @ x[j]) / tau) for j in range(6) if self_negative or j != k)
            total += -math.log(positives / (cross + same))
        return total / 6

    expected = (one_way(za, zb) + one_way(zb, za)) / 2
    loss = band_contrastive_loss(bands, slices, tau, self_negative=self_negative)
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    aligned = torch.cat([torch.zeros(3, 2, 4), a, a], dim=-1)  # positives identical: lower loss
    assert band_contrastive_loss(aligned, slices, tau, self_negative) < loss
    assert band_contrastive_loss(bands, slices[:1], tau, self_negative) == 0  # one content modality: no pair
    if self_negative:  # the anchor itself adds exp(1/τ) to every denominator: the loss only grows
        assert loss > band_contrastive_loss(bands, slices, tau)


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
    assert calls == {"mask": 2, "cl": 2}  # masked once per side (distinct users, distinct items); both contrasted
    for switch, term in (({"mask_weight": 0.0}, "mask"), ({"mask_rate": 0.0}, "mask"), ({"cl_weight": 0.0}, "cl")):
        calls.update(mask=0, cl=0)
        ablated, _ = build(make_mmrec, **switch)
        loss, _ = grads_after_loss(ablated, interaction)
        assert calls[term] == 0 and loss != pytest.approx(loss_full, rel=1e-7)


def test_contrastive_term_value(make_mmrec):
    ours = dict(cl_rows="distinct", cl_self_negative=False)  # the reference's forms: test_contrastive_rows_and_self_...
    with_cl, _ = build(make_mmrec, mask_weight=0.0, cl_weight=1.0, **ours)
    without, _ = build(make_mmrec, mask_weight=0.0, cl_weight=0.0, **ours)
    interaction = batch(with_cl)
    signal, _ = with_cl.signal()
    bands = with_cl.decomposer(signal).transpose(0, 1)
    nodes = with_cl.batch_nodes(interaction)
    users, items = nodes.rows[nodes.users], nodes.rows[nodes.positives]
    expected = sum(band_contrastive_loss(bands[torch.unique(nodes)], with_cl.chunk_slices, with_cl.temperature)
                   for nodes in (users, items)).item()  # each distinct user / positive item once
    assert expected > 0
    difference = with_cl.calculate_loss(interaction).item() - without.calculate_loss(interaction).item()
    assert difference == pytest.approx(expected, rel=1e-4)


@pytest.mark.parametrize("cl_rows, self_negative", [("distinct", False), ("batch", False), ("batch", True)])
def test_contrastive_rows_and_self_negative_switches(make_mmrec, cl_rows, self_negative):
    """``cl_rows: batch`` (the reference) contrasts every batch row, repeated users / positive items included;
    ``cl_self_negative`` is passed through to the InfoNCE."""
    switches = dict(mask_weight=0.0, cl_rows=cl_rows, cl_self_negative=self_negative)
    with_cl, _ = build(make_mmrec, cl_weight=1.0, **switches)
    without, _ = build(make_mmrec, cl_weight=0.0, **switches)
    interaction = batch(with_cl, n=24)
    nodes = with_cl.batch_nodes(interaction)
    users, items = nodes.rows[nodes.users], nodes.rows[nodes.positives]
    assert len(torch.unique(users)) < len(users) and len(torch.unique(items)) < len(items)  # repeats in the batch
    signal, _ = with_cl.signal()
    bands = with_cl.decomposer(signal).transpose(0, 1)
    rows = (lambda nodes: nodes) if cl_rows == "batch" else torch.unique
    expected = sum(band_contrastive_loss(bands[rows(nodes)], with_cl.chunk_slices, with_cl.temperature,
                                         self_negative=self_negative) for nodes in (users, items)).item()
    distinct = sum(band_contrastive_loss(bands[torch.unique(nodes)], with_cl.chunk_slices, with_cl.temperature)
                   for nodes in (users, items)).item()
    assert (expected == pytest.approx(distinct, rel=1e-6)) == (cl_rows == "distinct" and not self_negative)
    difference = with_cl.calculate_loss(interaction).item() - without.calculate_loss(interaction).item()
    assert difference == pytest.approx(expected, rel=1e-4)


def test_item_graph_weights_by_name_or_slot(make_mmrec):
    """``mm_weights_by: slot`` (the reference) fills the reference's image and text slots with whatever two
    modalities the dataset has (by name where one matches, else in order); ``name`` only uses the reference's
    weights for modalities of exactly those names (else uniform)."""
    def graph(modalities, dataset, **switches):
        return build(make_mmrec, modalities=modalities, dataset=dataset, **switches)[0].item_graph.to_dense()

    tiktok_like = {"audio": 6, "image": 5}  # modality order: audio, image (sorted names)
    assert torch.allclose(graph(tiktok_like, "av", mm_weights_by="slot"),
                          graph(tiktok_like, "av", mm_modality_weights=[0.9, 0.1]))  # image 0.1, audio the text slot
    assert torch.allclose(graph(tiktok_like, "av", mm_weights_by="name"), graph(tiktok_like, "av", mm_modality_weights=[1, 1]))
    assert not torch.allclose(graph(tiktok_like, "av", mm_weights_by="name"), graph(tiktok_like, "av", mm_weights_by="slot"))
    unnamed = {"left": 6, "right": 5}  # no name matches: the slots in order
    assert torch.allclose(graph(unnamed, "lr", mm_weights_by="slot"), graph(unnamed, "lr", mm_modality_weights=[0.1, 0.9]))
    named = {"image": 6, "text": 5}  # both ways the reference's weights
    assert torch.allclose(graph(named, "it", mm_weights_by="slot"), graph(named, "it", mm_modality_weights=[0.1, 0.9]))
    assert torch.allclose(graph(named, "it", mm_weights_by="name"), graph(named, "it", mm_modality_weights=[0.1, 0.9]))
    assert not torch.allclose(graph(named, "it", mm_weights_by="name"), graph(named, "it", mm_modality_weights=[1, 1]))
    three = {"audio": 4, "image": 5, "text": 6}  # more modalities than slots: uniform either way
    assert torch.allclose(graph(three, "three", mm_weights_by="slot"), graph(three, "three", mm_modality_weights=[1, 1, 1]))
    with pytest.raises(ConfigError, match="mm_weights_by 'size' is unknown"):
        build(make_mmrec, mm_weights_by="size")


def test_preference_init_switch(make_mmrec):
    """User preference tables: xavier-uniform (default) or xavier-normal (the reference), same variance."""
    tables = {init: build(make_mmrec, preference_init=init)[0].user_preference for init in ("uniform", "normal")}
    for init, preference in tables.items():
        for weight in (table.weight.detach() for table in preference.values()):
            std = math.sqrt(2.0 / sum(weight.shape))
            bound = math.sqrt(3.0) * std  # xavier-uniform's limit
            assert weight.std().item() == pytest.approx(std, rel=0.1)
            beyond = (weight.abs() > bound).float().mean().item()
            assert (beyond == 0) if init == "uniform" else (beyond > 0.03)  # N(0, σ²): 8 % beyond √3σ


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
    from recbole_ssr.training.trainer import MultimodalTrainer

    config, _, (train, valid, _) = prepare("SSR", name, config_dict=dict(
        QUICK, data_path=root, epochs=6, learning_rate=0.01, eval_step=0))
    model = get_model("SSR")(config, train.dataset)
    trainer = MultimodalTrainer(config, model)
    trainer.fit(train, None, saved=False)
    losses = [trainer.train_loss_dict[e] for e in range(6)]
    assert losses[-1] < 0.8 * losses[0], losses


def test_ssr_runs_end_to_end_and_is_the_default(make_mmrec):
    from recbole_ssr.cli import parse_args, DEFAULT_MODEL

    spec, _ = parse_args([])
    assert spec.model is None and DEFAULT_MODEL == "SSR"  # no --model: the command line runs SSR
    root, name, _ = make_mmrec()
    outcome = run("SSR", name, config_dict=dict(QUICK, data_path=root, epochs=2, learning_rate=1e-4, lr_decay=[0.5, 1]))
    assert outcome["epochs_run"] == 2 and all(0 <= v <= 1 for v in outcome["test_result"].values())
    history = outcome["valid_history"]  # the learning curve: one entry per evaluation, with that epoch's lr
    assert [h["epoch"] for h in history] == [0, 1] and [h["lr"] for h in history] == pytest.approx([1e-4, 5e-5])
    assert max(h["valid_score"] for h in history) == pytest.approx(outcome["best_valid_score"])
    mixing = outcome["model_summary"]["mixing"]  # S of the best-valid weights, per side
    for side in ("user", "item"):
        matrix = torch.tensor(mixing[side]["S"])
        assert torch.allclose(matrix.sum(dim=0), torch.ones(3), atol=1e-5)
        assert mixing[side]["max_abs_from_uniform"] == pytest.approx(float((matrix - 1 / 3).abs().max()), abs=1e-6)


def batch_rows(model, interaction):
    """Graph rows (users first, items offset by n_users) of a batch's users, positive and negative items."""
    return (interaction[model.USER_ID], interaction[model.ITEM_ID] + model.n_users,
            interaction[model.NEG_ITEM_ID] + model.n_users)


def plain_ssr_loss(model, interaction):
    """SSR's training loss written the plain way, as docs/ssr.md states it: whole-graph bands from the filter bank,
    stage (iii) on every batch row separately (no sharing across rows or passes), Ω once per side and pass, one BCE
    mean over the 2B logits. The band mask is drawn per distinct node, in the same order as the model draws it."""
    signal, node = model.signal()
    bands = model.decomposer(signal).transpose(0, 1)  # [N, M, D]
    users, pos, neg = batch_rows(model, interaction)
    batch = len(users)
    nodes = torch.cat([users, pos, neg])
    distinct, inverse = torch.unique(nodes, return_inverse=True)
    keep = (torch.rand(len(distinct), model.num_bands) >= model.mask_rate)
    keep[:, 0] |= ~keep.any(dim=1)

    def side_pass(rows, side, keep_rows=None):
        picked = bands[rows]
        if keep_rows is not None:
            picked = picked * keep_rows.unsqueeze(-1) / (1 - model.mask_rate)
        operator, gate = model.operators[side], model.gates[side]
        mixed = torch.einsum("mn,bnd->bmd", operator.mixing(), picked)
        out = operator.scale(node[rows]).unsqueeze(1) * operator.gains() * mixed
        logits = gate.mlp(torch.cat([node[rows], out.mean(dim=1)], dim=-1))
        weights = 1 + gate.gamma * torch.tanh(logits)
        weighted = out * weights.unsqueeze(-1)
        p, q = out.sum(1), weighted.sum(1)
        h = q * (p.norm(dim=-1, keepdim=True) + 1e-6) / (q.norm(dim=-1, keepdim=True) + 1e-6)
        return h, operator.regularizer()

    def all_rows(keep_rows=None):
        split = (lambda part: None) if keep_rows is None else (lambda part: keep_rows[inverse][part])
        hu, reg_u = side_pass(users, "user", split(slice(0, batch)))
        hp, reg_i = side_pass(pos, "item", split(slice(batch, 2 * batch)))
        hn, _ = side_pass(neg, "item", split(slice(2 * batch, None)))
        return (hu, hp, hn), reg_u + reg_i

    (hu, hp, hn), omega = all_rows()
    logits = torch.cat([(hu * hp).sum(-1), (hu * hn).sum(-1)])
    labels = torch.cat([torch.ones(batch), torch.zeros(batch)])
    loss = F.binary_cross_entropy_with_logits(logits, labels) + model.reg_weight * omega
    masked, masked_omega = all_rows(keep)
    loss = loss + model.reg_weight * masked_omega
    loss = loss + model.mask_weight * sum(F.mse_loss(m, f.detach()) for m, f in zip(masked, (hu, hp, hn))) / 3
    rows = (lambda n: n) if model.cl_rows == "batch" else torch.unique
    contrast = sum(band_contrastive_loss(bands[rows(n)], model.chunk_slices, model.temperature,
                                         self_negative=model.cl_self_negative) for n in (users, pos))
    return loss + model.cl_weight * contrast


@pytest.mark.parametrize("band_method", ["chebyshev", "reference", "eigen"])
def test_fast_training_step_equals_the_plain_loss_and_gradients(make_mmrec, band_method):
    """The training step's shortcuts (bands only at the batch's distinct rows with row-sparse gradients, stage (iii)
    once per distinct node, s(x) and the gate's x-part shared by the clean and masked passes) change no number."""
    model, _ = build(make_mmrec, modalities={"image": 6, "audio": 5}, band_method=band_method, cheb_order=8,
                     mask_weight=0.5, cl_weight=0.3, reg_weight=0.2)
    interaction = batch(model, n=24)  # repeated users and items in the batch
    assert len(torch.unique(interaction["user_id"])) < 24
    results = []
    for compute in (model.calculate_loss, lambda i: plain_ssr_loss(model, i)):
        model.zero_grad()
        model.decomposer.refresh()
        torch.manual_seed(5)
        loss = compute(interaction)
        loss.backward()
        results.append((loss.item(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}))
    (fast_loss, fast_grads), (plain_loss, plain_grads) = results
    assert fast_loss == pytest.approx(plain_loss, rel=1e-5)
    assert fast_grads.keys() == plain_grads.keys() and len(fast_grads) > 10
    for name in plain_grads:
        torch.testing.assert_close(fast_grads[name], plain_grads[name], rtol=1e-4, atol=1e-6, msg=name)


def test_loss_terms_are_weighted_as_the_reference(make_mmrec):
    """BCE is one mean over the 2B logits; Ω counts each side's module once per pass (clean + masked)."""
    model, _ = build(make_mmrec, mask_weight=0.0, cl_weight=0.0, reg_weight=0.0)
    interaction = batch(model)
    model.decomposer.refresh()
    bce_only = model.calculate_loss(interaction).item()
    users, pos, neg = batch_rows(model, interaction)
    model.eval()
    with torch.no_grad():
        user_h, item_h = model.forward()
    logits = torch.cat([(user_h[users] * item_h[pos - model.n_users]).sum(-1),
                        (user_h[users] * item_h[neg - model.n_users]).sum(-1)])
    expected = F.binary_cross_entropy_with_logits(logits, torch.cat([torch.ones(16), torch.zeros(16)])).item()
    assert bce_only == pytest.approx(expected, rel=1e-5)
    omega = sum(op.regularizer() for op in model.operators.values()).item()
    model.train()
    for mask_weight, passes in ((0.0, 1), (1e-9, 2)):
        weighted, _ = build(make_mmrec, mask_weight=mask_weight, cl_weight=0.0, reg_weight=1.0)
        weighted.decomposer.refresh()
        difference = weighted.calculate_loss(interaction).item() - bce_only
        assert difference == pytest.approx(passes * omega, rel=1e-4)


def test_user_branch_weights_start_as_a_softmax_and_are_used_linearly(make_mmrec):
    model, _ = build(make_mmrec, modalities={"image": 6})
    weights = model.user_branch_weights
    assert torch.allclose(weights.sum(dim=1), torch.ones(model.n_users), atol=1e-6)
    assert weights.min() > 0 and weights.std() > 0  # softmax of an xavier draw (std √(2/(U+B)), ≈ 1/B on big data)
    with torch.no_grad():
        _, before = model.signal()
        weights.mul_(3.0)  # a linear use scales the users' R by 3; a softmax would undo it
        _, after = model.signal()
    torch.testing.assert_close(after[: model.n_users], 3 * before[: model.n_users])
    torch.testing.assert_close(after[model.n_users:], before[model.n_users:])


def test_band_scale_multiplies_the_bands_in_training_and_evaluation(make_mmrec):
    """band_scale [1, 1, 0] scores exactly as the full model with the high band removed at inference, and in
    training the step sees the scaled bands (same loss as the plain whole-bands implementation of scaled bands)."""
    from recbole_ssr.core.errors import ConfigError

    full, _ = build(make_mmrec)
    without_high, _ = build(make_mmrec, band_scale=[1.0, 1.0, 0.0])
    full.eval(), without_high.eval()
    full.remove_band_at_inference(2)
    for a, b in zip(full.forward(), without_high.forward()):
        torch.testing.assert_close(a, b)
    halved, _ = build(make_mmrec, band_scale=[1.0, 1.0, 0.5], mask_weight=0.0, cl_weight=0.0)
    plain, _ = build(make_mmrec, mask_weight=0.0, cl_weight=0.0)
    interaction = batch(halved)
    real_bands_at = plain.decomposer.bands_at
    plain.decomposer.bands_at = lambda x, rows: real_bands_at(x, rows) * torch.tensor([1.0, 1.0, 0.5])[:, None]
    assert grads_after_loss(halved, interaction)[0] == pytest.approx(grads_after_loss(plain, interaction)[0],
                                                                     rel=1e-6)
    for bad in ([1.0, 1.0], [1.0, -1.0, 1.0], "high"):
        with pytest.raises(ConfigError, match="band_scale"):
            build(make_mmrec, band_scale=bad)


def test_eval_band_scale_changes_scoring_only(make_mmrec):
    """eval_band_scale leaves training untouched (same loss and gradients as the plain model), scores like the
    scaled bands at evaluation ([1, 1, 0] = the high band removed at inference), and can be set after training."""
    from recbole_ssr.core.errors import ConfigError

    plain, _ = build(make_mmrec)
    scaled, _ = build(make_mmrec, eval_band_scale=[1.0, 1.0, 0.0])
    interaction = batch(plain)
    plain_loss, plain_grads = grads_after_loss(plain, interaction)
    scaled_loss, scaled_grads = grads_after_loss(scaled, interaction)
    assert scaled_loss == plain_loss
    for name, grad in plain_grads.items():
        torch.testing.assert_close(scaled_grads[name], grad, msg=name)
    plain.eval(), scaled.eval()
    full_scores = [t.clone() for t in plain.forward()]
    plain.remove_band_at_inference(2)
    for a, b in zip(scaled.forward(), plain.forward()):
        torch.testing.assert_close(a, b)
    assert not torch.allclose(scaled.forward()[0], full_scores[0])
    scaled.set_eval_band_scale(None)  # back to the trained model's own scoring
    for a, b in zip(scaled.forward(), full_scores):
        torch.testing.assert_close(a, b)
    scaled.set_eval_band_scale([1.0, 1.0, 0.5])
    halved = scaled.forward()[0]
    assert not torch.allclose(halved, full_scores[0]) and not torch.allclose(halved, plain.forward()[0])
    with pytest.raises(ConfigError, match="eval_band_scale"):
        scaled.set_eval_band_scale([1.0, 1.0])
    with pytest.raises(ConfigError, match="eval_band_scale"):
        build(make_mmrec, eval_band_scale=[1.0, -0.5, 1.0])


def test_alignment_term_is_the_id_content_infonce_and_off_by_default(make_mmrec):
    from recbole_ssr.model.losses import info_nce

    base = dict(mask_weight=0.0, cl_weight=0.0)
    aligned, _ = build(make_mmrec, align_weight=0.5, **base)
    plain, _ = build(make_mmrec, **base)
    assert plain.align_weight == 0.0  # the paper's model unless switched on
    interaction = batch(aligned)
    _, node = aligned.signal()
    users, items, _ = batch_rows(aligned, interaction)
    expected = 0.0
    for nodes in (torch.unique(users), torch.unique(items)):
        rows = node[nodes]
        ids, content = rows[:, :aligned.dim], (rows[:, aligned.dim:2 * aligned.dim]
                                               + rows[:, 2 * aligned.dim:]) / 2  # two modalities: image, text
        expected += ((info_nce(ids, content, 0.2) + info_nce(content, ids, 0.2)) / 2).item()
    difference = aligned.calculate_loss(interaction).item() - plain.calculate_loss(interaction).item()
    assert difference == pytest.approx(0.5 * expected, rel=1e-4)
    _, grads = grads_after_loss(aligned, interaction)
    assert grads["item_id_embedding.weight"].abs().sum() > 0


def _run_file(tmp_path, name, dataset, config, scores, test=None):
    """A minimal --results file of one run: its valid curve (one score per epoch) and test metrics."""
    import json

    result = {"dataset": dataset, "config": dict(config), "test_result": test or {"recall@20": 0.1, "ndcg@20": 0.05},
              "valid_history": [{"epoch": e, "valid_score": s} for e, s in enumerate(scores)]}
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(result))
    return str(path)


def test_defaults_rule_scores_candidates_across_datasets_and_breaks_ties_by_cost(tmp_path):
    """benchmarks/ssr_defaults.py: the schedule score is the mean over datasets of the candidate's mean best valid
    relative to the best candidate's; a candidate within 1 % of the top that trains fewer epochs is chosen; the
    degree rule picks the lowest degree within one reference std."""
    import os
    import sys

    from conftest import REPO_ROOT

    sys.path.insert(0, os.path.join(REPO_ROOT, "benchmarks"))
    import ssr_defaults
    from lr_curves import load

    fast = {"learning_rate": 1e-3, "epochs": 10}
    slow = {"learning_rate": 3e-4, "epochs": 100}
    paths = []
    for seed, (a, b) in enumerate([(0.50, 0.20), (0.52, 0.22)]):
        # "fast": best at epoch 3 of 10 on both datasets; "slow": slightly higher on A, lower on B, 100 epochs
        paths.append(_run_file(tmp_path, f"fa{seed}", "A", dict(fast, seed=seed), [0.1, 0.2, a] + [a - 0.01] * 7))
        paths.append(_run_file(tmp_path, f"fb{seed}", "B", dict(fast, seed=seed), [0.1, b] + [b - 0.01] * 8))
        paths.append(_run_file(tmp_path, f"sa{seed}", "A", dict(slow, seed=seed), [0.1] * 99 + [a + 0.01]))
        paths.append(_run_file(tmp_path, f"sb{seed}", "B", dict(slow, seed=seed), [0.1] * 99 + [b - 0.001]))
    table = ssr_defaults.summarise(load(paths), ["learning_rate", "epochs"])
    chosen, scores = ssr_defaults.choose_schedule(table, tie=0.01)
    fast_label, slow_label = "learning_rate=0.001, epochs=10", "learning_rate=0.0003, epochs=100"
    # slow: (0.52/0.52 + 0.209/0.21)/2 = 0.9976; fast: (0.51/0.52 + 1)/2 = 0.9904 -> within 1 %: the cheaper wins
    assert scores[slow_label][0] == pytest.approx((1 + 0.209 / 0.21) / 2)
    assert scores[fast_label][0] == pytest.approx((0.51 / 0.52 + 1) / 2)
    assert scores[fast_label][1] == 20 and scores[slow_label][1] == 200
    assert chosen == fast_label
    assert ssr_defaults.choose_schedule(table, tie=0.001)[0] == slow_label  # no tie: the higher score
    with pytest.raises(SystemExit, match="missing: .*on B"):
        ssr_defaults.choose_schedule({k: v for k, v in table.items() if k != ("B", slow_label)})

    degree_paths = []
    for seed, (d16, d8, d4) in enumerate([(0.50, 0.49, 0.40), (0.54, 0.50, 0.42)]):
        for degree, score in ((16, d16), (8, d8), (4, d4)):
            degree_paths.append(_run_file(tmp_path, f"d{degree}_{seed}", "A", {"cheb_order": degree, "seed": seed},
                                          [score]))
    degrees = ssr_defaults.summarise(load(degree_paths), ["cheb_order"])
    # reference 0.52 ± 0.0283: degree 8 (0.495) is within one std, degree 4 (0.41) is not
    assert ssr_defaults.choose_degree(degrees, 16) == {"A": 8}
