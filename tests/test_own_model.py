"""Your own model beside the shipped ones (``--model=file.py:Class``, ``--model=package.module:Class``): the example
of examples/ copied to a folder outside the package runs side by side with LightGCN, is searched with its own space,
its own keys are checked like a shipped model's, every bad input is one ``error:`` line, and a bug in its code shows
its traceback."""

import glob
import json
import os
import shutil
import sys

import pytest
import yaml

from conftest import QUICK, REPO_ROOT
from recbole_ssr.cli import main
from recbole_ssr.model import registry

EXAMPLES = os.path.join(REPO_ROOT, "examples")
QUICK_ARGS = [f"--{k}={v}" for k, v in QUICK.items()]


@pytest.fixture
def own_model(tmp_path):
    """The example model, its defaults and its search space copied to ``<tmp>/elsewhere/`` (outside the package);
    returns that folder."""
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    for name in ("mean_fusion.py", "MeanFusion.yaml", "MeanFusion.search.yaml"):
        shutil.copy(os.path.join(EXAMPLES, name), folder / name)
    return folder


def one_error_line(capfd):
    err = capfd.readouterr().err.strip()
    assert "Traceback" not in err
    return err.splitlines()[-1]


def write_model(folder, name, body):
    path = folder / name
    path.write_text("import torch\nfrom recbole_ssr import MultimodalRecommender\n\n" + body)
    return path


def test_example_runs_side_by_side_with_lightgcn_and_the_merge_names_its_class(make_mmrec, own_model, tmp_path):
    root, name, _ = make_mmrec()
    code = main(["--model=elsewhere/mean_fusion.py:MeanFusion,LightGCN", "--seeds=2", f"--dataset={name}",
                 f"--data_path={root}", *QUICK_ARGS, "--epochs=2", "--results=out/bench.json"])
    assert code == 0
    result = json.loads((tmp_path / "out" / "bench.json").read_text())
    source = f"{own_model / 'mean_fusion.py'}:MeanFusion"  # the relative path, stored absolute
    assert result["models"] == ["MeanFusion", "LightGCN"] and result["written_by"]["models"] == ["LightGCN",
                                                                                                   "MeanFusion"]
    runs = result["runs"]
    assert sorted((r["model"], r["seed"], r["status"]) for r in runs) == [
        ("LightGCN", 999, "ok"), ("LightGCN", 1000, "ok"), ("MeanFusion", 999, "ok"), ("MeanFusion", 1000, "ok")]
    mine = [r for r in runs if r["model"] == "MeanFusion"]
    assert all(r["model_source"] == source and r["config"]["model_source"] == source for r in mine)
    assert all(r["config"]["fusion_weight"] == 0.5 and r["config"]["embedding_size"] == 64 for r in mine)  # its yaml
    assert all(r["model_source"] is None for r in runs if r["model"] == "LightGCN")
    assert mine[0]["test_result"] != mine[1]["test_result"]  # two seeds, two runs
    assert any(line.startswith("| MeanFusion | 0.") for line in result["table"].splitlines())

    # runs made elsewhere merge by class name (the file need not exist where the table is made)
    from recbole_ssr.experiments.side_by_side import main as merge_main

    shutil.move(own_model, tmp_path / "moved")
    assert merge_main([str(tmp_path / "out" / "bench.runs.jsonl"), "--results=out/merged.json"]) == 0
    merged = json.loads((tmp_path / "out" / "merged.json").read_text())
    assert merged["summary"] == result["summary"] and merged["models"] == ["MeanFusion", "LightGCN"]


def test_example_is_searched_with_its_own_space(local_ray, make_mmrec, own_model, tmp_path):
    root, name, _ = make_mmrec()
    # fifo: both trials run to their end (ASHA could stop one before it writes its outcome.json)
    code = main([f"--model={own_model / 'mean_fusion.py'}:MeanFusion", "--tune=auto", "--num_samples=2",
                 "--scheduler=fifo", f"--dataset={name}", f"--data_path={root}", *QUICK_ARGS,
                 "--results=out/t.json"])
    assert code == 0
    result = json.loads((tmp_path / "out" / "t.json").read_text())
    search = result["searches"]["MeanFusion"]
    assert search["space_file"] == str(own_model / "MeanFusion.search.yaml") and search["n_trials"] == 2
    assert os.path.basename(search["output_dir"]).startswith(f"MeanFusion-{name}-")
    space = yaml.safe_load((own_model / "MeanFusion.search.yaml").read_text())
    trials = [json.load(open(p)) for p in glob.glob(os.path.join(search["output_dir"], "trials", "*",
                                                                 "outcome.json"))]
    assert len(trials) == 2 and all(t["model"] == "MeanFusion" for t in trials)
    assert all(t["config"]["fusion_weight"] in space["fusion_weight"]["grid"] for t in trials)
    chosen = search["best"]["params"]
    assert set(chosen) == set(space)
    run = result["runs"][0]
    assert run["model"] == "MeanFusion" and run["status"] == "ok"
    assert run["config"]["fusion_weight"] == chosen["fusion_weight"]
    assert os.path.isfile(os.path.join(result["benchmark_dir"], "MeanFusion.best.yaml"))
    # the table rebuilt from the benchmark folder names the class too
    from recbole_ssr.experiments.tune.tuned_benchmark import main as report_main

    assert report_main([result["benchmark_dir"], "--results=out/again.json"]) == 0
    assert json.loads((tmp_path / "out" / "again.json").read_text())["table"] == result["table"]


def test_groups_analysis_in_process_names_the_class(make_mmrec, own_model, tmp_path):
    root, name, _ = make_mmrec()
    code = main(["--analysis=groups", "--model=elsewhere/mean_fusion.py:MeanFusion,BPR", "--analysis_isolated=False",
                 f"--dataset={name}", f"--data_path={root}", *QUICK_ARGS, "--results=out/groups.json"])
    assert code == 0
    result = json.loads((tmp_path / "out" / "groups.json").read_text())
    assert [r["model"] for r in result["runs"]] == ["MeanFusion", "BPR"]
    assert all(r["status"] == "ok" for r in result["runs"])
    assert {row["model"] for row in result["summary"]} == {"MeanFusion", "BPR"}
    assert result["written_by"]["models"] == ["BPR", "MeanFusion"]


def test_its_own_keys_are_checked_like_a_shipped_models(make_mmrec, own_model, tmp_path, capfd):
    root, name, _ = make_mmrec()
    base = [f"--dataset={name}", f"--data_path={root}", *QUICK_ARGS]
    spec = "--model=elsewhere/mean_fusion.py:MeanFusion"
    assert main([spec, "--fusion_wieght=0.3", *base]) == 2
    line = one_error_line(capfd)
    assert "unknown configuration key 'fusion_wieght'" in line and "did you mean 'fusion_weight'?" in line
    assert main([spec, "--fusion_weight=2", *base]) == 2  # its config_ranges
    assert "fusion_weight=2 (from the command line) is out of range" in one_error_line(capfd)
    assert main(["--model=BPR", "--fusion_weight=0.3", *base]) == 2  # its keys are its own, not every model's
    assert "unknown configuration key 'fusion_weight'" in one_error_line(capfd)
    # a misspelt key in a search space of it
    (tmp_path / "typo.yaml").write_text("fusion_wieght: {grid: [0.1, 0.9]}\n")
    assert main([spec, "--tune=typo.yaml", *base]) == 2
    assert "'fusion_wieght' (from the search space); did you mean 'fusion_weight'?" in one_error_line(capfd)
    # with several models, its key on the command line is accepted by the others (as a shipped model's key is)
    from recbole_ssr.config.validation import declare_model_keys

    both = [f"{own_model / 'mean_fusion.py'}:MeanFusion", "BPR"]
    assert declare_model_keys(both, {"fusion_weight": 0.3}) == {"fusion_weight": 0.3, "extra_keys": ["fusion_weight"]}
    assert declare_model_keys(both[:1], {"fusion_weight": 0.3}) == {"fusion_weight": 0.3}


def test_tune_auto_without_a_search_space_beside_the_file_stops_at_once(make_mmrec, own_model, tmp_path, capfd):
    root, name, _ = make_mmrec()
    os.remove(own_model / "MeanFusion.search.yaml")
    code = main(["--model=elsewhere/mean_fusion.py:MeanFusion,LightGCN", "--tune=auto", f"--dataset={name}",
                 f"--data_path={root}", *QUICK_ARGS])
    assert code == 2
    line = one_error_line(capfd)
    assert line.startswith("error: --tune=auto: no search space for MeanFusion: write "
                           f"{own_model / 'MeanFusion.search.yaml'}")
    assert not os.path.exists(tmp_path / "tune_results")  # nothing ran


def test_bad_model_files_are_one_error_line_naming_the_file(make_mmrec, tmp_path, capfd):
    root, name, _ = make_mmrec()
    folder = tmp_path / "models"
    folder.mkdir()
    write_model(folder, "two.py", "class Helper:\n    pass\n\n\nclass Mine(MultimodalRecommender):\n    pass\n")
    write_model(folder, "plain.py", "class NotRec(torch.nn.Module):\n    pass\n")
    write_model(folder, "broken.py", "x = 1\n\n\ndef f(:\n    pass\n")
    write_model(folder, "imports.py", "import no_such_package_zz\n")
    write_model(folder, "raises.py", "\n\nraise RuntimeError('cannot start')\n")
    path = str(folder)
    cases = [
        ("models/missing.py:Mine", f"model file {path}/missing.py does not exist"),
        ("nosuchpkg_zz.models:Mine", "no module named 'nosuchpkg_zz'"),
        ("models/two.py:Other", f"model file {path}/two.py has no class 'Other'; it defines Helper, Mine"),
        ("models/two.py:Helper", "is not a RecBole general recommender (the class does not derive from "
                                 "GeneralRecommender)"),
        ("models/plain.py:NotRec", "is not a RecBole general recommender"),
        ("models/two.py:torch", "(it is a module, not a class)"),
        ("models/broken.py:Mine", f"model file {path}/broken.py cannot be imported: line 7: SyntaxError"),
        ("models/imports.py:Mine", f"model file {path}/imports.py cannot be imported: line 4: ModuleNotFoundError: "
                                   "No module named 'no_such_package_zz'"),
        ("models/raises.py:Mine", f"model file {path}/raises.py cannot be imported: line 6: RuntimeError: "
                                  "cannot start"),
        ("models/two.py:", "expected path/to/file.py:ClassName or package.module:ClassName"),
    ]
    for spec, needle in cases:
        assert main([f"--model={spec}", f"--dataset={name}", f"--data_path={root}", *QUICK_ARGS]) == 2, spec
        line = one_error_line(capfd)
        assert line.startswith("error: --model=") and needle in line, (spec, line)
    # the same in a side-by-side command, before any run
    assert main(["--model=BPR,models/missing.py:Mine", "--seeds=2", f"--dataset={name}", f"--data_path={root}",
                 *QUICK_ARGS, "--results=out/b.json"]) == 2
    assert f"model file {path}/missing.py does not exist" in one_error_line(capfd)
    assert not os.path.exists(tmp_path / "out" / "b.runs.jsonl")
    # two models of one class name cannot share a table
    assert main(["--model=models/two.py:Mine,elsewhere/two.py:Mine", f"--dataset={name}"]) == 2
    assert "names Mine more than once" in one_error_line(capfd)


BUGGY = '''
class Buggy(MultimodalRecommender):
    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.user_embedding = torch.nn.Embedding(self.n_users, 4)
        self.item_embedding = torch.nn.Embedding(self.n_items, 4)

    def forward(self):
        return self.user_embedding.weight, self.item_embedding.weight

    def calculate_loss(self, interaction):
        return {}["the user's own bug"]
'''
BUGGY_LINE = 15  # the calculate_loss line above, in the written file (2 import lines + a blank line first)


def test_a_bug_in_the_models_own_code_shows_its_traceback(make_mmrec, tmp_path, capfd):
    root, name, _ = make_mmrec()
    path = write_model(tmp_path, "buggy.py", BUGGY)
    assert open(path).read().splitlines()[BUGGY_LINE - 1].strip().startswith("return")
    args = [f"--dataset={name}", f"--data_path={root}", *QUICK_ARGS]
    # one run: the exception itself leaves the command, so Python prints its traceback
    with pytest.raises(KeyError) as raised:
        main(["--model=buggy.py:Buggy", *args])
    assert (str(raised.traceback[-1].path), raised.traceback[-1].lineno + 1) == (str(path), BUGGY_LINE)

    # side by side: the run fails, the others go on, the traceback is printed and kept in the runs log
    capfd.readouterr()
    assert main(["--model=buggy.py:Buggy,BPR", *args, "--results=out/b.json"]) == 0
    err = capfd.readouterr().err
    where = f'File "{path}", line {BUGGY_LINE}, in calculate_loss'
    assert where in err and "KeyError" in err
    runs = [json.loads(line) for line in open(tmp_path / "out" / "b.runs.jsonl")]
    failed = next(r for r in runs if r["model"] == "Buggy")
    assert failed["status"] == "failed" and where in failed["traceback"]
    assert failed["model_source"] == f"{path}:Buggy" and failed["dataset"] == name
    assert next(r for r in runs if r["model"] == "BPR")["status"] == "ok"

    # an OSError of its own (a file it opens) is its bug too: not turned into a one-line message
    opens = write_model(tmp_path, "opens.py", BUGGY.replace("class Buggy", "class Opens").replace(
        "super().__init__(config, dataset)", "super().__init__(config, dataset)\n        open('/no/such/file.npy')"))
    with pytest.raises(FileNotFoundError) as raised:
        main([f"--model={opens}:Opens", *args])
    assert str(raised.traceback[-1].path) == str(opens)


def test_package_module_form_and_checkpoints_that_load_in_a_fresh_process(make_mmrec, tmp_path, monkeypatch):
    root, name, _ = make_mmrec()
    package = tmp_path / "mymodels"
    package.mkdir()
    (package / "__init__.py").write_text("")
    shutil.copy(os.path.join(EXAMPLES, "mean_fusion.py"), package / "fusion.py")
    (package / "MeanFusion.yaml").write_text("embedding_size: 8\nfusion_weight: 0.25\nreg_weight: 0.0\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert main(["--model=mymodels.fusion:MeanFusion", f"--dataset={name}", f"--data_path={root}", *QUICK_ARGS,
                 "--results=r.json"]) == 0
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["model"] == "MeanFusion" and result["model_source"] == "mymodels.fusion:MeanFusion"
    assert result["config"]["fusion_weight"] == 0.25 and result["config"]["embedding_size"] == 8  # yaml beside it
    assert registry.get_model("mymodels.fusion:MeanFusion").__module__ == "mymodels.fusion"

    # a model file's checkpoint loads in a fresh process that never resolved the model (load_data_and_model), and
    # with the file gone, building the model names the missing file
    for file in ("mean_fusion.py", "MeanFusion.yaml"):
        shutil.copy(os.path.join(EXAMPLES, file), tmp_path / file)
    assert main([f"--model={tmp_path / 'mean_fusion.py'}:MeanFusion", f"--dataset={name}", f"--data_path={root}",
                 *QUICK_ARGS, "--results=f.json"]) == 0
    checkpoint = json.loads((tmp_path / "f.json").read_text())["checkpoint"]
    script = ("import sys; from recbole_ssr import load_data_and_model; "
              "config, model, *_ = load_data_and_model(sys.argv[1]); "
              "print(config['model'], type(model).__module__, type(model).__name__, model.fusion_weight)")
    import subprocess

    def load_elsewhere():
        return subprocess.run([sys.executable, "-c", script, checkpoint], capture_output=True, text=True,
                              env=dict(os.environ, PYTHONPATH=REPO_ROOT), timeout=300)

    out = load_elsewhere()
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["MeanFusion", registry.file_module_name(str(tmp_path / "mean_fusion.py")),
                                  "MeanFusion", "0.5"]
    os.rename(tmp_path / "mean_fusion.py", tmp_path / "renamed.py")
    out = load_elsewhere()
    assert out.returncode != 0 and f"model file {tmp_path / 'mean_fusion.py'} does not exist" in out.stderr


def test_spec_helpers():
    assert registry.canonical_model("SSR") == "SSR"
    assert registry.canonical_model("pkg.mod:Cls") == "pkg.mod:Cls"
    assert registry.canonical_model("a/b.py:Cls") == os.path.abspath("a/b.py") + ":Cls"
    assert [registry.model_name(m) for m in ("SSR", "/x/b.py:Cls", "pkg.mod:Cls")] == ["SSR", "Cls", "Cls"]
    one, other = registry.file_module_name("/x/a.py"), registry.file_module_name("/y/a.py")
    assert one != other and one == registry.file_module_name("/x/../x/a.py") and one.isidentifier()
    assert registry.model_source(registry.get_model("SSR")) is None
    assert registry.model_source(registry.get_model("LightGCN")) is None
