"""A synthetic PDQ bank for the Step 6 benchmarks: made-up pictures with their eight orientations.

hashsvc registers a picture's rotations and mirror images as separate PDQ hashes (hashing the
turned pixels, ``hashsvc.hashing._pdq_dihedral``); hashing a million pictures eight times would
take hours, so the benchmarks make up pictures instead. Each is a 16x16 PDQ DCT drawn
coefficient by coefficient from a Gaussian fitted to crops of scikit-image's photographs; its
eight orientations are the exact transforms of that DCT that ``pdqhash.compute_dihedral`` makes
(transposition and sign changes of odd frequencies), each thresholded at its own median as PDQ
does. :func:`fit_pdq_model` checks those transforms against ``compute_dihedral`` on real crops.
The coefficients are drawn independently, so the codes lack the correlations of real photographs
beyond those between orientations.

:func:`ensure_bank` registers such pictures in a real store (SQLite in a data folder, or
PostgreSQL), rows exactly as ``Store.register`` writes them: the first pictures through
``Store.register`` itself, the rest by batched inserts of the same rows (``Store.register`` does
about 700 pictures/s), after :func:`check_bulk_rows` has compared both ways on a small bank.
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hashsvc.hashing import DIHEDRAL_NAMES, VARIANT_CODES, VARIANT_SLOTS
from hashsvc.index import codes_to_hex
from hashsvc.settings import Settings

#: Sign of each row (or column) of PDQ's 16x16 DCT under a mirror: odd frequencies change sign.
_ODD = np.where(np.arange(16) % 2 == 1, -1, 1).astype(np.float32)
_ROWS = _ODD[:, None]
_COLS = _ODD[None, :]
#: Images per registration batch of the bulk path (and per ``Store.register`` call).
_CHUNK = 20_000
META = "bench-bank.json"


@dataclass(frozen=True)
class PdqModel:
    """Mean and standard deviation of each PDQ DCT coefficient, in pdqhash's order."""

    mean: np.ndarray  # (256,) float32
    std: np.ndarray  # (256,) float32
    crops: int  # real crops fitted and checked


@dataclass(frozen=True)
class BankSpec:
    """What a benchmark bank holds."""

    images: int
    variants: int  # PDQ hashes per picture: 1 (upright only) or 8 (every orientation)
    seed: int = 0
    images_per_case: int = 4

    @property
    def pdq_hashes(self) -> int:
        """PDQ index entries of the bank."""
        return self.images * self.variants


def add_bank_options(parser: Any) -> None:
    """The options that name and size the benchmark bank (--bank, --hashes, --variants)."""
    parser.add_argument("--bank", type=Path, default=None,
                        help="data folder of the bank, built there unless already there "
                             "(default: a temporary folder)")
    parser.add_argument("--hashes", type=int, default=1_000_000, help="PDQ hashes in the bank")
    parser.add_argument("--variants", type=int, choices=(1, 8), default=8,
                        help="PDQ hashes per registered picture")


def dihedral_bits(dct: np.ndarray) -> np.ndarray:
    """PDQ bits (n, 8, 256) of the eight orientations of n (16, 16) PDQ DCTs.

    Orientations come in ``DIHEDRAL_NAMES`` order. A transposition permutes the coefficients
    and leaves the median alone, so four medians serve the eight orientations.
    """
    n = len(dct)
    plain = _threshold(dct)
    rows = _threshold(dct * _ROWS)
    cols = _threshold(dct * _COLS)
    both = _threshold(dct * (_ROWS * _COLS))

    def turn(bits: np.ndarray) -> np.ndarray:
        return bits.transpose(0, 2, 1)

    # orig, rot90, rot180, rot270, flip_tb, flip_lr, transpose, transverse
    out = np.stack([plain, turn(cols), both, turn(rows), rows, cols, turn(plain), turn(both)],
                   axis=1)
    return out.reshape(n, 8, 256)


def _threshold(dct: np.ndarray) -> np.ndarray:
    """PDQ's bits of (n, 16, 16) coefficients: above the median of each DCT's 256."""
    flat = dct.reshape(len(dct), 256)
    middle = np.partition(flat, (127, 128), axis=1)
    median = (middle[:, 127:128] + middle[:, 128:129]) / 2
    return (flat > median).reshape(-1, 16, 16)


def fit_pdq_model(crops: int = 512, seed: int = 0) -> PdqModel:
    """Fit the coefficient model to crops of packaged photographs, checking the transforms.

    Each crop is hashed as hashsvc hashes a picture (squeezed to ``HASH_SIDE``); the eight
    orientations derived here from its DCT must equal ``pdqhash.compute_dihedral``'s.
    """
    import pdqhash  # type: ignore[import-untyped]
    import skimage.data
    from PIL import Image

    from benchmarks.common import PHOTOS
    from hashsvc.hashing import prepare

    rng = np.random.default_rng(seed)
    photos = []
    for name in PHOTOS:
        with Image.open(Path(skimage.data.__file__).parent / name) as src:
            photos.append(src.convert("RGB"))
    floats = []
    for k in range(crops):
        photo = photos[k % len(photos)]
        w, h = photo.size
        cw, ch = int(w * rng.uniform(0.3, 1.0)), int(h * rng.uniform(0.3, 1.0))
        x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        rgb = prepare(photo.crop((x, y, x + cw, y + ch))).rgb
        dct, _ = pdqhash.compute_float(rgb)
        derived = dihedral_bits(dct.astype(np.float32).reshape(1, 16, 16))[0]
        hashed, _ = pdqhash.compute_dihedral(rgb)
        if not np.array_equal(derived, np.array(hashed, dtype=bool)):
            raise AssertionError(f"DCT transforms differ from pdqhash.compute_dihedral (crop {k})")
        floats.append(dct)
    table = np.array(floats, dtype=np.float64)
    return PdqModel(table.mean(0).astype(np.float32), table.std(0).astype(np.float32), crops)


def synthetic_codes(model: PdqModel, images: int, rng: np.random.Generator,
                    chunk: int = 50_000) -> np.ndarray:
    """PDQ codes (images, 8, 32) of made-up pictures, orientations in ``DIHEDRAL_NAMES`` order."""
    out = np.empty((images, 8, 32), dtype=np.uint8)
    for start in range(0, images, chunk):
        n = min(chunk, images - start)
        dct = rng.standard_normal((n, 256), dtype=np.float32) * model.std + model.mean
        out[start:start + n] = np.packbits(dihedral_bits(dct.reshape(n, 16, 16)), axis=2)
    return out


def near_copies(codes: np.ndarray, ids: np.ndarray, count: int, planted: int, distance: int,
                rng: np.random.Generator) -> tuple[np.ndarray, dict[int, int]]:
    """``count`` queries: the first ``planted`` copies of random bank codes with up to
    ``distance`` bits flipped, the rest uniformly random; also query row -> planted id."""
    width = codes.shape[1]
    queries = np.frombuffer(rng.bytes(count * width), dtype=np.uint8).reshape(count, width)
    queries = queries.copy()
    source: dict[int, int] = {}
    for q in range(planted):
        row = int(rng.integers(len(codes)))
        flips = rng.choice(8 * width, size=int(rng.integers(distance + 1)), replace=False)
        queries[q] = codes[row]
        np.bitwise_xor.at(queries[q], flips // 8, (1 << (flips % 8)).astype(np.uint8))
        source[q] = int(ids[row])
    return queries, source


# -- the bank in a store ------------------------------------------------------------------------


def bank_lines(spec: BankSpec, codes: np.ndarray, first: int, stop: int,
               rng: np.random.Generator) -> list[dict[str, Any]]:
    """Hash lines (as ``hashsvc hash`` prints them) of pictures ``first`` to ``stop``."""
    n = stop - first
    pdq = codes_to_hex(codes[first:stop, :spec.variants].reshape(-1, 32))
    exact = rng.bytes(48 * n).hex()
    small = rng.bytes(16 * n).hex()
    quality = rng.integers(50, 101, size=n).tolist()
    lines = []
    for i in range(n):
        line: dict[str, Any] = {
            "sha256": exact[96 * i:96 * i + 64], "md5": exact[96 * i + 64:96 * i + 96],
            "size": 150_000 + 7 * i, "format": "jpeg", "width": 1280, "height": 960,
            "hashes": {"pdq": pdq[spec.variants * i], "phash": small[32 * i:32 * i + 16],
                       "dhash": small[32 * i + 16:32 * i + 32]},
            "quality": {"pdq": quality[i]}, "hash_format": 1,
        }
        if spec.variants > 1:
            line["variants"] = {"pdq": {name: pdq[spec.variants * i + v]
                                        for v, name in enumerate(DIHEDRAL_NAMES)}}
        lines.append(line)
    return lines


def case_ref(spec: BankSpec, image: int) -> str:
    """The case a benchmark picture (numbered from 0) is registered under."""
    return f"BENCH-{image // spec.images_per_case:07d}"


def bulk_register(engine: Any, spec: BankSpec, lines: list[dict[str, Any]], first: int) -> None:
    """Insert the rows ``Store.register`` would write for these lines, in one transaction.

    Pictures are numbered from ``first`` (0-based); each case is new, or continued from the
    previous batch. Ids continue from the largest in each table.
    """
    from sqlalchemy import func, insert, select

    from hashsvc.store import hash_rows
    from hashsvc.store.models import BankChange, BankHash, Case, RegisteredImage, utcnow

    with engine.begin() as conn:
        def top(column: Any) -> int:
            return int(conn.execute(select(func.max(column))).scalar() or 0)

        image_id, hash_id, seq = top(RegisteredImage.id), top(BankHash.id), top(BankChange.seq)
        cases: dict[str, int] = {}
        new_cases = []
        refs = sorted({case_ref(spec, first + i) for i in range(len(lines))})
        known = dict(conn.execute(select(Case.ref, Case.id).where(Case.ref.in_(refs))).all())
        case_id = top(Case.id)
        for ref in refs:
            if ref in known:
                cases[ref] = known[ref]
            else:
                case_id += 1
                cases[ref] = case_id
                new_cases.append({"id": case_id, "ref": ref, "created_at": utcnow()})
        images, hashes, changes = [], [], []
        for i, line in enumerate(lines):
            image_id += 1
            images.append({
                "id": image_id, "case_id": cases[case_ref(spec, first + i)],
                "sha256": line["sha256"], "md5": line.get("md5"), "size": line.get("size"),
                "format": line.get("format"), "width": line.get("width"),
                "height": line.get("height"), "created_at": utcnow(), "media": "image",
                "frame_no": 0, "duration": None})
            for alg, variant, value, quality in hash_rows(line):
                hash_id += 1
                seq += 1
                hashes.append({"id": hash_id, "image_id": image_id, "algorithm": alg,
                               "variant": variant, "value": value, "quality": quality})
                changes.append({"seq": seq, "hash_id": hash_id, "op": "add", "algorithm": alg,
                                "image_id": image_id, "variant": variant, "at": utcnow()})
        for model, rows in ((Case, new_cases), (RegisteredImage, images), (BankHash, hashes),
                            (BankChange, changes)):
            table: Any = model.__table__
            if rows:
                conn.execute(insert(table), rows)
        if engine.dialect.name == "postgresql":
            _advance_sequences(conn)


def _advance_sequences(conn: Any) -> None:
    """Move PostgreSQL's id sequences past the explicit ids inserted."""
    from sqlalchemy import text

    for table, column in (("cases", "id"), ("registered_images", "id"), ("bank_hashes", "id"),
                          ("bank_changes", "seq")):
        conn.execute(text(f"SELECT setval(pg_get_serial_sequence('{table}', '{column}'), "
                          f"(SELECT max({column}) FROM {table}))"))


_TIME_COLUMNS = {"created_at", "at"}


def check_bulk_rows(tmp: Path, model: PdqModel) -> None:
    """Register a small bank both ways (``Store.register``, bulk) and compare every row.

    Timestamps aside, the two databases must hold the same cases, pictures, hashes and change
    feed, so the bulk path is exactly a faster ``Store.register``.
    """
    from sqlalchemy import text

    from hashsvc.settings import load_settings
    from hashsvc.store import Store

    spec = BankSpec(images=30, variants=8, seed=1, images_per_case=4)
    codes = synthetic_codes(model, spec.images, np.random.default_rng(1))
    dumps = []
    for way in ("register", "bulk"):
        settings = load_settings(env={}, data_dir=str(tmp / f"check-{way}"))
        store = Store.open(settings)
        # Two batches, the second continuing a case of the first.
        for first, stop in ((0, 18), (18, 30)):
            lines = bank_lines(spec, codes, first, stop, np.random.default_rng(first))
            if way == "bulk":
                bulk_register(store.engine, spec, lines, first)
            else:
                _register(store, spec, lines, first)
        with store.engine.connect() as conn:
            dump = {}
            for table in ("cases", "registered_images", "bank_hashes", "bank_changes"):
                result = conn.execute(text(f"SELECT * FROM {table} ORDER BY 1"))
                columns = list(result.keys())
                keep = [k for k in columns if k not in _TIME_COLUMNS]
                dump[table] = [tuple(row[k] for k in keep) for row in result.mappings()]
            dumps.append(dump)
        store.close()
    if dumps[0] != dumps[1]:
        raise AssertionError("bulk registration writes other rows than Store.register")


def _register(store: Any, spec: BankSpec, lines: list[dict[str, Any]], first: int) -> None:
    """Register lines through ``Store.register``, one call per case."""
    by_case: dict[str, list[dict[str, Any]]] = {}
    for i, line in enumerate(lines):
        by_case.setdefault(case_ref(spec, first + i), []).append(line)
    for ref, group in by_case.items():
        store.register(ref, group)


def ensure_bank(settings: Settings, spec: BankSpec, register_first: int = 2000,
                log: Any = print) -> dict[str, Any]:
    """The bank that ``settings`` name, built unless a bank of this spec is there already.

    Returns the bank's facts (spec, build times). The bank's indexes are then built and saved
    once in the data folder, as a deployment keeps them, unless they are there already.
    """
    from hashsvc.store import Store

    meta_path = settings.data_path / META
    if meta_path.exists():
        meta: dict[str, Any] = json.loads(meta_path.read_text())
        if meta["spec"] != asdict(spec) or meta.get("database_url") != settings.database_url:
            raise SystemExit(f"{settings.data_path} holds another bank ({meta['spec']}); "
                             "give another folder")
        log(f"reusing the bank in {settings.data_path}: {spec.images:,} pictures, "
            f"{spec.pdq_hashes:,} PDQ hashes")
    else:
        settings.data_path.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        model = fit_pdq_model()
        with tempfile.TemporaryDirectory(prefix="bench-bank-check-") as check:
            check_bulk_rows(Path(check), model)
        codes = synthetic_codes(model, spec.images, np.random.default_rng(spec.seed))
        made_s = time.perf_counter() - started
        log(f"made {spec.images:,} pictures x {spec.variants} PDQ codes in {made_s:.0f} s "
            f"(model fitted and checked on {model.crops} crops)")
        store = Store.open(settings)
        rng = np.random.default_rng(spec.seed + 1)
        started = time.perf_counter()
        first = min(register_first, spec.images)
        _register(store, spec, bank_lines(spec, codes, 0, first, rng), 0)
        register_s = time.perf_counter() - started
        for start in range(first, spec.images, _CHUNK):
            stop = min(start + _CHUNK, spec.images)
            bulk_register(store.engine, spec, bank_lines(spec, codes, start, stop, rng), start)
        bulk_s = time.perf_counter() - started - register_s
        log(f"registered {first:,} pictures with Store.register ({first / register_s:.0f}/s), "
            f"{spec.images - first:,} in bulk ({(spec.images - first) / max(bulk_s, 1e-9):.0f}/s)")
        store.close()
        meta = {"spec": asdict(spec), "database_url": settings.database_url,
                "generate_s": round(made_s, 1), "register_s": round(register_s, 1),
                "register_first": first, "bulk_s": round(bulk_s, 1)}
        meta_path.write_text(json.dumps(meta, indent=2) + "\n")
    if "index_build_s" not in meta:
        meta["index_build_s"] = deploy_indexes(settings)
        log(f"built and saved the bank's indexes in {meta['index_build_s']:.1f} s")
        meta_path.write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def deploy_indexes(settings: Settings) -> float:
    """Build the bank's indexes from its rows and save them in the data folder; seconds taken."""
    from hashsvc.matching import BankMatcher
    from hashsvc.store import Store

    store = Store.open(settings)
    started = time.perf_counter()
    BankMatcher(store, settings)
    took = time.perf_counter() - started
    store.close()
    return round(took, 2)


def bank_pdq(db_url: str) -> tuple[np.ndarray, np.ndarray]:
    """Every PDQ code of a bank and its index id (``image_id * VARIANT_SLOTS + variant``)."""
    from sqlalchemy import create_engine, text

    engine = create_engine(db_url)
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT image_id, variant, value FROM bank_hashes "
                                 "WHERE algorithm = 'pdq' ORDER BY id")).all()
    engine.dispose()
    codes = np.frombuffer(bytes.fromhex("".join(r[2] for r in rows)), dtype=np.uint8)
    ids = np.array([r[0] * VARIANT_SLOTS + VARIANT_CODES[r[1]] for r in rows], dtype=np.int64)
    return codes.reshape(len(rows), 32), ids


def image_cases(db_url: str, image_ids: set[int]) -> dict[int, str]:
    """The case reference of each registered picture."""
    from sqlalchemy import create_engine, text

    engine = create_engine(db_url)
    out: dict[int, str] = {}
    ordered = sorted(image_ids)
    with engine.connect() as conn:
        for start in range(0, len(ordered), 500):
            chunk = ordered[start:start + 500]
            marks = ",".join(str(int(i)) for i in chunk)
            out.update(conn.execute(text(
                "SELECT registered_images.id, cases.ref FROM registered_images JOIN cases "
                f"ON cases.id = registered_images.case_id WHERE registered_images.id IN ({marks})"
            )).all())
    engine.dispose()
    return out


@dataclass
class Planted:
    """A bank made for a lookup benchmark and the queries against it."""

    meta: dict[str, Any]  # what ensure_bank reports of the bank
    codes: np.ndarray  # every banked PDQ code ...
    ids: np.ndarray  # ... and its image id
    queries: np.ndarray  # PDQ codes to look up
    planted: dict[int, int]  # query number -> the image id it is a near copy of
    rng: np.random.Generator  # the generator that drew them, for more draws


def bank_and_queries(settings: Settings, args: Any, distance: int, seed_offset: int,
                     log: Any) -> Planted:
    """The bank ``add_bank_options`` asks for (made once, then reused) and ``args.queries``
    queries, ``args.planted_share`` of them copies of banked codes ``distance`` bits away."""
    spec = BankSpec(images=args.hashes // args.variants, variants=args.variants, seed=args.seed)
    meta = ensure_bank(settings, spec, log=log)
    codes, ids = bank_pdq(settings.db_url)
    rng = np.random.default_rng(args.seed + seed_offset)
    queries, planted = near_copies(codes, ids, args.queries,
                                   int(args.queries * args.planted_share), distance, rng)
    return Planted(meta, codes, ids, queries, planted, rng)
