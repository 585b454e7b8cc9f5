"""The one place a model name becomes a model class.

* A name: the plugin's own models first (``recbole_ssr/model/<name>.py`` holds class ``<Name>``, RecBole's
  convention: ``freedom.py`` <-> ``FREEDOM``), then RecBole's (the RecBole-GNN pattern).
* ``path/to/file.py:ClassName``: your own model in a file anywhere (a relative path is taken from the current
  directory; :func:`canonical_model` makes it absolute before anything runs, and that absolute spec is what separate
  processes and Ray workers receive and resolve again). The file is imported once per process under a stable module
  name derived from its absolute path (:func:`file_module_name`) and registered in ``sys.modules``, so objects
  pickled in one process (a checkpoint's configuration) load in another.
* ``package.module:ClassName``: your own model in an importable package.

Your class is a RecBole general recommender: a subclass of :class:`recbole_ssr.model.abstract.MultimodalRecommender`
(it receives the dataset's modality features) or of RecBole's ``GeneralRecommender`` (ID-only). Its defaults are
``ClassName.yaml`` beside its file and its search space ``ClassName.search.yaml`` (:func:`beside_model`). Results
show the class name (:func:`model_name`) and record the spec (:func:`model_source`).

Imports nothing of the package but :mod:`recbole_ssr.core.errors` (and, when asked, the model files); RecBole only
when a model is resolved, so the command line can canonicalise ``--model`` cheaply."""

import hashlib
import importlib
import importlib.util
import os
import pkgutil
import re
import sys

from recbole_ssr.core.errors import ConfigError

PLUGIN_MODEL_PACKAGE = "recbole_ssr.model"


def plugin_model_names():
    """Model classes shipped by the plugin: file ``freedom.py`` <-> class ``FREEDOM``."""
    import recbole_ssr.model as package
    from recbole.model.abstract_recommender import AbstractRecommender

    names = []
    for info in pkgutil.iter_modules(package.__path__):
        module = importlib.import_module(f"{PLUGIN_MODEL_PACKAGE}.{info.name}")
        for attr in dir(module):
            obj = getattr(module, attr)
            if (isinstance(obj, type) and issubclass(obj, AbstractRecommender) and attr.lower() == info.name
                    and obj.__module__ == module.__name__):
                names.append(attr)
    return sorted(names)


def recbole_general_model_names():
    import recbole.model.general_recommender as package

    return sorted(
        attr for info in pkgutil.iter_modules(package.__path__)
        for attr in dir(importlib.import_module(f"recbole.model.general_recommender.{info.name}"))
        if attr.lower() == info.name
    )


def get_model(name):
    """The model class called ``name``: ours (``recbole_ssr.model.<name lower>``) first, then RecBole's; or the
    class of a spec ``file.py:Class`` / ``package.module:Class`` (module docstring). A class is returned as it is."""
    if not isinstance(name, str):
        return name
    if is_model_spec(name):
        return _spec_class(name)
    module_path = f"{PLUGIN_MODEL_PACKAGE}.{name.lower()}"
    if importlib.util.find_spec(module_path) is not None:
        module = importlib.import_module(module_path)
        candidate = getattr(module, name, None)
        if isinstance(candidate, type):
            return candidate
    from recbole.utils import get_model as recbole_get_model

    try:
        return recbole_get_model(name)
    except (ValueError, ModuleNotFoundError, AttributeError):
        raise ConfigError(
            f"unknown model '{name}'. Multimodal models: {', '.join(plugin_model_names())}. "
            f"RecBole general models: {', '.join(recbole_general_model_names())} (plus RecBole's other model types)."
        ) from None


def is_plugin_model(model_class):
    return model_class.__module__.startswith(PLUGIN_MODEL_PACKAGE)


# ---------------------------------------------------------------------------------------------------------------
# your own models: file.py:Class and package.module:Class
# ---------------------------------------------------------------------------------------------------------------
#: prefix of the module names under which model files are imported (:func:`file_module_name`)
FILE_MODULE_PREFIX = "recbole_ssr_model_file_"
#: the classes resolved from specs in this process, and their source files (:func:`raised_in_model_code`)
_SPEC_CLASSES = {}
_SPEC_FILES = set()
_DOTTED = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


def is_model_spec(text):
    """``file.py:Class`` or ``package.module:Class`` (anything with a colon), rather than a model name."""
    return isinstance(text, str) and ":" in text


def split_spec(spec):
    """``(where, class name, is_file)`` of a spec: ``where`` is the file path or the dotted module."""
    where, _, class_name = spec.strip().rpartition(":")
    is_file = where.endswith(".py") or "/" in where or os.sep in where or not _DOTTED.match(where)
    if not where or not class_name.isidentifier():
        raise ConfigError(f"--model={spec}: expected path/to/file.py:ClassName or package.module:ClassName (the "
                          "class name after the last colon).")
    return where, class_name, is_file


def canonical_model(text):
    """A ``--model`` entry as every process resolves it: a name unchanged, ``file.py:Class`` with the file's
    absolute path (relative paths are taken from the current directory), ``package.module:Class`` unchanged."""
    if not is_model_spec(text):
        return text.strip() if isinstance(text, str) else text
    where, class_name, is_file = split_spec(text)
    if is_file:
        where = os.path.abspath(os.path.expanduser(where))
    return f"{where}:{class_name}"


def model_name(model):
    """What tables and results call a model: the class name of a spec or class, a name unchanged."""
    if isinstance(model, type):
        return model.__name__
    if is_model_spec(model):
        return split_spec(model)[1]
    return model


def file_module_name(path):
    """The module name a model file is imported under: stable for its absolute path, unique among files."""
    path = os.path.abspath(path)
    stem = re.sub(r"\W", "_", os.path.splitext(os.path.basename(path))[0])
    return f"{FILE_MODULE_PREFIX}{stem}_{hashlib.sha1(path.encode('utf-8')).hexdigest()[:12]}"


def model_source(model_class):
    """The spec that resolves ``model_class`` again in another process (``/abs/file.py:Class`` or
    ``package.module:Class``); None for the plugin's and RecBole's models (their name is enough) and for classes that
    no other process can import (defined in ``__main__`` or a notebook)."""
    module = getattr(model_class, "__module__", "") or ""
    if module.startswith((PLUGIN_MODEL_PACKAGE + ".", "recbole.")) or module == "__main__":
        return None
    if module.startswith(FILE_MODULE_PREFIX):
        return f"{os.path.abspath(sys.modules[module].__file__)}:{model_class.__name__}"
    return f"{module}:{model_class.__name__}" if "<" not in model_class.__qualname__ else None


def beside_model(model_class, suffix):
    """``<folder of your model's file>/<ClassName><suffix>`` (``.yaml``: its defaults, ``.search.yaml``: its search
    space), None for the plugin's and RecBole's models (theirs live in ``properties/``) and classes without a file."""
    if model_source(model_class) is None:
        return None
    path = getattr(sys.modules.get(model_class.__module__), "__file__", None)
    return os.path.join(os.path.dirname(os.path.abspath(path)), model_class.__name__ + suffix) if path else None


def _spec_class(spec):
    where, class_name, is_file = split_spec(spec)
    module = _import_file(where, spec) if is_file else _import_module(where, spec)
    candidate = getattr(module, class_name, None)
    what = f"model file {module.__file__}" if is_file else f"module {where}"
    if candidate is None:
        classes = sorted(name for name, obj in vars(module).items()
                         if isinstance(obj, type) and obj.__module__ == module.__name__)
        found = (f"it defines {', '.join(classes)}; name one of them after the colon" if classes
                 else "it defines no class")
        raise ConfigError(f"--model={spec}: {what} has no class '{class_name}'; {found}.")
    check_recommender(candidate, f"--model={spec}: {class_name} in {what}")
    source = sys.modules.get(candidate.__module__)
    if getattr(source, "__file__", None):
        _SPEC_FILES.add(os.path.abspath(source.__file__))
    _SPEC_CLASSES[spec] = candidate
    return candidate


def resolved_spec_classes():
    """The classes of your own models resolved in this process so far (``file.py:Class``, ``package.module:Class``)."""
    return list(_SPEC_CLASSES.values())


def check_recommender(candidate, what):
    """A :class:`ConfigError` unless ``candidate`` is a RecBole general recommender class."""
    from recbole.model.abstract_recommender import GeneralRecommender

    if not (isinstance(candidate, type) and issubclass(candidate, GeneralRecommender)):
        why = (f"it is a {type(candidate).__name__}, not a class" if not isinstance(candidate, type)
               else "the class does not derive from GeneralRecommender")
        raise ConfigError(f"{what} is not a RecBole general recommender ({why}): subclass "
                          "recbole_ssr.MultimodalRecommender (it receives the dataset's modality features) or "
                          "recbole.model.abstract_recommender.GeneralRecommender (ID-only); see examples/.")


def _import_file(path, spec):
    path = os.path.abspath(path)
    name = file_module_name(path)
    if name in sys.modules:
        return sys.modules[name]
    if os.path.isdir(path) or not os.path.isfile(path):
        state = "is a folder" if os.path.isdir(path) else "does not exist"
        raise ConfigError(f"--model={spec}: model file {path} {state}. Give the path of your model's .py file "
                          "(relative to the current directory, or absolute) and its class: --model=path/to/file.py:"
                          "ClassName.")
    loader_spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(loader_spec)
    sys.modules[name] = module
    try:
        loader_spec.loader.exec_module(module)
    except Exception as exc:  # the file's own error, reported with its line
        del sys.modules[name]
        raise ConfigError(f"--model={spec}: model file {path} cannot be imported: {_where_raised(exc, path)}"
                          f"{type(exc).__name__}: {exc}. Fix the file (python {path} shows the full traceback).") \
            from None
    return module


def _import_module(dotted, spec):
    try:
        return importlib.import_module(dotted)
    except ModuleNotFoundError as exc:
        if exc.name and dotted.startswith(exc.name):
            raise ConfigError(f"--model={spec}: no module named '{exc.name}' (modules are found on PYTHONPATH and "
                              "among the installed packages). Install it or add its folder to PYTHONPATH, or pass "
                              "the file: --model=path/to/file.py:ClassName.") from None
        raise ConfigError(f"--model={spec}: module {dotted} cannot be imported: {_where_raised(exc)}"
                          f"{type(exc).__name__}: {exc}.") from None
    except Exception as exc:
        raise ConfigError(f"--model={spec}: module {dotted} cannot be imported: {_where_raised(exc)}"
                          f"{type(exc).__name__}: {exc}.") from None


def _where_raised(exc, path=None):
    """``line N: `` where ``exc`` was raised in ``path`` (the innermost frame of its traceback in that file; a
    SyntaxError: its own line), ``file F, line N: `` when it is elsewhere; empty when unknown."""
    if isinstance(exc, SyntaxError) and exc.lineno:
        located = [(exc.filename or "", exc.lineno)]
    else:
        located, tb = [], exc.__traceback__
        while tb is not None:
            located.append((tb.tb_frame.f_code.co_filename, tb.tb_lineno))
            tb = tb.tb_next
    mine = [line for file, line in located if path and os.path.abspath(file) == path]
    if mine:
        return f"line {mine[-1]}: "
    return f"file {located[-1][0]}, line {located[-1][1]}: " if located else ""


def raised_in_model_code(exc):
    """Whether ``exc`` passed through the code of a model given as a spec (``file.py:Class``,
    ``package.module:Class``): the user's own bug, whose traceback they need rather than a one-line message."""
    tb = exc.__traceback__
    while tb is not None:
        if os.path.abspath(tb.tb_frame.f_code.co_filename) in _SPEC_FILES:
            return True
        tb = tb.tb_next
    return False
