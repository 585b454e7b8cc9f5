"""The Python API under RecBole's names, and the one way to load a trained run (training/build.py)."""

import subprocess
import sys

import pytest
import torch

from conftest import QUICK, REPO_ROOT
from recbole_ssr.core.errors import ConfigError
from recbole_ssr.training.trainer import get_trainer


def evaluate_loaded(config, model, test_data):
    trainer = get_trainer(config["MODEL_TYPE"], type(model))(config, model)
    return {k: float(v) for k, v in trainer.evaluate(test_data, load_best_model=False).items()}


@pytest.mark.parametrize("model", ["SSR", "LightGCN"])
def test_run_then_load_data_and_model_repeats_the_runs_test_metrics(make_mmrec, model):
    from recbole_ssr import load_data_and_model, run_recbole_ssr

    root, name, _ = make_mmrec()
    result = run_recbole_ssr(model=model, dataset=name, config_dict=dict(QUICK, data_path=root, epochs=2))
    config, loaded, dataset, train_data, valid_data, test_data = load_data_and_model(result["checkpoint"])
    assert type(loaded).__name__ == model and not loaded.training and config["model"] == model
    parts = (train_data, valid_data, test_data)
    assert dataset.inter_num == sum(part.dataset.inter_num for part in parts)
    assert evaluate_loaded(config, loaded, test_data) == pytest.approx(result["test_result"], abs=1e-9)


def test_a_model_class_is_accepted_like_a_name(make_mmrec):
    from recbole.model.general_recommender import BPR

    from recbole_ssr import run_recbole_ssr

    root, name, _ = make_mmrec()
    result = run_recbole_ssr(model=BPR, dataset=name, config_dict=dict(QUICK, data_path=root), saved=False)
    assert result["model"] == "BPR" and result["checkpoint"] is None and set(result["test_result"])


def test_checkpoints_written_before_the_layer_folders_still_load(make_mmrec, monkeypatch, tmp_path):
    """A checkpoint pickles RecBole's Config by its module path; the old path (recbole_ssr.config.Config, before
    config/ became a folder) must load through the map of moved modules."""
    import recbole_ssr.config as config_package
    from recbole_ssr import load_data_and_model, run_recbole_ssr
    from recbole_ssr.config.configurator import Config

    root, name, _ = make_mmrec()
    result = run_recbole_ssr(model="BPR", dataset=name, config_dict=dict(QUICK, data_path=root))
    saved = torch.load(result["checkpoint"], weights_only=False)
    old = tmp_path / "old.pth"
    with monkeypatch.context() as patch:  # pickle the Config as the old module path names it
        patch.setattr(Config, "__module__", "recbole_ssr.config")
        patch.setattr(config_package, "Config", Config, raising=False)
        torch.save(saved, old)
    with pytest.raises(AttributeError):  # plain torch.load cannot find the old path any more
        torch.load(old, weights_only=False)
    config, loaded, *_, test_data = load_data_and_model(str(old))
    assert type(config) is Config and evaluate_loaded(config, loaded, test_data) == pytest.approx(
        result["test_result"], abs=1e-9)


def test_load_refuses_changed_data_and_foreign_files(make_mmrec, tmp_path):
    from recbole_ssr import load_data_and_model, run_recbole_ssr

    root, name, _ = make_mmrec()
    result = run_recbole_ssr(model="BPR", dataset=name, config_dict=dict(QUICK, data_path=root))
    make_mmrec(seed=5)  # the same folder, other interactions
    with pytest.raises(ConfigError, match="trained on another version of dataset 'tiny'"):
        load_data_and_model(result["checkpoint"])
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="junk.pth: not a checkpoint written by a recbole-ssr run"):
        load_data_and_model(str(junk))
    with pytest.raises(ConfigError, match="no such file"):
        load_data_and_model(str(tmp_path / "missing.pth"))


def test_importing_the_package_stays_light():
    code = ("import sys, recbole_ssr; assert 'torch' not in sys.modules and 'recbole' not in sys.modules; "
            "assert callable(recbole_ssr.load_data_and_model) and 'torch' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO_ROOT)
