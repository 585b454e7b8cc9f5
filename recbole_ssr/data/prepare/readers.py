"""Readers for the raw inputs of ``python -m recbole_ssr.data.prepare``.

* interactions: CSV (``.csv``), TSV (``.tsv``, ``.tab``, ``.txt``, RecBole's ``.inter``) or JSON lines (``.json``,
  ``.jsonl``, ``.ndjson``; a ``.json`` holding one JSON array also works), each optionally gzipped (``.gz``).
  Columns are matched case-insensitively against :data:`INTERACTION_COLUMNS`; a RecBole type suffix
  (``user_id:token``) is ignored. A CSV/TSV without a header whose rows are ``user,item,rating,timestamp`` (the
  Amazon "ratings only" files) is recognised by its numeric third and fourth fields.
* item metadata: the same formats, columns from :data:`ITEM_ID_COLUMNS` and :data:`TEXT_COLUMNS`; every text
  column is optional. Amazon 2014 metadata lines are Python dict literals rather than JSON: they are read with
  ``ast.literal_eval`` (never ``eval``).
* images: a folder of files named ``<raw item id><ext>`` with ``ext`` in :data:`IMAGE_EXTENSIONS`.

Raw ids are always kept as strings (``"0000031852"`` keeps its leading zeros), so the three inputs match on the
exact id text.
"""

import ast
import gzip
import html
import json
import math
import os
import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from recbole_ssr.data.prepare.errors import PrepareError

INTERACTION_COLUMNS = {
    "user": ("user_id", "userid", "reviewerid", "user", "uid", "customer_id", "customerid"),
    "item": ("item_id", "itemid", "parent_asin", "asin", "item", "iid", "product_id", "productid", "movie_id",
             "movieid"),
    "rating": ("rating", "overall", "score", "stars"),
    "timestamp": ("timestamp", "unixreviewtime", "time", "ts", "datetime", "date", "reviewtime"),
}
ITEM_ID_COLUMNS = INTERACTION_COLUMNS["item"]
# Text fields in the order they are concatenated (MMRec's order: title, brand, categories, description).
TEXT_COLUMNS = {
    "title": ("title", "name", "movie_title", "product_title", "item_name"),
    "brand": ("brand", "manufacturer", "store"),
    "categories": ("categories", "category", "genres", "genre", "class", "main_category"),
    "description": ("description", "desc", "overview"),
}
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif")
_AMAZON_NAMES = {"user": "reviewerID", "item": "asin", "rating": "overall", "timestamp": "unixReviewTime"}
_TSV_EXTENSIONS = (".tsv", ".tab", ".txt", ".inter", ".item")
_JSON_EXTENSIONS = (".json", ".jsonl", ".ndjson")


# ----------------------------------------------------------------------------------------------- file formats

def _file_format(path):
    """``'csv'``, ``'tsv'`` or ``'json'`` from the file name (a trailing ``.gz`` is looked through)."""
    name = os.path.basename(path).lower()
    if name.endswith(".gz"):
        name = name[:-3]
    ext = os.path.splitext(name)[1]
    if ext == ".csv":
        return "csv"
    if ext in _TSV_EXTENSIONS:
        return "tsv"
    if ext in _JSON_EXTENSIONS:
        return "json"
    raise PrepareError(
        f"{path}: unknown file type '{ext or '(no extension)'}'. Use .csv (comma-separated), .tsv/.inter/.item "
        "(tab-separated) or .json/.jsonl (JSON lines, as in the Amazon review dumps), optionally gzipped (.gz); "
        "rename the file so its extension says which."
    )


def _check_file(path, what):
    if not os.path.exists(path):
        raise PrepareError(f"{what} file {path} does not exist: check the path (relative paths are taken from "
                           f"the current directory, {os.getcwd()}).")
    if not os.path.isfile(path):
        raise PrepareError(f"{what} path {path} is not a file: pass the file itself, not a folder.")


def _clean_header(name):
    """``'user_id:token'`` -> ``'user_id'`` (RecBole atomic headers), stripped."""
    return str(name).split(":", 1)[0].strip()


def _read_table(path, sep, header="infer", names=None):
    kwargs = dict(sep=sep, dtype=str, keep_default_na=False, na_values=[""], compression="infer",
                  header=header, names=names, skipinitialspace=False)
    try:
        try:
            return pd.read_csv(path, encoding="utf-8-sig", **kwargs)
        except UnicodeDecodeError:
            return pd.read_csv(path, encoding="latin-1", **kwargs)
    except pd.errors.EmptyDataError:
        raise PrepareError(f"{path}: the file is empty; it needs a header line and at least one data row.") from None
    except (pd.errors.ParserError, ValueError, OSError, EOFError) as exc:
        kind = "comma" if sep == "," else "tab"
        raise PrepareError(f"{path}: cannot be read as a {kind}-separated file ({exc}). Check the separator "
                           "matches the extension (.csv = commas, .tsv = tabs) and that quotes are balanced."
                           ) from None


def _parse_json_line(path, lineno, text):
    try:
        return json.loads(text)
    except ValueError:
        pass
    try:  # Amazon 2014 metadata: one Python dict literal per line
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        raise PrepareError(f"{path}: line {lineno} is neither JSON nor a Python dict literal: "
                           f"{text[:80]!r}. Expected one JSON object per line (JSON lines).") from None


def _read_json_records(path, keep):
    """Records of a JSON-lines file (or one JSON array) restricted to the keys whose lower case is in ``keep``."""
    opener = gzip.open if path.lower().endswith(".gz") else open
    records = []
    try:
        with opener(path, "rt", encoding="utf-8-sig") as f:
            first = f.readline()
            if first.lstrip().startswith("["):
                data = json.loads(first + f.read())
                rows = enumerate(data, 1)
            else:
                def lines():
                    yield 1, first
                    for number, line in enumerate(f, 2):
                        yield number, line
                rows = ((n, _parse_json_line(path, n, line.strip())) for n, line in lines() if line.strip())
            for lineno, obj in rows:
                if not isinstance(obj, dict):
                    raise PrepareError(f"{path}: record {lineno} is a {type(obj).__name__}, not an object with "
                                       "named fields; expected one JSON object per line.")
                records.append({k: v for k, v in obj.items() if str(k).lower() in keep})
    except (OSError, EOFError, UnicodeDecodeError, ValueError) as exc:
        if isinstance(exc, PrepareError):
            raise
        raise PrepareError(f"{path}: cannot be read as (gzipped) JSON lines ({exc}).") from None
    if not records:
        raise PrepareError(f"{path}: the file holds no records; expected one JSON object per line.")
    return records


def _load(path, what, keep):
    """A DataFrame of the file's columns (values: strings for CSV/TSV, Python objects for JSON)."""
    _check_file(path, what)
    fmt = _file_format(path)
    if fmt == "json":
        frame = pd.DataFrame.from_records(_read_json_records(path, keep))
    else:
        frame = _read_table(path, "," if fmt == "csv" else "\t")
    return frame, fmt


def _resolve(columns, aliases):
    """The first column (in alias priority) whose cleaned, lower-cased name is an alias, or ``None``."""
    by_name = {}
    for column in columns:
        by_name.setdefault(_clean_header(column).lower(), column)
    for alias in aliases:
        if alias in by_name:
            return by_name[alias]
    return None


def _missing_column(path, role, aliases, columns, hint=""):
    amazon = f" (Amazon dumps: '{_AMAZON_NAMES[role]}')" if role in _AMAZON_NAMES else ""
    found = ", ".join(_clean_header(c) for c in columns) or "none"
    return PrepareError(
        f"{path}: no {role} column{amazon}. Expected a column named one of: {', '.join(aliases)} "
        f"(case-insensitive). Found: {found}. Rename that column in the file's header{hint}."
    )


# ------------------------------------------------------------------------------------------------- value helpers

def _is_missing(value):
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and not value.strip()


def id_text(value):
    """A raw id as text: strings stripped, integral numbers without ``.0``; ``None`` when missing."""
    if _is_missing(value):
        return None
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return str(int(value)) if float(value).is_integer() else repr(float(value))
    return str(value).strip()


def _looks_numeric(text):
    try:
        float(text)
        return True
    except (TypeError, ValueError):
        return False


# -------------------------------------------------------------------------------------------------- interactions

@dataclass
class RawInteractions:
    """Interactions as read: ``frame`` has ``user``, ``item`` (str), ``rating`` (float64), ``timestamp``, ``row``."""

    frame: pd.DataFrame
    path: str
    columns: dict
    has_rating: bool
    has_timestamp: bool
    n_rows: int
    n_missing_ids: int
    notes: list = field(default_factory=list)


def _numeric_column(path, values, column, what):
    """Parse a column to float64; an empty or non-numeric cell is an error naming the row."""
    numbers = pd.to_numeric(pd.Series(values, dtype=object).map(
        lambda v: v.strip() if isinstance(v, str) else v), errors="coerce").astype("float64")
    bad = numbers.isna().to_numpy()
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise PrepareError(f"{path}: column '{column}' must hold {what} numbers, but data row {row + 1} has "
                           f"{values[row]!r}. Fix or remove that row.")
    return numbers.to_numpy()


def _timestamps(path, values, column):
    """Unix times from numbers, or from date strings (ISO 8601 and the like) converted to seconds."""
    as_text = pd.Series(values, dtype=object).map(lambda v: v.strip() if isinstance(v, str) else v)
    numbers = pd.to_numeric(as_text, errors="coerce").astype("float64")
    if numbers.isna().any():
        missing = as_text.map(_is_missing).to_numpy()
        if missing.any():
            row = int(np.flatnonzero(missing)[0])
            raise PrepareError(f"{path}: column '{column}' is empty in data row {row + 1}. Every interaction "
                               "needs a timestamp when the column is present; fill it or remove the column.")
        if numbers.notna().any():
            row = int(np.flatnonzero(numbers.isna().to_numpy())[0])
            raise PrepareError(f"{path}: column '{column}' mixes numbers and other values (data row {row + 1}: "
                               f"{values[row]!r}). Use Unix times (seconds) or dates in one format.")
        try:
            dates = pd.to_datetime(as_text, utc=True, format="mixed")
        except (ValueError, TypeError, OverflowError):
            raise PrepareError(f"{path}: column '{column}' holds neither Unix times nor dates this tool can read "
                               f"(first value: {values[0]!r}). Use Unix seconds or ISO 8601 dates "
                               "(2014-01-31 or 2014-01-31T12:00:00Z).") from None
        seconds = (dates - pd.Timestamp("1970-01-01", tz="UTC")) // pd.Timedelta(seconds=1)
        return seconds.to_numpy(dtype=np.int64)
    numbers = numbers.to_numpy()
    if np.all(numbers == np.floor(numbers)) and np.all(np.abs(numbers) < 2 ** 62):
        return numbers.astype(np.int64)
    return numbers


def _headerless_ratings(path, fmt, frame):
    """Re-read an Amazon "ratings only" CSV (``user,item,rating,timestamp``, no header) or return ``None``."""
    if fmt == "json" or len(frame.columns) not in (3, 4):
        return None
    names = [_clean_header(c) for c in frame.columns]
    if not all(_looks_numeric(n) for n in names[2:]):
        return None
    roles = ["user", "item", "rating", "timestamp"][: len(names)]
    return _read_table(path, "," if fmt == "csv" else "\t", header=None, names=roles), roles


def read_interactions(path):
    """Read raw interactions; see the module docstring for the accepted formats and column names."""
    keep = {a for aliases in INTERACTION_COLUMNS.values() for a in aliases}
    frame, fmt = _load(path, "interactions", keep)
    notes = []
    columns = {role: _resolve(frame.columns, aliases) for role, aliases in INTERACTION_COLUMNS.items()}
    if columns["user"] is None and columns["item"] is None:
        reread = _headerless_ratings(path, fmt, frame)
        if reread is not None:
            frame, roles = reread
            columns = {role: (role if role in roles else None) for role in INTERACTION_COLUMNS}
            notes.append(f"{path}: no header line; read as columns {', '.join(roles)} (Amazon ratings-only layout)")
    for role in ("user", "item"):
        if columns[role] is None:
            raise _missing_column(path, role, INTERACTION_COLUMNS[role], list(frame.columns))
    n_rows = len(frame)
    if n_rows == 0:
        raise PrepareError(f"{path}: has a header but no interactions.")

    users = [id_text(v) for v in frame[columns["user"]].tolist()]
    items = [id_text(v) for v in frame[columns["item"]].tolist()]
    present = np.array([u is not None and i is not None for u, i in zip(users, items)], dtype=bool)
    out = pd.DataFrame({"user": users, "item": items, "row": np.arange(n_rows, dtype=np.int64)})
    if columns["rating"] is not None:
        out["rating"] = _numeric_column(path, frame[columns["rating"]].tolist(), _clean_header(columns["rating"]),
                                        "rating")
    else:
        out["rating"] = 1.0
        notes.append(f"{path}: no rating column; every rating is written as 1.0 (implicit feedback)")
    if columns["timestamp"] is not None:
        out["timestamp"] = _timestamps(path, frame[columns["timestamp"]].tolist(),
                                       _clean_header(columns["timestamp"]))
    else:
        out["timestamp"] = np.zeros(n_rows, dtype=np.int64)
        notes.append(f"{path}: no timestamp column; every timestamp is written as 0")
    n_missing = int((~present).sum())
    if n_missing:
        notes.append(f"{path}: {n_missing} rows without a user or item id were skipped")
        out = out[present].reset_index(drop=True)
    return RawInteractions(
        frame=out, path=path, columns={k: (None if v is None else _clean_header(v)) for k, v in columns.items()},
        has_rating=columns["rating"] is not None, has_timestamp=columns["timestamp"] is not None,
        n_rows=n_rows, n_missing_ids=n_missing, notes=notes,
    )


# ---------------------------------------------------------------------------------------------------- item text

_LITERAL = re.compile(r"^\s*[\[\(\{].*[\]\)\}]\s*$", re.S)


def _flatten(value):
    """Strings inside ``value`` (nested lists/tuples/dicts of strings, numbers), in order."""
    if _is_missing(value):
        return []
    if isinstance(value, str):
        text = value.strip()
        if _LITERAL.match(text):  # a list serialised into a CSV cell, e.g. "[['Baby', 'Nursery']]"
            try:
                parsed = ast.literal_eval(text)
            except (ValueError, SyntaxError, MemoryError, RecursionError):
                parsed = None
            if isinstance(parsed, (list, tuple, dict)):
                return _flatten(parsed)
        return [text]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _flatten(v)]
    if isinstance(value, (list, tuple, np.ndarray)):
        return [s for v in value for s in _flatten(v)]
    return [id_text(value)]


def _clean_text(text):
    return " ".join(html.unescape(text).split())


def item_text(record):
    """The sentence encoded for one item: title, brand, categories (unique, in order), description.

    ``record`` maps the roles of :data:`TEXT_COLUMNS` to raw values. Returns ``''`` when every field is empty.
    """
    parts = []
    for role in TEXT_COLUMNS:
        strings = [_clean_text(s) for s in _flatten(record.get(role))]
        strings = [s for s in strings if s]
        if role == "categories":
            strings = list(dict.fromkeys(strings))
        parts.extend(strings)
    return " ".join(parts)


@dataclass
class RawItems:
    """Item metadata as read: ``texts`` maps raw item id -> sentence ('' when the item has no text)."""

    texts: dict
    path: str
    columns: dict
    n_rows: int
    n_duplicates: int
    notes: list = field(default_factory=list)


def read_items(path):
    """Read item metadata and build one sentence per item (see :func:`item_text`)."""
    keep = set(ITEM_ID_COLUMNS) | {a for aliases in TEXT_COLUMNS.values() for a in aliases}
    frame, _ = _load(path, "items", keep)
    id_column = _resolve(frame.columns, ITEM_ID_COLUMNS)
    if id_column is None:
        raise _missing_column(path, "item", ITEM_ID_COLUMNS, list(frame.columns),
                              hint=" (the ids must be the same as in the interactions file)")
    columns = {role: _resolve(frame.columns, aliases) for role, aliases in TEXT_COLUMNS.items()}
    if all(c is None for c in columns.values()):
        expected = "; ".join(f"{role}: {', '.join(a)}" for role, a in TEXT_COLUMNS.items())
        raise PrepareError(f"{path}: no text column. Expected at least one of ({expected}); found: "
                           f"{', '.join(_clean_header(c) for c in frame.columns)}. Rename a column, or leave out "
                           "--items to write no text features.")
    notes = []
    texts = {}
    duplicates = 0
    ids = frame[id_column].tolist()
    values = {role: (frame[c].tolist() if c is not None else None) for role, c in columns.items()}
    for row, raw in enumerate(ids):
        item = id_text(raw)
        if item is None:
            continue
        if item in texts:
            duplicates += 1
            continue
        texts[item] = item_text({role: (v[row] if v is not None else None) for role, v in values.items()})
    if duplicates:
        notes.append(f"{path}: {duplicates} repeated item ids; the first row of each was used")
    if not texts:
        raise PrepareError(f"{path}: no row has an item id in column '{_clean_header(id_column)}'.")
    return RawItems(texts=texts, path=path, n_rows=len(frame), n_duplicates=duplicates, notes=notes,
                    columns={"item": _clean_header(id_column),
                             **{r: (None if c is None else _clean_header(c)) for r, c in columns.items()}})


# -------------------------------------------------------------------------------------------------------- images

@dataclass
class ImageIndex:
    """``files`` maps raw item id -> image path (one per id)."""

    files: dict
    directory: str
    notes: list = field(default_factory=list)


def index_images(directory):
    """Map raw item ids to image files ``<id><ext>`` in ``directory`` (not recursive).

    When one id has several files (``5.jpg`` and ``5.png``) the first extension in :data:`IMAGE_EXTENSIONS`
    order wins and a note says so.
    """
    if not os.path.exists(directory):
        raise PrepareError(f"images folder {directory} does not exist: check the --images path.")
    if not os.path.isdir(directory):
        raise PrepareError(f"--images {directory} is a file; pass the folder that holds <item_id>.jpg|.png files.")
    candidates = {}
    for entry in sorted(os.listdir(directory)):
        stem, ext = os.path.splitext(entry)
        if ext.lower() not in IMAGE_EXTENSIONS or not stem.strip():
            continue
        path = os.path.join(directory, entry)
        if os.path.isfile(path):
            candidates.setdefault(stem.strip(), []).append(path)
    if not candidates:
        raise PrepareError(f"images folder {directory} holds no image files: expected files named "
                           f"<item_id>{'|'.join(IMAGE_EXTENSIONS)} (e.g. B000123.jpg).")
    notes = []
    files = {}
    order = {ext: i for i, ext in enumerate(IMAGE_EXTENSIONS)}
    for stem, paths in candidates.items():
        paths = sorted(paths, key=lambda p: (order[os.path.splitext(p)[1].lower()], p))
        files[stem] = paths[0]
        if len(paths) > 1:
            notes.append(f"item {stem} has {len(paths)} images; using {os.path.basename(paths[0])}")
    return ImageIndex(files=files, directory=directory, notes=notes)


def load_image(path):
    """Open an image fully (so truncated or corrupt files fail here) as upright RGB; raises ``PrepareError``.

    The EXIF orientation is applied, and transparent pixels are put on a white background (product photos).
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.load()
            image = ImageOps.exif_transpose(image)
            if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
                rgba = image.convert("RGBA")
                background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                return Image.alpha_composite(background, rgba).convert("RGB")
            return image.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise PrepareError(f"image {path} cannot be read ({exc.__class__.__name__}: {exc}). Replace or delete "
                           "the file, or pass --skip-bad-images to treat its item as having no image.") from None
