"""Evaluation samples and the JSONL format they travel in.

A dataset is a JSONL file with one ``{"id"?, "image", "prompt", "reference"?, "meta"?}``
object per line; ``image`` is a path relative to the JSONL file. ``reference`` is
one answer or a list of acceptable ones (VQAv2, TextVQA and OK-VQA exports list
each annotator's): an output that matches any of them scores as right. ``meta`` is
an object of named values (``{"answer_type": "number"}``) that the results carry and
break accuracy down by (``ComparisonResult.accuracy_by``, ``vlm-lab compare --by``). The embedded
shapes data is addressed as ``shapes:SPLIT[:N]`` (e.g. ``shapes:val:64``).

Samples read from a file hold the image's path, not its pixels: ``Sample.image``
decodes the file on each access, so a run over thousands of photos holds only
the batch it is working on.
"""

from __future__ import annotations

import codecs
import dataclasses
import errno
import json
import os
import re
import sys
import tempfile
import unicodedata
from pathlib import Path
from typing import IO, Iterable, Iterator, MutableMapping, NoReturn

from PIL import Image, ImageOps, UnidentifiedImageError

from vlm_lab.data_format import (RepeatedKeyError, as_text, blank, json_number, meta_field, not_json, not_jsonl, reference_field,
                                 scalar, unique_keys)
from vlm_lab.errors import DataError
from vlm_lab.pixel_limit import ImageTooLargeError, check_pixels, pixel_limit, refused_by_pillow, too_many_pixels

# Processors scale an image's short side up to their size (CLIP: 336 for LLaVA): a 30000x1 strip, 30,000
# pixels, became 1.9M x 64 on the embedded checkpoints (+1.1 GB, measured) and would be 10M x 336 for LLaVA,
# enough to run a comparison (or the Space) out of memory. Real photos and panoramas stay well within this.
MAX_ASPECT = 50
# a data file of this many lines or more is read under a progress bar (when asked for): each line's image is
# checked as it is read (a 3.8 MB PNG is read whole, ~2.4 ms from the page cache), so 10k photos on a slow disk
# took tens of seconds with nothing on screen. Fewer lines read in well under a second from a local disk.
READ_PROGRESS_LINES = 200


class _ImageField:
    """``Sample.image``: the image given, or for a file-backed sample (``image=None`` and an
    ``image_path``) the file decoded afresh on each access and never kept on the sample."""

    def __get__(self, sample: "Sample | None", owner: type | None = None) -> Image.Image:
        if sample is None:
            raise AttributeError("image")  # no class-level default: dataclass keeps ``image`` a required field
        image = sample.__dict__["_image"]
        if image is not None:
            return image
        try:
            return open_image(sample.image_path)
        except DataError as e:  # a JPEG cut short in its pixels passes read_jsonl's check: found when its batch runs
            if not sample.line:
                raise
            raise DataError(f"{sample.line}: {e}; re-save the image, or leave that line out") from e

    def __set__(self, sample: "Sample", image: Image.Image | None) -> None:
        sample.__dict__["_image"] = image


@dataclasses.dataclass
class Sample:
    """One image + prompt (+ optional reference answer).

    ``image`` is a PIL image held in memory, or None with ``image_path`` set: then
    reading ``image`` decodes the file each time (``open_image``: upright RGB, transparency
    on white) and the sample keeps only the path.
    """

    id: str
    image: Image.Image = _ImageField()  # type: ignore[assignment]
    prompt: str
    reference: str | list[str] | None = None  # a list: several acceptable answers, any one scores as right
    image_path: str | None = None  # where the image lives on disk, when it does
    meta: dict[str, str | int | float | bool] | None = None  # named values to break accuracy down by
    line: str | None = None  # "data.jsonl:3": where a sample read from a file was given, for its errors
    image_file: str | None = None  # the image as the data file gives it ("my images/img 3.jpg"): what the views name it by

    def __post_init__(self) -> None:
        if self.__dict__["_image"] is None and not self.image_path:
            raise DataError(f"sample {self.id!r} has neither an image nor an image_path; give one")

    @property
    def source_file(self) -> Path | None:
        """The file ``image`` is decoded from on each access; None when the image is held in memory."""
        return Path(self.image_path) if self.__dict__["_image"] is None else None


def atomic_write_text(path: str | os.PathLike[str], text: str, *, if_changed: bool = False) -> bool:
    """Write ``text`` to ``path`` via a temp file in the same folder + rename.

    An interrupted write never leaves a half-written file that a resume would trust.
    ``if_changed``: leave the file alone (and its modification time) when it already
    holds exactly ``text``. Returns whether the file was written.
    """
    path = Path(path)
    if if_changed and file_holds(path, text):
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; results are meant to be read by others
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return True


def file_holds(path: str | os.PathLike[str], text: str) -> bool:
    """Whether ``path`` is a file whose content is exactly ``text`` (UTF-8)."""
    path, data = Path(path), text.encode("utf-8")
    try:
        if path.stat().st_size != len(data):
            return False
        return path.read_bytes() == data
    except OSError:
        return False


def write_jsonl(samples: Iterable[Sample], out_dir: str | os.PathLike[str], *, name: str = "data.jsonl") -> Path:
    """Write samples as ``out_dir/images/*.png`` plus ``out_dir/<name>``; returns the JSONL path."""
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    lines = []
    written: dict[object, str] = {}  # one PNG per image, even when several questions share it
    for s in samples:
        # a file-backed sample's ``image`` is a new object on each access: its file names it
        image_key = s.source_file or id(s.image)
        rel = written.get(image_key)
        if rel is None:
            rel = written[image_key] = f"images/{s.id}.png"
            s.image.save(out / rel)
        record = {"id": s.id, "image": rel, "prompt": s.prompt}
        if s.reference is not None:
            record["reference"] = s.reference
        if s.meta:
            record["meta"] = s.meta
        lines.append(json.dumps(record))
    path = out / name
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path


# Formats PIL decodes by running another program on the file: EPS through Ghostscript (PostScript is a
# programming language, and PIL goes by the content, so a data set's "cat.png" may be one). Never opened
# for a data set or an upload; the Space opens only what browsers show (space_images.UPLOAD_FORMATS).
EXTERNAL_DECODER_FORMATS = frozenset({"EPS"})


def _formats() -> list[str]:
    """Every image format PIL opens except ``EXTERNAL_DECODER_FORMATS``."""
    Image.init()
    return [f for f in Image.OPEN if f not in EXTERNAL_DECODER_FORMATS]


def _unopened(path: str | os.PathLike[str] | IO[bytes], error: UnidentifiedImageError) -> NoReturn:
    """Raise the ``DataError`` for a file PIL would not open with ``_formats()``: one in a refused format
    says so (no cause: the message has the fix); any other keeps PIL's error as its cause."""
    refused = None
    try:
        if hasattr(path, "seek"):
            path.seek(0)
        with Image.open(path, formats=sorted(EXTERNAL_DECODER_FORMATS)) as img:  # the header only: no program runs
            refused = img.format
    except Exception:  # noqa: BLE001 - not one of those either
        pass
    if refused:
        raise DataError(f"{_name(path)} is {refused}, which vlm_lab does not open (decoding it runs another "
                        "program on the file); convert it to PNG or JPEG") from None  # fmt: skip
    raise DataError(f"cannot read image {path}: {error}") from error


def open_image(path: str | os.PathLike[str] | IO[bytes]) -> Image.Image:
    """Open an image fully as the model sees it (``as_shown``: upright RGB, transparency on white).

    ``path`` is a file path or a binary file object (an upload's bytes). PIL's failures
    become a ``DataError`` naming the file; one over the pixel limit (``pixel_limit``) is not decoded.
    """
    limit = pixel_limit()
    try:
        with Image.open(path, formats=_formats()) as img:  # reads the header only
            check_pixels(_name(path), img.size, limit)
            problem = aspect_problem(img.size)
            if problem:
                raise DataError(f"{_name(path)} {problem}; {ASPECT_LIMIT}: crop it, or pad it toward a square")
            img.load()  # the first frame of an animation
            return as_shown(img)
    except DataError:
        raise
    except FileNotFoundError as e:
        raise DataError(f"image not found: {path}") from e
    except UnidentifiedImageError as e:
        _unopened(path, e)
    except Image.DecompressionBombError as e:  # over twice Pillow's limit: refused before its size is read
        raise refused_by_pillow(_name(path), e, limit) from None
    except (OSError, SyntaxError, ValueError) as e:
        raise DataError(f"cannot read image {path}: {e}") from e


def as_shown(img: Image.Image) -> Image.Image:
    """The RGB image a person sees: turned upright by its EXIF orientation (phone photos), transparent
    pixels over white (as browsers show them and transformers' ``convert_to_rgb`` does), not black.

    Every path that gives a user's image to a model (datasets, widget uploads, Space uploads) goes
    through here, so one file gives the same pixels in the CLI, a notebook and the Space.
    """
    img = _eight_bit(ImageOps.exif_transpose(img))
    if img.has_transparency_data:  # RGBA, LA, PA, or a palette / RGB image with a transparent colour
        rgba = img.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
    return img.convert("RGB")


def _eight_bit(img: Image.Image) -> Image.Image:
    """A 16-bit, 32-bit or float grey image (depth maps, scans, microscopy) scaled to 0-255 as
    image viewers show it; Pillow's ``convert`` clips it instead (a 16-bit gradient came out
    almost all white, a 0-1 float one all black). Other modes are returned as they are."""
    if not (img.mode.startswith("I;16") or img.mode in ("I", "F")):
        return img
    import numpy as np

    a = np.asarray(img, dtype=np.float64)
    top = float(a.max(initial=0.0))
    if img.mode.startswith("I;16") or 255 < top <= 65535:
        scale = 255 / 65535  # the 16-bit range (a 16-bit PNG may open as "I")
    elif img.mode == "F" and top <= 1.0:
        scale = 255.0  # floats in 0..1
    elif top > 65535:
        scale = 255 / top
    else:
        scale = 1.0  # already within 0..255
    return Image.fromarray(np.clip(np.rint(a * scale), 0, 255).astype(np.uint8), "L")


ASPECT_LIMIT = (f"images are taken up to {MAX_ASPECT}:1 (the processor would stretch a longer strip to far more "
                "pixels than it has, and run out of memory)")


def aspect_problem(size: tuple[int, int]) -> str | None:
    """What is wrong with an image this size (``"is 30000x1, 30,000 times as wide as it is tall"``), or None
    within ``MAX_ASPECT``:1; the processor would stretch a longer strip to far more pixels than it has."""
    width, height = size
    long, short = max(width, height), max(1, min(width, height))
    if long <= MAX_ASPECT * short:
        return None
    wide = width > height
    return f"is {width}x{height}, {long / short:,.0f} times as {'wide' if wide else 'tall'} as it is {'tall' if wide else 'wide'}"


def _name(path: str | os.PathLike[str] | IO[bytes]) -> str:
    return "the image" if hasattr(path, "read") else str(path)


def check_image(path: str | os.PathLike[str]) -> tuple[int, int]:
    """Check that ``path`` is an image PIL can read, without decoding its pixels (header + ``verify``); its size.

    ``verify`` checks a PNG's chunks and checksums; a JPEG cut short in its pixel
    data passes and fails only when decoded (``open_image``, also a ``DataError``).

    Raises:
        ImageTooLargeError: over the pixel limit (``pixel_limit``); DataError: anything else that stops it.
    """
    limit = pixel_limit()
    try:
        with Image.open(path, formats=_formats()) as img:
            check_pixels(str(path), img.size, limit)
            img.verify()
            return img.size
    except DataError:
        raise
    except FileNotFoundError as e:
        raise DataError(f"image not found: {path}") from e
    except UnidentifiedImageError as e:
        _unopened(path, e)
    except Image.DecompressionBombError as e:
        raise refused_by_pillow(str(path), e, limit) from None
    except (OSError, SyntaxError) as e:
        raise DataError(f"cannot read image {path}: {e}") from e


def checked_size(path: Path, memo: MutableMapping[str, str] | None = None) -> tuple[int, int]:
    """``check_image``, memoised in ``memo`` (the per-user digest memo, ``checkpoints.load_digest_memo``) on the
    file's stat as its digest is: a re-run of 20k photos parsed 20k headers (a PNG's ``verify`` reads it whole).
    Only a size that passed is kept; the pixel limit of the day is applied to it again."""
    if memo is None:
        return check_image(path)
    from vlm_lab.checkpoints import stat_key

    try:
        key = f"image-size|{stat_key(path)}"
    except OSError:
        return check_image(path)  # it says what is wrong with the path
    if re.fullmatch(r"\d+x\d+", size := memo.get(key) or ""):
        width, height = map(int, size.split("x"))
        check_pixels(str(path), (width, height), pixel_limit())
        return width, height
    width, height = check_image(path)
    memo[key] = f"{width}x{height}"
    return width, height


def _byte_lines(path: Path) -> list[bytes]:
    """A data file's lines as bytes (a UTF-8 BOM dropped, at the start of any line); UTF-16 is a ``DataError`` with the fix."""
    raw = path.read_bytes()
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise DataError(f"{path} is UTF-16 text; save it as UTF-8 (each line one JSON object)")
    # split the bytes, not the text: str.splitlines would also split inside a prompt at U+2028 or U+0085. A BOM
    # starting a line inside is one of several files joined with cat (the editor of one added it): not part of the data
    return [line.removeprefix(codecs.BOM_UTF8) for line in raw.splitlines()]


def _reading_bar(path: Path, raw_lines: list[bytes], limit: int | None, progress: bool):
    """A tqdm bar over the data lines to read, on stderr (``tqdm.auto``: a widget in a notebook, like compare's
    bar); disabled unless ``progress`` and at least ``READ_PROGRESS_LINES`` of them."""
    from tqdm.auto import tqdm

    total = sum(1 for line in raw_lines if line.strip())
    total = total if limit is None else min(total, limit)
    return tqdm(total=total, desc=f"reading {path.name}", unit="line", file=sys.stderr,
                disable=not progress or total < READ_PROGRESS_LINES)  # fmt: skip


def _text_lines(path: Path, raw_lines: list[bytes]) -> Iterator[tuple[int, str]]:
    """``(line number, text)`` of ``path``'s lines (``_byte_lines``); one not UTF-8 is a ``DataError`` with the fix."""
    for lineno, line in enumerate(raw_lines, start=1):
        try:
            yield lineno, line.decode("utf-8")
        except UnicodeDecodeError as e:
            raise DataError(
                f"{path}:{lineno}: not UTF-8 text (byte {line[e.start]:#04x} at column {e.start + 1}); save the file as UTF-8"
            ) from e


def read_jsonl(path: str | os.PathLike[str], *, limit: int | None = None, progress: bool = False,
               memo: MutableMapping[str, str] | None = None) -> list[Sample]:
    """Read a bring-your-own-data JSONL file (UTF-8); image paths are relative to the file (or absolute, or ``~/…``).

    Each image is checked up front (readable, without decoding its pixels); the samples
    hold only its path and decode it when used. A missing, empty or whitespace-only
    ``reference`` means none: that sample's outputs are compared but not scored. A list
    of references keeps its non-blank entries (all blank, or ``[]``: none). ``progress``: a bar on
    stderr while a file of ``READ_PROGRESS_LINES`` or more lines is read (its images checked). ``memo``: the
    digest memo, so that an image unchanged since it was last checked is not opened (``checked_size``).

    Raises:
        DataError: naming the file and line, for a line or an image that cannot be used.
    """
    path = Path(path).expanduser()  # "~/…" from a notebook parameter or a sweep file: no shell expanded it
    if path.is_dir() and len(inside := sorted(path.glob("*.jsonl"))) == 1:  # the folder write_jsonl made
        raise DataError(f"{path} is a folder; pass the JSONL in it: data={str(inside[0])!r}")
    if not path.is_file():
        from vlm_lab.paths import nearby

        raise DataError(
            f"no data file at {os.path.abspath(path)} ({nearby(path)}); "
            "pass a JSONL of {image, prompt, reference?} or shapes:val:N"
        )
    samples: list[Sample] = []
    lines: dict[str, list[int]] = {}  # id -> the lines that give it
    made: set[int] = set()  # lines without an id, named {stem}-{line}: one may clash with an id another line gives
    strips: list[str] = []  # all named at once: a data set fixed one line per run would take as many runs
    too_large: list[tuple[str, int | None, tuple[int, int] | None]] = []  # likewise: (line and image, pixels, size)
    over = 0  # the pixel limit they are over
    unreadable: list[str] = []  # likewise: a few missing files are fixed in one pass
    first_line = None
    raw_lines = _byte_lines(path)
    with _reading_bar(path, raw_lines, limit, progress) as bar:
        for lineno, line in _text_lines(path, raw_lines):
            if not line.strip():
                continue
            bar.update(1)
            first_line = line if first_line is None else first_line
            try:
                record = json.loads(line, object_pairs_hook=unique_keys, parse_float=json_number, parse_constant=json_number)
            except RepeatedKeyError as e:
                raise DataError(f"{path}:{lineno}: {e}") from None
            except json.JSONDecodeError as e:
                raise DataError(not_json(path, lineno, line, e, first_line)) from None
            if not isinstance(record, dict):
                raise DataError(not_jsonl(path, first_line) or f"{path}:{lineno}: expected a JSON object, got {type(record).__name__}")
            missing = [k for k in ("image", "prompt") if blank(record.get(k))]
            if missing:
                raise DataError(f"{path}:{lineno}: missing {', '.join(missing)} (each line needs image and prompt)")
            wrong = [k for k in ("image", "prompt") if not isinstance(record[k], str)]
            wrong += [k for k in ("id", "reference") if record.get(k) is not None and not scalar(record[k])
                      and not (k == "reference" and isinstance(record[k], list))]
            if wrong:
                raise DataError(
                    f"{path}:{lineno}: {', '.join(f'{k} is a {type(record[k]).__name__}' for k in wrong)}; image (a path "
                    "relative to the file) and prompt are strings, id a string or number, reference a string or number or a list "
                    "of them (several acceptable answers)"
                )
            unknown = sorted(set(record) - {"id", "image", "prompt", "reference", "meta"})
            if unknown:
                raise DataError(f"{path}:{lineno}: unknown key(s) {', '.join(unknown)} (allowed: id, image, prompt, reference, meta; "
                                'put other fields under "meta", e.g. "meta": {"answer_type": "number"}, to break accuracy down by them)')
            meta = meta_field(record.get("meta"), f"{path}:{lineno}")
            if re.match(r"[A-Za-z][A-Za-z0-9+.-]*://", record["image"]):  # hub datasets' exports often hold URLs
                raise DataError(f"{path}:{lineno}: image {record['image']!r} is a URL; images are read from disk: download them "
                                "and give each one's path, relative to the JSONL file")
            image_path = path.parent / record["image"]  # its error names it as given, if it cannot be resolved
            try:
                image_path = _resolved(path.parent, record["image"])
                problem = aspect_problem(checked_size(image_path, memo))
            except ImageTooLargeError as e:
                too_large.append((f"{path}:{lineno}: {record['image']}", e.pixels, e.size))
                over, problem = e.limit, None
            except DataError as e:
                unreadable.append(f"{path}:{lineno}: {e}{_path_hint(path.parent, record['image'])}")
                problem = None
            if problem:
                strips.append(f"{path}:{lineno}: {record['image']} {problem}")
            reference = reference_field(record.get("reference"), f"{path}:{lineno}")
            sample_id = f"{path.stem}-{lineno}" if blank(record.get("id")) else as_text(record["id"])  # 0 is an id
            if blank(record.get("id")):
                made.add(lineno)
            lines.setdefault(sample_id, []).append(lineno)
            samples.append(
                Sample(
                    id=sample_id,
                    image=None,  # decoded on access: the list holds paths, not pixels
                    prompt=str(record["prompt"]),
                    reference=reference,
                    image_path=str(image_path),
                    meta=meta,
                    line=f"{path}:{lineno}",
                    image_file=record["image"],
                )
            )
            if limit is not None and len(samples) >= limit:
                break
    if unreadable:
        relative = f"image paths are relative to the JSONL file's folder, {path.parent.resolve()}"
        if len(unreadable) == 1:
            raise DataError(f"{unreadable[0]}; {relative}: fix it, or leave that line out")
        more = f" (and {len(unreadable) - 5} more)" if len(unreadable) > 5 else ""
        raise DataError(f"{len(unreadable)} images in {path} cannot be read: {'; '.join(unreadable[:5])}{more}; {relative}: "
                        "fix them, or leave those lines out")
    if too_large:
        raise DataError(too_many_pixels(too_large, over))
    if strips:
        more = f" (and {len(strips) - 5} more)" if len(strips) > 5 else ""
        raise DataError(f"{'; '.join(strips[:5])}{more}; {ASPECT_LIMIT}: crop them, or pad them toward a square, "
                        "or leave those lines out")
    if not samples:
        raise DataError(f"{path} holds no samples")
    dup = [f"{i} (lines {', '.join(map(str, at))}{_named_after_line(made.intersection(at))})"
           for i, at in lines.items() if len(at) > 1]
    if dup:
        more = f" and {len(dup) - 5} more" if len(dup) > 5 else ""
        raise DataError(f"{path}: duplicate sample id{'s' if len(dup) > 1 else ''}: {', '.join(dup[:5])}{more}; ids must be "
                        "unique: give each line its own id")
    return samples


def _resolved(folder: Path, image: str) -> Path:
    """``image`` (relative to ``folder``, absolute, or ``~/…``) as an absolute path; a ``DataError`` for one that has
    no such path (Path.resolve raises RuntimeError on a symlink loop before Python 3.13, ValueError on a NUL)."""
    if "\0" in image:
        raise DataError(f"image {image!r} holds a NUL character, which no file name can")
    given = folder / Path(image).expanduser()  # an absolute or ~ path is kept
    try:
        return given.resolve()
    except (RuntimeError, OSError) as e:
        loop = isinstance(e, RuntimeError) or e.errno == errno.ELOOP
        raise DataError(f"cannot read image {given}: {'a symbolic link that leads back to itself' if loop else e}") from None


def _path_hint(folder: Path, image: str) -> str:
    """Why an image path that names no file may be meant for one there: written with Windows' '\\', or in the other
    Unicode normal form (macOS matches "café" composed or not; Linux matches the code points), else ``""``."""
    posix = image.replace("\\", "/")
    if posix != image and (folder / posix).is_file():
        return f" (a Windows path? write it with '/': {posix!r})"
    for form in ("NFC", "NFD"):
        other = unicodedata.normalize(form, image)
        if other != image and (folder / other).is_file():
            return (f" (a file {ascii(Path(other).name)} is there, its name spelled with other Unicode code points ({form}): "
                    "write the name as it is on disk)")
    return ""


def _named_after_line(made: set[int]) -> str:
    """``"; line 3 has no id and is named after the file and its line"`` for the lines of a duplicate that gave none."""
    return f"; line {min(made)} has no id and is named after the file and its line" if made else ""


# shapes samples are made and held in memory, ~18 KB each (64x64 RGB + objects): at most ~1.8 GB
MAX_SHAPES_SAMPLES = 100_000


def is_shapes_spec(spec: str) -> bool:
    """``shapes`` or ``shapes:...`` names the embedded set; ``shapes.jsonl`` or ``shapes/x.jsonl`` is a file."""
    return spec == "shapes" or spec.startswith("shapes:")


def load_samples(spec: str, num_samples: int | None = None, *, seed: int = 0, progress: bool = False,
                 memo: MutableMapping[str, str] | None = None) -> list[Sample]:
    """Resolve a data spec: ``shapes:SPLIT[:N]`` or a path to a JSONL file.

    ``num_samples`` caps the count (for ``shapes:`` it is the count when the spec names none).
    ``progress``: a bar on stderr while a large JSONL file is read (``read_jsonl``); ``memo``: its images' checks
    memoised there (``read_jsonl``).
    """
    if is_shapes_spec(spec):
        from vlm_lab import shapes

        parts = spec.split(":")
        split = parts[1] if len(parts) > 1 and parts[1] else "val"
        try:
            n = int(parts[2]) if len(parts) > 2 else (num_samples or 64)
        except ValueError as e:
            raise DataError(f"bad data spec {spec!r}; use shapes:SPLIT:N, e.g. shapes:val:64") from e
        if num_samples is not None:
            n = min(n, num_samples)
        if split not in ("train", "val", "test") or n < 1 or len(parts) > 3:
            raise DataError(f"bad data spec {spec!r}; use shapes:SPLIT:N with SPLIT train|val|test, e.g. shapes:val:64")
        if n > MAX_SHAPES_SAMPLES:
            raise DataError(
                f"{spec!r} asks for {n} samples; the embedded shapes set makes at most {MAX_SHAPES_SAMPLES} "
                f"(held in memory): use shapes:{split}:{MAX_SHAPES_SAMPLES} or fewer"
            )
        return shapes.make_samples(split, n, seed=seed)
    return read_jsonl(spec, limit=num_samples, progress=progress, memo=memo)
