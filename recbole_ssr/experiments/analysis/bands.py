"""``--analysis=bands``: SSR's band diagnostics (docs/ssr.md "Switches (ablations and diagnostics)").

For each seed, SSR is trained once (in this process, so the model can be inspected) and then measured:

1. **Energy share per band and modality over training.** The pre-operator bands Y_m of X = R + Q
   (:meth:`SSR.band_signal`, exact band edges of the current signal, no effect on training) are split into the
   branch chunks (id and each content modality, d columns each); the share of band m in chunk c is
   ⟨X_c, Y_m,c⟩ / ‖X_c‖² (:func:`recbole_ssr.model.spectral.band_energy_shares`, projection kind), over all real
   users and items (padding rows left out), and separately over users and over items. The shares of one chunk
   sum to 1 (the bands sum to X). Recorded before training (0 epochs), after every validation, and for the
   best-valid checkpoint (``best``).
2. **Gate weights by degree bucket.** The gate weights w_m (stage iii) of the best checkpoint's evaluation
   forward, averaged over the users (and items) of each training-degree bucket (``group_degree_bounds``).
   All ones with ``use_gate: False``.
3. **Band removal at inference.** Band m is zeroed before stage (iii) (:meth:`SSR.remove_band_at_inference`)
   and the test set is re-scored; the table gives ``analysis_metric`` per group (all users, each degree bucket,
   cold-start items) and its change against the full model.
4. **Band-mixing matrices.** The G-HSNO operator's column-stochastic S (users' and items' modules) of the best
   checkpoint, and its distance from uniform max |S − 1/M| (0: every band is replaced by the mean of all bands,
   so the operator mixes nothing and the gates see identical bands; :meth:`SSR.mixing_matrices`).
5. **Cross-modal similarity per band.** For every pair of branches (a, b) and band m: the mean cosine between
   node n's a-chunk and b-chunk of Y_m (``cos_same``), against the same with b taken from a random other node
   (``cos_random``); ``gap`` = their difference. Users and items separately; at most ``bands_similarity_max_nodes``
   nodes per side (sampled with the seed).

Output: ``bands.md`` (report), CSV per diagnostic (``energy_history.csv``, ``energy_best.csv``,
``gate_weights.csv``, ``band_removal.csv``, ``mixing.csv``, ``cross_modal_similarity.csv``), ``bands.json`` and PNG plots
(``energy_over_training.png``, ``energy_best.png``, ``gate_weights_by_degree.png``, ``band_removal.png``,
``cross_modal_similarity.png``). With several seeds the tables show mean ± std over seeds.
"""

import os

import numpy as np
import torch
import torch.nn.functional as F

from recbole_ssr.experiments.analysis import common, plots
from recbole_ssr.core.errors import ConfigError
from recbole_ssr.training.evaluation import bucket_index, bucket_labels, degree_bounds, group_names, training_degrees
from recbole_ssr.core.report import markdown_table, write_csv
from recbole_ssr.model.spectral import band_energy_shares
from recbole_ssr.experiments.run import run
from recbole_ssr.model.registry import get_model


def band_label(m, num_bands):
    if num_bands == 1:
        return "band 0"
    if m == 0:
        return "band 0 (low)"
    if m == num_bands - 1:
        return f"band {m} (high)"
    return f"band {m} (mid)"


def _node_rows(model):
    """Row indices (users first) of the real users and items, padding rows left out."""
    users = torch.arange(1, model.n_users)
    items = torch.arange(model.n_users + 1, model.n_users + model.n_items)
    return {"all": torch.cat([users, items]), "users": users, "items": items}


def _chunks(model):
    return [(name, slice(k * model.dim, (k + 1) * model.dim)) for k, name in enumerate(model.branches)]


def energy_shares(model, bands=None, signal=None):
    """Rows {nodes, modality, band, share}: projection energy share of each band per branch chunk (sums to 1)."""
    if bands is None:
        bands, signal = model.band_signal()
    rows = []
    num_bands = bands.shape[1]
    for nodes, index in _node_rows(model).items():
        index = index.to(bands.device)
        picked, x = bands[index], signal[index]
        for name, cols in _chunks(model):
            shares = band_energy_shares(picked[:, :, cols].transpose(0, 1), x[:, cols])
            rows += [{"nodes": nodes, "modality": name, "band": m, "band_label": band_label(m, num_bands),
                      "share": float(shares[m])} for m in range(num_bands)]
    return rows


def gate_weights_by_degree(model, train_dataset, bounds):
    """Rows {side, bucket, n, band, weight}: mean gate weight of each band per training-degree bucket."""
    model.eval()
    model.remove_band_at_inference(None)
    model.cached_embeddings()  # the evaluation forward records model.gate_weights
    user_degree, item_degree = training_degrees(train_dataset)
    labels = bucket_labels(bounds)
    rows = []
    for side, degrees in (("users", user_degree), ("items", item_degree)):
        weights = model.gate_weights["user" if side == "users" else "item"].detach().cpu().numpy()[1:]
        buckets = bucket_index(degrees[1:], bounds)
        for index, label in enumerate(labels):
            members = buckets == index
            for m in range(weights.shape[1]):
                rows.append({"side": side, "bucket": label, "n": int(members.sum()), "band": m,
                             "band_label": band_label(m, weights.shape[1]),
                             "weight": float(weights[members, m].mean()) if members.any() else None})
    return rows


def band_removal(model, trainer, test_data, train_dataset, config, metric):
    """Rows {removed, group, n_users, value, change}: ``metric`` per group with one band zeroed at inference."""
    reference = trainer.evaluate_groups(test_data, train_dataset)
    if reference is None:
        raise ConfigError("the band removal needs full-sort evaluation with top-k metrics (eval_args mode: full).")
    if metric not in reference["all"]:
        raise ConfigError(f"analysis_metric '{metric}' is not computed; metrics/topk give {list(reference['all'])}.")
    base = {name: entry.get(metric) for name, entry in group_names(reference)}
    rows = [{"removed": "none", "group": name, "n_users": entry["n_users"], "value": entry.get(metric),
             "change": 0.0 if entry.get(metric) is not None else None} for name, entry in group_names(reference)]
    try:
        for m in range(model.num_bands):
            model.remove_band_at_inference(m)
            groups = trainer.evaluate_groups(test_data, train_dataset)
            for name, entry in group_names(groups):
                value = entry.get(metric)
                rows.append({"removed": band_label(m, model.num_bands), "group": name, "n_users": entry["n_users"],
                             "value": value,
                             "change": None if value is None or base[name] is None else value - base[name]})
    finally:
        model.remove_band_at_inference(None)
    return rows


def cross_modal_similarity(model, max_nodes, seed, bands=None):
    """Rows {side, pair, band, cos_same, cos_random, gap} for every pair of branches (module doc, item 4)."""
    if bands is None:
        bands, _ = model.band_signal()
    chunks = _chunks(model)
    generator = torch.Generator().manual_seed(int(seed))
    rows = []
    for side in ("users", "items"):
        index = _node_rows(model)[side]
        if max_nodes and len(index) > max_nodes:
            index = index[torch.randperm(len(index), generator=generator)[: int(max_nodes)]]
        if len(index) < 2:
            continue
        picked = bands[index.to(bands.device)]
        perm = torch.randperm(len(index), generator=generator)
        perm = torch.where(perm == torch.arange(len(index)), (perm + 1) % len(index), perm).to(bands.device)
        normed = {name: F.normalize(picked[:, :, cols], dim=-1) for name, cols in chunks}
        for i, (a, _) in enumerate(chunks):
            for b, _ in chunks[i + 1:]:
                same = (normed[a] * normed[b]).sum(-1).mean(0)
                other = (normed[a] * normed[b][perm]).sum(-1).mean(0)
                for m in range(picked.shape[1]):
                    rows.append({"side": side, "pair": f"{a}~{b}", "band": m,
                                 "band_label": band_label(m, picked.shape[1]), "cos_same": float(same[m]),
                                 "cos_random": float(other[m]), "gap": float(same[m] - other[m])})
    return rows


def diagnose(model_name, dataset, config_files, config_dict, settings):
    """Train SSR once (``config_dict`` includes the seed) and return every diagnostic of this run."""
    state, history = {}, []

    def record(epochs_trained):
        for row in energy_shares(state["model"]):
            history.append(dict(row, epochs_trained=epochs_trained))

    def on_ready(model, trainer, loaders):
        state.update(model=model, trainer=trainer, loaders=loaders)
        record(0)

    def after_validation(epoch, valid_score, valid_result):
        record(epoch + 1)

    outcome = run(model_name, dataset, config_files, config_dict, callback_fn=after_validation, on_ready=on_ready)
    model, trainer, (train_data, _, test_data) = state["model"], state["trainer"], state["loaders"]
    config = trainer.config
    metric = settings["analysis_metric"]
    bands, signal = model.band_signal()
    result = {
        "outcome": outcome,
        "energy_history": history,
        "energy_best": energy_shares(model, bands, signal),
        "cross_modal_similarity": cross_modal_similarity(model, settings.get("bands_similarity_max_nodes"),
                                                         config_dict.get("seed", 0), bands),
        "gate_weights": gate_weights_by_degree(model, train_data.dataset, degree_bounds(config)),
        "mixing": mixing_rows(model),
    }
    result["band_edges"] = None if model.decomposer.band_edges is None else \
        [float(v) for v in model.decomposer.band_edges]
    result["band_method"] = model.decomposer.method
    result["band_removal"] = band_removal(model, trainer, test_data, train_data.dataset, config, metric)
    return result


def run_bands(models, dataset, spec, overrides, settings):

    if len(models) != 1 or not hasattr(get_model(models[0]), "band_signal"):
        raise ConfigError(f"--analysis=bands inspects SSR's frequency bands: pass a single --model=SSR "
                          f"(got {','.join(models)}).")
    model_name = models[0]
    overrides = dict(overrides)
    seed0 = common.base_seed(overrides)
    seeds = [seed0 + i for i in range(max(1, int(spec.seeds or 1)))]
    folder = common.start(spec, "bands", dataset)
    metric = settings["analysis_metric"]

    per_seed, tables = [], {k: [] for k in ("energy_history", "energy_best", "gate_weights", "band_removal",
                                            "mixing", "cross_modal_similarity")}
    for seed in seeds:
        print(f"[analysis] bands: {model_name} seed {seed} ...", flush=True)
        result = diagnose(model_name, dataset, spec.config_files, dict(overrides, seed=seed),
                          settings)
        per_seed.append(dict(result, seed=seed))
        for key in tables:
            tables[key] += [dict(row, seed=seed) for row in result[key]]
        print(f"[analysis] bands: {model_name} seed {seed}: done", flush=True)
    for key, rows in tables.items():
        write_csv(os.path.join(folder, f"{key}.csv"), rows)

    report = [f"# Band diagnostics: {model_name} on {dataset}", "",
              f"Seeds {seeds}; band method `{per_seed[0]['band_method']}`, band edges λ (best checkpoint, first "
              f"seed): {_fmt_list(per_seed[0]['band_edges'])}; command-line overrides: "
              + (", ".join(f"`{k}={v}`" for k, v in overrides.items()) or "none") + ". Tables: mean ± std over "
              "seeds.", ""]
    report += _energy_section(folder, tables, dataset)
    report += _gate_section(folder, tables)
    report += _removal_section(folder, tables, metric)
    report += _mixing_section(tables)
    report += _similarity_section(folder, tables)
    report += [common.GROUP_DEFINITIONS]
    runs = [dict(r["outcome"], seed=r["seed"], status="ok") for r in per_seed]
    common.write_report(folder, "bands", report,
                        {"runs": runs, "seeds": seeds, **{k: v for k, v in tables.items()},
                         "band_edges": {r["seed"]: r["band_edges"] for r in per_seed}}, spec.results,
                        models, dataset)
    return folder


def _fmt_list(values):
    return "–" if not values else ", ".join(f"{v:.3f}" for v in values)


def _energy_section(folder, tables, dataset):
    best = common.summarise(tables["energy_best"], ("nodes", "modality", "band"), ["share"])
    num_bands = 1 + max(key[2] for key in best)
    labels = [band_label(m, num_bands) for m in range(num_bands)]
    modalities = list(dict.fromkeys(key[1] for key in best))
    lines_ = ["## Energy share per band and modality", "",
              "Projection share ⟨X_c, band_m⟩/‖X_c‖² of each branch chunk c (rows sum to 1), best checkpoint. Over all "
              "nodes a share is an energy (≥ 0, up to the band filters' approximation); over the users or the "
              "items alone it is a projection and can be negative, since the bands are orthogonal over the whole "
              "graph, not over a part of it.",
              ""]
    for nodes in ("all", "users", "items"):
        rows = [[f"{nodes}: {name}"] + [common.fmt_mean_std(best[(nodes, name, m)]["share"], 3)
                                        for m in range(num_bands)] for name in modalities]
        lines_ += [markdown_table(["nodes: modality"] + labels, rows), ""]
    matrix = [[best[("all", name, m)]["share"][0] for m in range(num_bands)] for name in modalities]
    plots.heatmap(os.path.join(folder, "energy_best.png"), matrix, modalities, labels,
                  title=f"{dataset}: energy share per band (best checkpoint)")

    history = common.summarise(tables["energy_history"], ("nodes", "modality", "band", "epochs_trained"), ["share"])
    panels = {}
    for name in modalities:
        epochs = sorted({key[3] for key in history if key[0] == "all" and key[1] == name})
        panels[name] = (epochs, {labels[m]: [history.get(("all", name, m, e), {}).get("share") for e in epochs]
                                 for m in range(num_bands)})
    plots.lines(os.path.join(folder, "energy_over_training.png"), panels, xlabel="epochs trained",
                ylabel="energy share", title="energy share per band over training (all nodes)")
    first = sorted({key[3] for key in history})
    if first:
        start, end = first[0], first[-1]
        rows = [[name] + [f"{_mean(history, ('all', name, m, start)):.3f} → "
                          f"{_mean(history, ('all', name, m, end)):.3f}" for m in range(num_bands)]
                for name in modalities]
        lines_ += [f"Over training (all nodes, {start} → {end} epochs trained):", "",
                   markdown_table(["modality"] + labels, rows), ""]
    lines_ += ["![energy, best checkpoint](energy_best.png) ![energy over training](energy_over_training.png)", ""]
    return lines_


def _mean(summary, key):
    value = summary.get(key, {}).get("share")
    return float("nan") if value is None else value[0]


def _gate_section(folder, tables):
    summary = common.summarise(tables["gate_weights"], ("side", "bucket", "band"), ["weight"])
    counts = {(r["side"], r["bucket"]): r["n"] for r in tables["gate_weights"]}
    num_bands = 1 + max(key[2] for key in summary)
    labels = [band_label(m, num_bands) for m in range(num_bands)]
    lines_ = ["## Gate weights by training-degree bucket", "",
              "Mean gate weight w_m (1 = neutral; 1 ± γ at the extremes) of the best checkpoint.", ""]
    for side in ("users", "items"):
        buckets = list(dict.fromkeys(key[1] for key in summary if key[0] == side))
        rows = [[b, counts[(side, b)]] + [common.fmt_mean_std(summary[(side, b, m)]["weight"], 4)
                                          for m in range(num_bands)] for b in buckets]
        lines_ += [f"{side}:", "", markdown_table(["degree", side] + labels, rows), ""]
        if side == "users":
            plots.grouped_bars(os.path.join(folder, "gate_weights_by_degree.png"), buckets,
                               {labels[m]: [summary[(side, b, m)]["weight"] for b in buckets]
                                for m in range(num_bands)},
                               ylabel="mean gate weight", title="user gate weights by training degree",
                               horizontal_line=1.0)
    lines_ += ["![gate weights](gate_weights_by_degree.png)", ""]
    return lines_


def _removal_section(folder, tables, metric):
    summary = common.summarise(tables["band_removal"], ("removed", "group"), ["value", "change"])
    counts = {r["group"]: r["n_users"] for r in tables["band_removal"] if r["removed"] == "none"}
    removed = list(dict.fromkeys(key[0] for key in summary))
    groups = list(dict.fromkeys(key[1] for key in summary))
    rows = []
    for band in removed:
        cells = [band]
        for group in groups:
            stats = summary[(band, group)]
            value, change = stats["value"], stats["change"]
            if band == "none" or np.isnan(value[0]):
                cells.append(common.fmt_mean_std(value))
            else:
                cells.append(f"{common.fmt_mean_std(value)} ({change[0]:+.4f})")
        rows.append(cells)
    rows.append(["users"] + [str(counts.get(g, "")) for g in groups])
    plots.grouped_bars(os.path.join(folder, "band_removal.png"), groups,
                       {band: [summary[(band, g)]["change"] for g in groups] for band in removed if band != "none"},
                       ylabel=f"Δ {metric}", title=f"{metric} change with one band removed at inference (test)",
                       horizontal_line=0.0)
    return ["## Band removed at inference", "",
            f"Test {metric} of the best checkpoint with one band zeroed before stage (iii) (change against the "
            "full model in brackets).", "", markdown_table(["removed"] + groups, rows), "",
            "![band removal](band_removal.png)", ""]


def mixing_rows(model):
    """Rows {side, out_band, in_band, weight, max_abs_from_uniform} of the operators' mixing matrices S."""
    rows = []
    for side, entry in model.mixing_matrices().items():
        for out_band, weights in enumerate(entry["S"]):
            for in_band, weight in enumerate(weights):
                rows.append({"side": side, "out_band": out_band, "in_band": in_band, "weight": weight,
                             "max_abs_from_uniform": entry["max_abs_from_uniform"]})
    return rows


def _mixing_section(tables):
    lines_ = ["## Band-mixing matrices S of the operator", ""]
    if not tables["mixing"]:
        return lines_ + ["The operator is off (`use_operator: False`).", ""]
    summary = common.summarise(tables["mixing"], ("side", "out_band", "in_band"), ["weight", "max_abs_from_uniform"])
    num_bands = 1 + max(key[1] for key in summary)
    labels = [band_label(m, num_bands) for m in range(num_bands)]
    lines_ += ["S[m, n]: weight of input band n (columns) in output band m (rows) at the best checkpoint; each "
               f"column sums to 1, uniform = 1/{num_bands} = {1 / num_bands:.3f} (the operator then mixes nothing).",
               ""]
    for side in ("user", "item"):
        if (side, 0, 0) not in summary:
            continue
        rows = [[f"out {labels[m]}"] + [common.fmt_mean_std(summary[(side, m, n)]["weight"], 3)
                                         for n in range(num_bands)] for m in range(num_bands)]
        distance = common.fmt_mean_std(summary[(side, 0, 0)]["max_abs_from_uniform"], 3)
        lines_ += [f"{side}s (max |S − 1/M| = {distance}):", "",
                   markdown_table([side] + [f"in {label}" for label in labels], rows), ""]
    return lines_


def _similarity_section(folder, tables):
    if not tables["cross_modal_similarity"]:
        return ["## Cross-modal similarity per band", "", "Needs at least two branches.", ""]
    summary = common.summarise(tables["cross_modal_similarity"], ("side", "pair", "band"),
                               ["cos_same", "cos_random", "gap"])
    num_bands = 1 + max(key[2] for key in summary)
    labels = [band_label(m, num_bands) for m in range(num_bands)]
    lines_ = ["## Cross-modal similarity per band", "",
              "Mean cosine between a node's two branch chunks of the same band (same node / random other node).", ""]
    panels = {}
    for side in ("users", "items"):
        pairs = list(dict.fromkeys(key[1] for key in summary if key[0] == side))
        rows = [[pair] + [f"{summary[(side, pair, m)]['cos_same'][0]:.3f} / "
                          f"{summary[(side, pair, m)]['cos_random'][0]:.3f}" for m in range(num_bands)]
                for pair in pairs]
        lines_ += [f"{side} (same / random):", "", markdown_table(["pair"] + labels, rows), ""]
        series = {}
        for pair in pairs:
            series[pair] = [summary[(side, pair, m)]["cos_same"] for m in range(num_bands)]
            series[f"{pair} (random)"] = [summary[(side, pair, m)]["cos_random"] for m in range(num_bands)]
        panels[side] = (labels, series)
    plots.lines(os.path.join(folder, "cross_modal_similarity.png"), panels, ylabel="mean cosine",
                categorical_x=True, title="cross-modal similarity per band")
    lines_ += ["![cross-modal similarity](cross_modal_similarity.png)", ""]
    return lines_
