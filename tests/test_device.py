"""Right on a GPU, checked on a machine without one.

Every model - ours with every band method and extension of SSR, and RecBole's through our trainer - trains (per-epoch
hooks included), evaluates (group metrics included) and scores under :class:`placement.PretendCuda`: the code is
told its device is ``cuda``, runs on the CPU, and any tensor that would sit on another device than its operands on
a GPU raises :class:`placement.PlacementError`. The detector itself is checked first (it catches the bug class,
stays quiet on what CUDA allows, changes no number). Then the Ray side (a search must not hide GPUs from Ray) and
``scripts/gpu_check.py`` (no CUDA: a clear message and its own exit code; its comparison on CPU vs CPU).
"""

import importlib.util
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from recbole.data.interaction import Interaction
from torch import nn

from conftest import QUICK, REPO_ROOT
from placement import PlacementError, PretendCuda
from recbole_ssr.training.build import prepare
from recbole_ssr.model.registry import get_model
from recbole_ssr.training.trainer import get_trainer

CUDA = torch.device("cuda")
SSR_EXTENSIONS = {"band_method": "chebyshev", "band_refresh_every": 2, "band_scale": [1.0, 1.0, 0.5],
                  "eval_band_scale": [1.0, 0.5, 1.0], "align_weight": 0.1, "mask_fill": "noise",
                  "mask_consistency": "prediction", "cl_max_nodes": 8, "band_col_chunk": 64}
CASES = {  # id: (model, config)
    "VBPR": ("VBPR", {}), "LATTICE": ("LATTICE", {}), "FREEDOM": ("FREEDOM", {}), "BM3": ("BM3", {}),
    "MGCN": ("MGCN", {}), "LGMRec": ("LGMRec", {}), "SMORE": ("SMORE", {}),
    "SSR-eigen": ("SSR", {"band_method": "eigen"}), "SSR-chebyshev": ("SSR", {"band_method": "chebyshev"}),
    "SSR-reference": ("SSR", {"band_method": "reference"}), "SSR-extensions": ("SSR", SSR_EXTENSIONS),
    "SSR-plain": ("SSR", {"mask_rate": 0.0, "cl_weight": 0.0, "out_mode": "mix", "use_gate": False,
                          "use_operator": False}),
    "BPR": ("BPR", {}), "LightGCN": ("LightGCN", {}), "NGCF": ("NGCF", {"node_dropout": 0.1}), "SGL": ("SGL", {}),
}
PLUGIN_CASES = [key for key, (model, _) in CASES.items() if model not in ("BPR", "LightGCN", "NGCF", "SGL")]


def train_and_score(root, name, model, extra, built_on="cuda", mode=None):
    """Two epochs (hooks, evaluation and checkpoint after each), test evaluation of the best checkpoint, group
    and per-user metrics and full-sort scores of users
    1-3, with the model built on ``built_on`` ('cuda': the config's device, as RecBole does; 'cpu': built on the
    CPU, then ``model.to('cuda')``). Under ``mode`` (a PretendCuda) when given, else plainly on the CPU.
    Returns the scores (CPU tensor)."""

    def run():
        config, _, (train, valid, test) = prepare(model, name, config_dict=dict(QUICK, data_path=root, epochs=2,
                                                                               **extra))
        if mode is not None and built_on == "cuda":
            config["device"] = CUDA
        net = get_model(model)(config, train.dataset)
        if mode is not None:
            config["device"] = CUDA
        net = net.to(config["device"])
        trainer = get_trainer(config["MODEL_TYPE"], model)(config, net)
        trainer.fit(train, valid, saved=True, verbose=False)
        trainer.evaluate(test, load_best_model=True)  # the best-valid checkpoint, loaded onto the device
        if hasattr(trainer, "evaluate_groups"):
            trainer.evaluate_groups(test, train.dataset)
            trainer.evaluate_per_user(test)
        net.eval()
        with torch.no_grad():
            scores = net.full_sort_predict(Interaction({net.USER_ID: torch.tensor([1, 2, 3])}).to(config["device"]))
        if mode is not None:
            assert scores.device.type == "cuda" and all(p.device.type == "cuda" for p in net.parameters())
        return scores.cpu()

    if mode is None:
        return run()
    with mode:
        return run()


# -- the detector ----------------------------------------------------------------------------------------------------
class Scaled(nn.Module):
    """A parameter times a ones-vector made in forward: ``correct`` passes device=, the bug does not."""

    def __init__(self, correct):
        super().__init__()
        self.weight = nn.Parameter(torch.full((4,), 2.0))
        self.correct = correct

    def forward(self, x):
        ones = torch.ones(4, device=self.weight.device) if self.correct else torch.ones(4)
        return (self.weight * ones * x).sum()


class Masked(nn.Module):
    """A mask made in __init__: a buffer follows ``model.to``, a plain attribute stays behind on the CPU."""

    def __init__(self, as_buffer):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(4))
        if as_buffer:
            self.register_buffer("mask", torch.tensor([1.0, 0.0, 1.0, 0.0]))
        else:
            self.mask = torch.tensor([1.0, 0.0, 1.0, 0.0])

    def forward(self):
        return (self.weight * self.mask).sum()


@pytest.mark.parametrize("correct", [True, False], ids=["with-device", "without-device"])
def test_detector_catches_a_tensor_made_without_device(correct):
    with PretendCuda() as mode:
        model = Scaled(correct).to("cuda")
        x = torch.arange(4.0, device="cuda")
        if correct:
            out = model(x)
            out.backward()
            assert out.device == torch.device("cuda", 0) and model.weight.grad.device.type == "cuda"
            assert mode.checked > 0
        else:
            with pytest.raises(PlacementError, match="cuda and CPU tensors meet in mul"):
                model(x)
    assert Scaled(correct)(torch.arange(4.0)).item() == 12.0  # on the CPU both are the same model


@pytest.mark.parametrize("as_buffer", [True, False], ids=["buffer", "attribute"])
def test_detector_catches_a_tensor_that_model_to_leaves_behind(as_buffer):
    with PretendCuda():
        model = Masked(as_buffer).to("cuda")
        if as_buffer:
            assert model().item() == 2.0 and model.mask.is_cuda
        else:
            with pytest.raises(PlacementError):
                model()


def test_detector_covers_sparse_graphs_and_custom_backward():
    class Doubled(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x * 2

        @staticmethod
        def backward(ctx, grad):
            return grad * torch.full((grad.shape[0], 1), 2.0, device=grad.device)  # correct: grad's device

    class DoubledWrongly(Doubled):
        @staticmethod
        def backward(ctx, grad):
            return grad * torch.full((grad.shape[0], 1), 2.0)  # the bug: a CPU tensor in backward

    with PretendCuda():
        rows = torch.tensor([0, 1, 1, 2], device="cuda")
        cols = torch.tensor([1, 0, 2, 1], device="cuda")
        graph = torch.sparse_coo_tensor(torch.stack([rows, cols]), torch.ones(4, device="cuda"), (3, 3)).coalesce()
        assert graph.is_cuda and graph.to_sparse_csr().is_cuda
        x = torch.ones(3, 2, device="cuda", requires_grad=True)
        assert torch.sparse.mm(graph, x).is_cuda and torch.sparse.mm(graph.to_sparse_csr(), x).is_cuda
        with pytest.raises(PlacementError, match="_sparse_mm"):
            torch.sparse.mm(graph, torch.ones(3, 2))
        cpu_graph = torch.sparse_coo_tensor(torch.tensor([[0, 1], [1, 0]]), torch.ones(2), (3, 3))
        with pytest.raises(PlacementError):
            torch.sparse.mm(cpu_graph, x)
        Doubled.apply(x).sum().backward()
        assert x.grad.is_cuda and torch.equal(x.grad, torch.full((3, 2), 2.0, device="cuda"))
        with pytest.raises(PlacementError):
            DoubledWrongly.apply(x).sum().backward()


def test_detector_allows_what_cuda_allows():
    with PretendCuda():
        scores = torch.zeros(3, 5, device="cuda")
        loss = torch.zeros(1).to("cuda")  # RecBole's EmbLoss: made on the CPU, then moved
        assert (scores.sum() + loss).is_cuda
        scores = scores * torch.tensor(2.0)  # a CPU scalar tensor
        history = (torch.tensor([0, 1]), torch.tensor([2, 3]))  # CPU index tensors (RecBole's history_index)
        scores[history] = -np.inf
        picked = scores[torch.tensor([0, 2])]
        masked = scores[:, torch.tensor([True, False, True, False, True])]
        assert picked.is_cuda and masked.is_cuda and scores[0, 2].item() == -np.inf
        host = scores.cpu()
        assert not host.is_cuda and host.numpy().shape == (3, 5)
        host[0:2] = scores[0:2]  # a copy crosses devices
        assert torch.as_tensor(np.ones(3), device="cuda").is_cuda


def test_detector_catches_numpy_of_a_cuda_tensor_and_a_cpu_generator_for_a_cuda_draw():
    with PretendCuda():
        x = torch.ones(3, device="cuda")
        with pytest.raises(PlacementError, match="numpy"):
            x.numpy()
        with pytest.raises(PlacementError, match="generator"):
            torch.rand(3, device=x.device, generator=torch.Generator().manual_seed(0))
        with pytest.raises(PlacementError, match="index"):
            torch.arange(5)[torch.tensor([1, 2], device="cuda")]


@pytest.mark.parametrize("model, extra", [("FREEDOM", {}), ("SSR", {"band_method": "chebyshev"})],
                         ids=["FREEDOM", "SSR-chebyshev"])
def test_detector_changes_no_number(make_mmrec, model, extra):
    """The same seed gives the same scores plainly on the CPU and under PretendCuda (random draws included:
    FREEDOM's edge sampling, SSR's masks), so what the detector runs is the model as it is."""
    root, name, _ = make_mmrec()
    plain = train_and_score(root, name, model, extra)
    pretend = train_and_score(root, name, model, extra, mode=PretendCuda())
    assert torch.equal(plain, pretend)


# -- every model -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", list(CASES))
def test_every_model_keeps_its_tensors_on_the_device(make_mmrec, case):
    model, extra = CASES[case]
    root, name, _ = make_mmrec()
    mode = PretendCuda()
    scores = train_and_score(root, name, model, extra, mode=mode)
    assert mode.checked > 100 and torch.isfinite(scores).all()


@pytest.mark.parametrize("case", PLUGIN_CASES)
def test_plugin_models_can_be_built_on_the_cpu_and_moved(make_mmrec, case):
    """``model.to('cuda')`` after building on the CPU moves everything the model uses (graphs are buffers)."""
    model, extra = CASES[case]
    root, name, _ = make_mmrec()
    mode = PretendCuda()
    scores = train_and_score(root, name, model, extra, built_on="cpu", mode=mode)
    assert mode.checked > 100 and torch.isfinite(scores).all()


# -- Ray -------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("visible", [None, "1,2"], ids=["unset", "set"])
def test_a_search_leaves_every_gpu_visible_to_ray(make_mmrec, monkeypatch, visible):
    """The driver resolves the configuration before it starts Ray; RecBole's Config writes gpu_id into
    CUDA_VISIBLE_DEVICES, and Ray counts only visible GPUs - so the driver must leave the variable as it was."""
    from recbole_ssr.config.configurator import Config
    from recbole_ssr.experiments.tune import driver

    root, name, _ = make_mmrec()
    if visible is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    driver._prepare_driver("VBPR", name, [], {"data_path": root, "state": "ERROR"}, [])
    assert os.environ.get("CUDA_VISIBLE_DEVICES") == visible
    Config(model="VBPR", dataset=name, config_dict={"data_path": root, "state": "ERROR"})
    assert os.environ.get("CUDA_VISIBLE_DEVICES") == "0"  # what a plain Config does (a run choosing its GPU)


# -- scripts/gpu_check.py --------------------------------------------------------------------------------------------
GPU_CHECK = os.path.join(REPO_ROOT, "scripts", "gpu_check.py")


def gpu_check_module():
    spec = importlib.util.spec_from_file_location("gpu_check", GPU_CHECK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def script_env():
    return dict(os.environ, PYTHONPATH=REPO_ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))


def test_gpu_check_without_cuda_says_so_and_exits_with_its_own_code(make_mmrec, tmp_path):
    root, name, _ = make_mmrec()
    done = subprocess.run([sys.executable, GPU_CHECK, "--data_path", root, "--dataset", name, "--models", "BPR",
                           "--out", str(tmp_path / "check")], capture_output=True, text=True, env=script_env())
    assert done.returncode == 3, done.stderr
    assert "error: no CUDA device is visible" in done.stderr and "--devices=cpu,cpu" in done.stderr
    assert not os.path.exists(tmp_path / "check.json")  # nothing ran, nothing claims otherwise
    assert gpu_check_module().main(["--data_path", str(tmp_path / "nowhere"), "--devices", "cpu,cpu"]) == 2


def record(**changes):
    run = {"start_sum": 100.0, "losses": [0.7] * 5, "random_scoring": False, "valid_users": 1000,
           "valid": {"recall@20": 0.05, "ndcg@20": 0.02}}
    run.update(changes)
    return run


def test_gpu_check_comparison_rules():
    check = gpu_check_module()
    scores = np.linspace(-1.0, 1.0, 600, dtype=np.float32).reshape(3, 200)

    def verdicts(candidate, cand_scores=scores, reference=None):
        found = check.compare(reference or record(), candidate, scores, cand_scores)
        return {name: ok for name, (ok, _) in found.items()}, check.agrees(found)

    assert verdicts(record()) == ({"start": True, "scores": True, "loss": True, "recall@20": True,
                                   "ndcg@20": True}, True)
    assert verdicts(record(), scores + 5e-5)[0]["scores"] is True  # float32 summation order
    assert verdicts(record(), scores + 1e-3)[0]["scores"] is False  # every score moved: a wrong graph
    flipped = scores.copy()
    flipped[0, 0] += 0.1  # one near-tie flipped in a top-k neighbour selection moves a few scores
    assert verdicts(record(), flipped)[0]["scores"] is True
    assert verdicts(record(start_sum=100.01))[0]["start"] is False  # not the same initial model
    assert verdicts(record(random_scoring=True), scores + 1.0)[0]["scores"] is None  # random scoring: not compared
    # deterministic loss: tight
    assert verdicts(record(losses=[0.70003] * 5))[0]["loss"] is True
    assert verdicts(record(losses=[0.701] * 5))[0]["loss"] is False
    assert verdicts(record(losses=[math.nan] * 5))[0]["loss"] is False
    # random loss: Welch's t of the means
    noisy = [0.70, 0.72, 0.69, 0.71, 0.68]
    assert verdicts(record(losses=[v + 0.005 for v in noisy]), reference=record(losses=noisy))[0]["loss"] is True
    assert verdicts(record(losses=[v + 0.2 for v in noisy]), reference=record(losses=noisy))[0]["loss"] is False
    nearly_fixed = [0.7, 0.7, 0.7, 0.7, 0.7000001]  # random parts too small to spread: float order still allowed
    assert verdicts(record(losses=[v + 3e-5 for v in nearly_fixed]),
                    reference=record(losses=nearly_fixed))[0]["loss"] is True
    # metrics: tight when training draws nothing random, loose when it does
    assert verdicts(record(valid={"recall@20": 0.0505, "ndcg@20": 0.02}))[1] is True
    assert verdicts(record(valid={"recall@20": 0.06, "ndcg@20": 0.02}))[1] is False
    random_training = record(losses=noisy, valid={"recall@20": 0.055, "ndcg@20": 0.021})
    assert verdicts(random_training, reference=record(losses=noisy))[1] is True
    assert verdicts(record(losses=noisy, valid={"recall@20": 0.005, "ndcg@20": 0.002}),
                    reference=record(losses=noisy))[1] is False  # training broken on one device
    assert verdicts(record(valid={"recall@20": math.nan, "ndcg@20": 0.02}))[1] is False
    assert verdicts(record(valid={"recall@20": 0.05}))[0]["ndcg@20"] is False  # a metric missing


def test_gpu_check_cpu_against_cpu_end_to_end(make_mmrec, tmp_path):
    """Two CPU runs of the same seed, each in its own process, agree on every check; the table is written as
    markdown and JSON."""
    root, name, _ = make_mmrec()
    out = tmp_path / "check"
    done = subprocess.run([sys.executable, GPU_CHECK, "--data_path", root, "--dataset", name, "--devices", "cpu,cpu",
                           "--models", "BPR", "--repeats", "2", "--out", str(out)],
                          capture_output=True, text=True, env=script_env(), cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    bpr = json.loads(out.with_suffix(".json").read_text())["models"]["BPR"]
    assert bpr["agree"] is True and all(ok for ok, _ in bpr["checks"].values())
    assert bpr["reference"]["losses"] == bpr["candidate"]["losses"] and bpr["reference"]["train_seconds"] > 0
    assert "| BPR | " in out.with_suffix(".md").read_text()


def test_gpu_check_goes_on_after_a_failed_model_and_exits_1(make_mmrec, tmp_path, monkeypatch, capsys):
    check = gpu_check_module()
    root, name, _ = make_mmrec()

    def fake_run(model, role, device, args, scratch):
        if model == "FREEDOM" and role == "candidate":
            return {"error": "cuda: exit 1: RuntimeError: CUDA error"}
        np.save(os.path.join(scratch, f"{model}-{role}.npy"), np.ones((2, 3), dtype=np.float32))
        return dict(record(), train_seconds=1.0, eval_seconds=0.1, peak_gpu_mb=None)

    monkeypatch.setattr(check, "run_in_subprocess", fake_run)
    out = tmp_path / "check"
    code = check.main(["--data_path", root, "--dataset", name, "--devices", "cpu,cpu", "--models", "FREEDOM,BPR",
                       "--out", str(out)])
    assert code == 1
    models = json.loads(out.with_suffix(".json").read_text())["models"]
    assert models["FREEDOM"] == {"error": "cuda: exit 1: RuntimeError: CUDA error", "agree": False}
    assert models["BPR"]["agree"] is True  # run after the failure
    assert "FREEDOM: DISAGREES" in capsys.readouterr().out
    assert check.main(["--data_path", root, "--dataset", name, "--devices", "cpu,cpu", "--models", "NoSuchModel"]) == 2
    assert "error: --models: unknown model 'NoSuchModel'" in capsys.readouterr().err
