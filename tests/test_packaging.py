"""recbole-ssr as a package: the wheel ships the yaml defaults and a console script, a non-editable install trains
from any directory, and a missing or wrong RecBole is one clear line.

The wheel is built offline from a copy of the sources (the checkout is never written to) and installed into a fresh
virtual environment that reuses this interpreter's installed dependencies through a ``.pth`` file, so nothing is
downloaded. A plain path in a ``.pth`` file is appended to ``sys.path`` but the ``.pth`` files inside that folder are
not processed, so the checkout's editable install (a meta-path finder started by such a file) cannot leak in: the
tests check that the ``recbole_ssr`` they run is the one in the fresh environment.
"""

import json
import os
import shutil
import site
import subprocess
import sys
import sysconfig
import textwrap
import zipfile

import pytest

from conftest import REPO_ROOT, planted_features, tiny_interactions

SOURCES = ("setup.py", "setup.cfg", "pyproject.toml", "README.md", "recbole_ssr", "properties")
FIX = "-m pip install --no-deps recbole==1.2.1"


def _clean_env(**extra):
    """The environment of a subprocess that must not see the checkout (no PYTHONPATH, no user site)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")}
    env.update(PYTHONNOUSERSITE="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", **extra)
    return env


def _run(cmd, cwd, env=None, timeout=300):
    return subprocess.run(cmd, cwd=cwd, env=env or _clean_env(), capture_output=True, text=True, timeout=timeout)


def _shipped_yaml():
    root = os.path.join(REPO_ROOT, "properties")
    return {os.path.relpath(os.path.join(folder, f), root).replace(os.sep, "/")
            for folder, _, files in os.walk(root) for f in files if f.endswith(".yaml")}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """``pip wheel --no-deps --no-build-isolation --no-index`` of a copy of the sources (offline)."""
    pytest.importorskip("setuptools", reason="building the wheel needs setuptools in this environment")
    pytest.importorskip("pip", reason="building the wheel needs pip in this environment")
    base = tmp_path_factory.mktemp("wheel")
    src = base / "src"
    src.mkdir()
    for name in SOURCES:
        path = os.path.join(REPO_ROOT, name)
        if os.path.isdir(path):
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(path, src / name)
    out = base / "dist"
    proc = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                 "--disable-pip-version-check", "-w", str(out), str(src)], cwd=base)
    built = sorted(out.glob("recbole_ssr-*.whl")) if out.exists() else []
    if proc.returncode != 0 or not built:
        pytest.skip("cannot build a wheel offline here: " + (proc.stderr.strip().splitlines() or ["?"])[-1])
    return built[0]


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory):
    """A fresh virtual environment with the wheel installed non-editable; dependencies come from this
    interpreter's site-packages through a .pth file. Returns (python, bin folder, site-packages)."""
    folder = tmp_path_factory.mktemp("venv") / "env"
    proc = _run([sys.executable, "-m", "venv", "--without-pip", str(folder)], cwd=folder.parent)
    if proc.returncode != 0:
        pytest.skip("cannot create a virtual environment: " + proc.stderr.strip()[-200:])
    scripts = folder / ("Scripts" if os.name == "nt" else "bin")
    python = scripts / ("python.exe" if os.name == "nt" else "python")
    purelib = _run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                   cwd=folder).stdout.strip()
    ours = [p for p in site.getsitepackages() + [sysconfig.get_paths()["purelib"]] if os.path.isdir(p)]
    with open(os.path.join(purelib, "_recbole_ssr_test_deps.pth"), "w") as f:
        f.write("\n".join(dict.fromkeys(ours)) + "\n")
    proc = _run([str(python), "-m", "pip", "install", "--no-deps", "--no-index", "--ignore-installed",
                 "--disable-pip-version-check", str(wheel)], cwd=folder)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return python, scripts, purelib


def test_wheel_ships_the_yaml_files_and_the_console_script(wheel):
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        prefix = "recbole_ssr/properties/"
        packaged = {n[len(prefix):] for n in names if n.startswith(prefix) and n.endswith(".yaml")}
        assert packaged == _shipped_yaml()
        assert {"overall.yaml", "model/SSR.yaml", "dataset/ml-100k.yaml", "protocol/mmrec.yaml",
                "search/defaults.yaml", "analysis/defaults.yaml"} <= packaged
        meta = {n.split("/")[-1]: archive.read(n).decode() for n in names if ".dist-info/" in n}
    assert "recbole-ssr = recbole_ssr.cli:main" in meta["entry_points.txt"]
    requires = [line.split(":", 1)[1].strip() for line in meta["METADATA"].splitlines()
                if line.startswith("Requires-Dist:")]
    torch = [r for r in requires if r.startswith("torch")]
    assert torch and "==" not in torch[0], torch  # a range, not a pin
    assert not any(r.split()[0].rstrip("<>=!~;").lower() == "recbole" for r in requires), requires


def test_non_editable_install_trains_from_any_directory(venv, tmp_path):
    python, scripts, purelib = venv
    # The package that runs is the installed one, not the checkout (and not the editable finder of this venv).
    probe = _run([str(python), "-c", textwrap.dedent("""
        import json, sys, recbole_ssr
        from recbole_ssr.core.paths import properties_dir
        print(json.dumps({"file": recbole_ssr.__file__, "properties": properties_dir(),
                          "finders": [type(f).__name__ for f in sys.meta_path],
                          "editable": [m for m in sys.modules if "editable" in m]}))
    """)], cwd=tmp_path)
    assert probe.returncode == 0, probe.stderr
    found = json.loads(probe.stdout.strip().splitlines()[-1])
    installed = os.path.realpath(os.path.join(purelib, "recbole_ssr"))
    assert os.path.realpath(found["file"]).startswith(installed + os.sep)
    assert os.path.realpath(found["properties"]) == os.path.join(installed, "properties")
    assert not found["editable"] and not any("Editable" in f for f in found["finders"]), found

    # Mark the installed copy of VBPR's yaml: the run must read it (and nothing in the checkout).
    model_yaml = os.path.join(installed, "properties", "model", "VBPR.yaml")
    with open(model_yaml) as f:
        text = f.read()
    assert "\nembedding_size: 64\n" in text
    with open(model_yaml, "w") as f:  # changed in place: a second 'embedding_size' line is refused as a duplicate key
        f.write(text.replace("\nembedding_size: 64\n", "\nembedding_size: 24\n"))

    work = tmp_path / "work"
    folder = work / "data" / "tiny"
    folder.mkdir(parents=True)
    tiny_interactions()[["userID", "itemID", "x_label"]].to_csv(folder / "tiny.inter", sep="\t", index=False)
    import numpy as np

    np.save(folder / "image_feat.npy", planted_features(30, 8))
    script = scripts / ("recbole-ssr.exe" if os.name == "nt" else "recbole-ssr")
    assert script.exists()
    proc = _run([str(script), "--model=VBPR", "--dataset=tiny", "--data_path=data", "--epochs=1", "--state=ERROR",
                 "--train_batch_size=64", "--results=r.json"], cwd=work)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "VBPR on tiny" in proc.stdout and "Traceback" not in proc.stderr
    result = json.loads((work / "r.json").read_text())
    assert result["epochs_run"] == 1
    config = result["config"]
    assert config["embedding_size"] == 24  # the installed model yaml
    assert config["eval_protocol"] == "mmrec" and config["stopping_step"] == 20  # installed protocol yaml
    assert config["valid_metric"] == "Recall@20" and config["reg_weight"] == 0.0001  # overall.yaml, model yaml
    assert os.path.realpath(config["cache_dir"]) == os.path.realpath(work / "dataset" / ".cache")

    usage = _run([str(script), "--help"], cwd=work)
    assert usage.returncode == 0 and usage.stdout.startswith("usage: recbole-ssr")


HIDE_RECBOLE = textwrap.dedent("""
    import sys

    class HideRecBole:
        def find_spec(self, name, path=None, target=None):
            if name == "recbole" or name.startswith("recbole."):
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, HideRecBole())
""")


def _with_checkout(code, tmp_path):
    return _run([sys.executable, "-c", code], cwd=tmp_path, env=_clean_env(PYTHONPATH=REPO_ROOT), timeout=120)


def _one_error_line(proc):
    assert proc.returncode not in (0, None) and "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]


def test_missing_recbole_is_one_line_with_the_fix(tmp_path):
    proc = _with_checkout(HIDE_RECBOLE + "from recbole_ssr.cli import main\nsys.exit(main(['--model=BPR']))\n",
                          tmp_path)
    line = _one_error_line(proc)
    assert "RecBole is not installed" in line and line.endswith(FIX) and sys.executable in line

    # As a library: importing the package works; the first module that needs RecBole says the same.
    proc = _with_checkout(HIDE_RECBOLE + textwrap.dedent("""
        import recbole_ssr
        assert recbole_ssr.RECBOLE_PROBLEM
        try:
            from recbole_ssr.config.configurator import Config
        except ImportError as exc:
            print(exc)
    """), tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith(FIX)


def test_wrong_recbole_version_is_one_line_with_the_fix(tmp_path):
    fake = tmp_path / "fake"
    (fake / "recbole").mkdir(parents=True)
    (fake / "recbole" / "__init__.py").write_text("__version__ = '1.1.1'\n")
    (fake / "recbole-1.1.1.dist-info").mkdir()
    (fake / "recbole-1.1.1.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: recbole\nVersion: 1.1.1\n")
    proc = _with_checkout(f"import sys\nsys.path.insert(0, {str(fake)!r})\n"
                          "from recbole_ssr.cli import main\nsys.exit(main([]))\n", tmp_path)
    line = _one_error_line(proc)
    assert "RecBole 1.1.1 is installed" in line and line.endswith(FIX)


def test_documented_search_space_paths_resolve_from_any_directory(tmp_path):
    from recbole_ssr.core.paths import properties_dir, resolve_shipped

    shipped = os.path.join(properties_dir(), "search", "SSR.yaml")
    assert resolve_shipped("properties/search/SSR.yaml") == shipped  # the working directory has no properties/
    (tmp_path / "properties" / "search").mkdir(parents=True)
    (tmp_path / "properties" / "search" / "SSR.yaml").write_text("learning_rate: {grid: [0.1]}\n")
    assert resolve_shipped("properties/search/SSR.yaml") == "properties/search/SSR.yaml"  # the user's own file
    assert resolve_shipped("properties/search/Nope.yaml") == "properties/search/Nope.yaml"
    assert resolve_shipped("my_space.yaml") == "my_space.yaml"
