"""A multi-image annotation project in one SQLite file: images, masks, labels, undo, resume.

Every accepted edit is one transaction, committed (and, with ``synchronous=FULL``, on disk)
before the call returns, so a crash, a killed server or a reloaded page loses nothing that
was reported saved. The file is in WAL mode: readers never block the writer, and writes
take the lock up front (``BEGIN IMMEDIATE``) and wait for it (``busy_timeout``), so a second
process writing the same project waits its turn instead of failing or corrupting the file.

What is stored, per image: where its pixels are (a server path, or the uploaded bytes
themselves) and their content hash; its annotations, one row per mask, holding the
annotation document's records (``AnnotationDocument.records()``: COCO RLE counts plus every
field, z-order in a column); its status (done / pending) and how far batch pre-labelling got.
Per project: categories and a small key/value state (current image, UI preferences).

Undo survives restarts through a per-image revision log: every save stores, for each mask it
added, changed or removed, the version the annotations table no longer holds (undo and redo
swap it with the table's), plus the z-order before and after.
``undo``/``redo`` move the image along that log (a head pointer, like the document's cursor)
and a save after an undo drops the redone branch, exactly like ``AnnotationDocument``. Storing
differences, not snapshots, keeps a one-mask edit a few KB however many masks the image has.
The app edits its in-memory document, saves it, and for undo asks the store (which knows
the history from before a restart, too) and rebuilds the document from the records returned.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

from annotator.annotations.classes import ClassList
from annotator.formats.images import DEFAULT_MAX_PIXELS, ImageError, file_sha256, load_image, oriented_size
from annotator.projects.records import (
    Category,
    ImageInfo,
    Revision,
    SavedRows,
    UndoState,
    annotations_of,
    canonical_json,
    encode_row,
    full_record,
    split_full_record,
)
from annotator.projects.schema import APPLICATION_ID, SCHEMA_VERSION, migrate

IMAGE_STATUSES = ("pending", "done")
DEFAULT_MAX_HISTORY = 200
DEFAULT_BUSY_TIMEOUT_S = 30.0
PROJECT_SUFFIX = ".annotator"


class ProjectError(RuntimeError):
    """The project file cannot be used as asked; the message says why."""


class ConflictError(ProjectError):
    """Someone else saved this image since the caller loaded it."""


class Project:
    """One project file. Thread-safe (one connection behind a lock); many processes may open
    the same file, and their writes are serialised by SQLite.

    ``Project(path)`` opens the file, creating it when missing (``create=False`` forbids that),
    and upgrades an older schema in place.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        create: bool = True,
        max_history: int = DEFAULT_MAX_HISTORY,
        busy_timeout: float = DEFAULT_BUSY_TIMEOUT_S,
    ):
        self.path = Path(path)
        if max_history < 1:
            raise ValueError("max_history must be at least 1")
        self.max_history = int(max_history)
        if not self.path.exists():
            if not create:
                raise ProjectError(f"no project file at {self.path}")
            if not self.path.parent.is_dir():
                raise ProjectError(f"cannot create {self.path}: {self.path.parent} is not a directory")
        self._lock = threading.RLock()
        self._saved: dict[int, SavedRows] = {}  # per image: the rows as this connection last saved them
        try:
            self._conn = sqlite3.connect(self.path, timeout=busy_timeout, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as e:
            raise ProjectError(f"cannot open {self.path}: {e}") from None
        try:
            self._setup(busy_timeout)
        except BaseException:
            self._conn.close()
            raise

    def _setup(self, busy_timeout: float) -> None:
        c = self._conn
        try:
            c.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
            with self._read():  # refuse a foreign file before changing anything in it
                self._check_identity(c)
            self._enable_wal(time.monotonic() + busy_timeout)
            c.execute("PRAGMA synchronous = FULL")  # a commit is on disk when it returns
            c.execute("PRAGMA foreign_keys = ON")
            with self._write():  # a file another process is creating is ready once we get the lock
                version = self._check_identity(c)
                if version > SCHEMA_VERSION:
                    raise ProjectError(
                        f"{self.path} was written by a newer annotator (schema {version}, this one "
                        f"knows up to {SCHEMA_VERSION}); upgrade annotator to open it"
                    )
                if version < SCHEMA_VERSION:
                    c.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                    migrate(c, version)
        except sqlite3.DatabaseError as e:
            if isinstance(e, sqlite3.OperationalError) and "locked" in str(e):
                raise ProjectError(f"{self.path} is locked by another program: {e}") from None
            raise ProjectError(f"{self.path} is not an annotator project ({e})") from None

    def _check_identity(self, c: sqlite3.Connection) -> int:
        """The schema version of an annotator project (0 for an empty file); anything else is
        refused. Call inside a transaction, so the reads agree with each other."""
        app_id = c.execute("PRAGMA application_id").fetchone()[0]
        has_tables = c.execute("SELECT count(*) FROM sqlite_schema").fetchone()[0] > 0
        if has_tables and app_id != APPLICATION_ID:
            raise ProjectError(f"{self.path} is an SQLite file but not an annotator project")
        return c.execute("PRAGMA user_version").fetchone()[0]

    def _enable_wal(self, deadline: float) -> None:
        """Switch the file to WAL (it stays so). On a new file this needs a moment alone with
        it, and SQLite answers "busy" instead of waiting while another process creates it."""
        while True:
            try:
                mode = self._conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            except sqlite3.OperationalError as e:
                if "locked" not in str(e) or time.monotonic() > deadline:
                    raise
                mode = None
            if mode is not None and mode.lower() == "wal":
                return
            if mode is not None and time.monotonic() > deadline:
                raise ProjectError(
                    f"{self.path}: SQLite refused WAL mode (got {mode!r}); put the project on a local disk"
                )
            time.sleep(0.01)

    # -- transactions ------------------------------------------------------------------------
    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; the database lock is taken at the start, so the reads in it
        see the latest committed state and nobody can change it before we commit."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    @contextlib.contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """A consistent snapshot across several SELECTs."""
        with self._lock:
            self._conn.execute("BEGIN")
            try:
                yield self._conn
            finally:
                self._conn.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> Project:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def schema_version(self) -> int:
        with self._lock:
            return self._conn.execute("PRAGMA user_version").fetchone()[0]

    def integrity_check(self) -> list[str]:
        """SQLite's own check of the file plus foreign keys; empty when all is well."""
        with self._lock:
            problems = [r[0] for r in self._conn.execute("PRAGMA integrity_check") if r[0] != "ok"]
            problems += [f"foreign key: {r}" for r in self._conn.execute("PRAGMA foreign_key_check")]
            return problems

    # -- images ------------------------------------------------------------------------------
    def add_image(self, source, *, name: str | None = None) -> ImageInfo:
        """Add an image: a path (a file on the server, referenced in place) or the bytes of an
        upload (stored in the project). The same picture added twice, under any name, is
        added once: the existing entry is returned."""
        return self.add_images([source], names=None if name is None else [name])[0]

    def add_images(
        self, sources: Sequence, *, names: Sequence[str] | None = None, errors: dict | None = None
    ) -> list[ImageInfo]:
        """Add many images in one transaction, in the given order.

        An unreadable image fails the whole call, unless ``errors`` (a dict) is given: then it
        is skipped and ``errors[source]`` says why.
        """
        if names is not None and len(names) != len(sources):
            raise ValueError(f"{len(sources)} images but {len(names)} names")
        prepared = []
        for k, source in enumerate(sources):
            try:
                prepared.append(self._prepare_image(source, names[k] if names else None))
            except ImageError as e:
                if errors is None:
                    raise
                errors[source] = str(e)
        ids = []
        with self._write() as c:
            pos = c.execute("SELECT coalesce(max(position), -1) FROM images").fetchone()[0]
            for name, path, digest, w, h, data in prepared:
                row = c.execute("SELECT id FROM images WHERE sha256 = ?", (digest,)).fetchone()
                if row:
                    ids.append(row[0])
                    continue
                if data is not None:
                    c.execute("INSERT OR IGNORE INTO image_data (sha256, bytes) VALUES (?, ?)", (digest, data))
                pos += 1
                cur = c.execute(
                    "INSERT INTO images (name, path, sha256, width, height, position, added_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (name, path, digest, w, h, pos, time.time()),
                )
                ids.append(cur.lastrowid)
        return [self.image(i) for i in ids]

    @staticmethod
    def _prepare_image(source, name: str | None):
        """(name, path, sha256, width, height, bytes or None) of an image about to be added."""
        if isinstance(source, (bytes, bytearray, memoryview)):
            data = bytes(source)
            if not data:
                raise ImageError("the upload is empty (0 bytes)")
            h, w = oriented_size(io.BytesIO(data))
            digest = hashlib.sha256(data).hexdigest()
            return name or f"upload-{digest[:12]}", None, digest, w, h, data
        if isinstance(source, (str, os.PathLike)):
            path = Path(source).expanduser().resolve()
            if not path.is_file():
                raise ImageError(f"no such file: {source}")
            h, w = oriented_size(path)
            return name or path.name, str(path), file_sha256(path), w, h, None
        raise TypeError(f"an image is a path or bytes, got {type(source).__name__}")

    _IMAGE_QUERY = """
        SELECT i.id, i.name, i.path, i.sha256, i.width, i.height, i.status, i.position, i.rev,
               count(a.ann_id), coalesce(sum(a.review = 'accepted'), 0), i.prelabel
        FROM images i LEFT JOIN annotations a ON a.image_id = i.id
    """

    @staticmethod
    def _image_info(row) -> ImageInfo:
        return ImageInfo(*row[:11], prelabel=None if row[11] is None else json.loads(row[11]))

    def images(self) -> list[ImageInfo]:
        """Every image in the order added, with per-image progress."""
        with self._lock:
            rows = self._conn.execute(self._IMAGE_QUERY + " GROUP BY i.id ORDER BY i.position").fetchall()
        return [self._image_info(r) for r in rows]

    def image(self, image_id: int) -> ImageInfo:
        with self._lock:
            row = self._conn.execute(self._IMAGE_QUERY + " WHERE i.id = ? GROUP BY i.id", (image_id,)).fetchone()
        if row is None:
            raise KeyError(f"no image with id {image_id} in {self.path.name}")
        return self._image_info(row)

    def find_image(self, source) -> ImageInfo | None:
        """The entry for a file or upload already in the project, by content; None if absent."""
        if isinstance(source, (bytes, bytearray, memoryview)):
            digest = hashlib.sha256(bytes(source)).hexdigest()
        else:
            digest = file_sha256(Path(source).expanduser())
        with self._lock:
            row = self._conn.execute("SELECT id FROM images WHERE sha256 = ?", (digest,)).fetchone()
        return None if row is None else self.image(row[0])

    def load_pixels(self, image_id: int, *, max_pixels: int | None = DEFAULT_MAX_PIXELS):
        """The image as an (H, W, 3) uint8 RGB array. A server file that changed since it was
        added is an error: its masks would no longer match it. Images over ``max_pixels``
        are refused before decoding (``ImageError``)."""
        info = self.image(image_id)
        if info.path is None:
            with self._lock:
                data = self._conn.execute("SELECT bytes FROM image_data WHERE sha256 = ?", (info.sha256,)).fetchone()[0]
            return load_image(data, max_pixels=max_pixels)
        path = Path(info.path)
        if not path.is_file():
            raise ImageError(f"{info.name} is no longer at {info.path}")
        data = path.read_bytes()
        if hashlib.sha256(data).hexdigest() != info.sha256:
            raise ImageError(
                f"{info.path} changed since it was added to the project; its masks may not match it any more"
            )
        return load_image(data, max_pixels=max_pixels)

    def set_status(self, image_id: int, status: str) -> None:
        if status not in IMAGE_STATUSES:
            raise ValueError(f"status must be one of {IMAGE_STATUSES}, got {status!r}")
        with self._write() as c:
            if c.execute("UPDATE images SET status = ? WHERE id = ?", (status, image_id)).rowcount == 0:
                raise KeyError(f"no image with id {image_id}")

    def remove_image(self, image_id: int) -> None:
        """Remove an image with its annotations and history (uploaded bytes too)."""
        with self._write() as c:
            row = c.execute("SELECT sha256 FROM images WHERE id = ?", (image_id,)).fetchone()
            if row is None:
                raise KeyError(f"no image with id {image_id}")
            c.execute("DELETE FROM images WHERE id = ?", (image_id,))
            self._remember(image_id, None)
            c.execute("DELETE FROM image_data WHERE sha256 = ?", (row[0],))

    # -- annotations -------------------------------------------------------------------------
    def records(self, image_id: int) -> list[dict]:
        """The image's annotation records, bottom first, each with its ``z``: exactly what
        ``AnnotationDocument.from_records`` takes."""
        with self._read() as c:
            self._image_row(c, image_id)
            return self._records(c, image_id)

    @staticmethod
    def _records(c: sqlite3.Connection, image_id: int) -> list[dict]:
        rows = c.execute(
            "SELECT z, counts, record FROM annotations WHERE image_id = ? ORDER BY z", (image_id,)
        ).fetchall()
        return [{**json.loads(rec), "counts": counts, "z": z} for z, counts, rec in rows]

    @staticmethod
    def _image_row(c: sqlite3.Connection, image_id: int) -> tuple[int, int, int]:
        row = c.execute("SELECT height, width, rev FROM images WHERE id = ?", (image_id,)).fetchone()
        if row is None:
            raise KeyError(f"no image with id {image_id}")
        return row

    def load_document(self, image_id: int, **kwargs):
        """An ``AnnotationDocument`` holding the image's annotations (its undo history starts
        here; ``undo``/``redo`` below reach back past it)."""
        from annotator.annotations.document import AnnotationDocument

        with self._read() as c:
            h, w, _ = self._image_row(c, image_id)
            records = self._records(c, image_id)
        return AnnotationDocument.from_records(h, w, records, image_id=image_id, **kwargs)

    def save(
        self,
        image_id: int,
        annotations,
        *,
        action: str | None = None,
        base_rev: int | None = None,
        prelabel: Mapping | None = None,
        state: Mapping[str, object] | None = None,
    ) -> int:
        """Store the image's annotations: an ``AnnotationDocument``, or records as its
        ``records()`` gives them (validated like ``Annotation.from_record``; area and bbox
        are recomputed from the mask).

        One transaction, committed before returning; the change (only the masks that differ)
        becomes one undo step named ``action`` (default: the document's last action). Returns
        the new revision; nothing changed, nothing is written and the current one is returned.
        ``base_rev``, when given, must be the revision the caller loaded: if another session
        saved since, ``ConflictError`` is raised and nothing is written. ``prelabel`` (the
        batch run's settings) marks the image pre-labelled in the same transaction, so a batch
        run killed at any moment never adds an image's masks twice; ``state`` (key -> JSON value,
        as ``set_state``) is written in that transaction too.
        """
        if hasattr(annotations, "annotations"):  # an AnnotationDocument
            action = action or annotations.undo_action
            items = annotations.annotations
        else:
            items = annotations_of(annotations)
        action = action or "edit"
        with self._write() as c:
            h, w, head = self._image_row(c, image_id)
            _check_base(image_id, head, base_rev)
            saved = self._saved_rows(c, image_id, head)
            old, old_order = saved.rows, saved.order
            new: dict[int, tuple[str, str]] = {}
            new_objects = {}
            order = []
            for item in items:
                if item.id in new:
                    raise ValueError(f"annotation id {item.id} appears twice")
                if saved.objects.get(item.id) is item:
                    new[item.id] = old[item.id]  # the same immutable record: no re-encoding
                else:
                    new[item.id] = encode_row(item, (h, w))
                new_objects[item.id] = item
                order.append(item.id)
            changes = [(i, old.get(i), new.get(i)) for i in sorted(set(old) | set(new)) if old.get(i) != new.get(i)]
            if prelabel is not None:
                c.execute(
                    "UPDATE images SET prelabel = ? WHERE id = ?",
                    (canonical_json({**prelabel, "at": time.time()}), image_id),
                )
            for key, value in (state or {}).items():
                c.execute("INSERT OR REPLACE INTO state (key, value) VALUES (?, ?)", (key, canonical_json(value)))
            rev = head
            if changes or order != old_order:
                rev = head + 1
                c.execute("DELETE FROM revisions WHERE image_id = ? AND rev >= ?", (image_id, rev))
                c.execute(
                    "INSERT INTO revisions VALUES (?, ?, ?, ?, ?, ?)",
                    (image_id, rev, action, time.time(), canonical_json(old_order), canonical_json(order)),
                )
                c.executemany(
                    "INSERT INTO revision_changes VALUES (?, ?, ?, ?)",
                    [(image_id, rev, i, full_record(before)) for i, before, _ in changes],
                )
                self._apply(c, image_id, [(i, after) for i, _, after in changes], old_order, order)
                self._register_labels(
                    c, (json.loads(after[1]).get("label") for _, _, after in changes if after is not None)
                )
                c.execute("UPDATE images SET rev = ? WHERE id = ?", (rev, image_id))
                c.execute("DELETE FROM revisions WHERE image_id = ? AND rev <= ?", (image_id, rev - self.max_history))
            data_version = saved.data_version
        self._remember(image_id, SavedRows(data_version, rev, new, new_objects, order))
        return rev

    def _saved_rows(self, c: sqlite3.Connection, image_id: int, head: int) -> SavedRows:
        """The image's stored rows: remembered from this connection's last save when no other
        connection has committed since (PRAGMA data_version), otherwise read back."""
        data_version = c.execute("PRAGMA data_version").fetchone()[0]
        saved = self._saved.get(image_id)
        if saved is not None and saved.data_version == data_version and saved.rev == head:
            return saved
        rows = c.execute(
            "SELECT ann_id, counts, record FROM annotations WHERE image_id = ? ORDER BY z", (image_id,)
        ).fetchall()
        return SavedRows(data_version, head, {i: (counts, rec) for i, counts, rec in rows}, {}, [r[0] for r in rows])

    def _remember(self, image_id: int, saved: SavedRows | None) -> None:
        with self._lock:
            self._saved.pop(image_id, None)
            if saved is not None:
                self._saved[image_id] = saved
                while len(self._saved) > 4:  # the images being edited now
                    self._saved.pop(next(iter(self._saved)))

    @staticmethod
    def _apply(c: sqlite3.Connection, image_id: int, changes, old_order: Sequence[int], order: Sequence[int]) -> None:
        """Write changed rows (``None``: delete) and the z of every mask whose z changed."""
        for ann_id, value in changes:
            if value is None:
                c.execute("DELETE FROM annotations WHERE image_id = ? AND ann_id = ?", (image_id, ann_id))
            else:
                c.execute(
                    "INSERT OR REPLACE INTO annotations (image_id, ann_id, z, counts, record) VALUES (?, ?, -1, ?, ?)",
                    (image_id, ann_id, *value),
                )
        written = {ann_id for ann_id, value in changes if value is not None}
        old_z = {ann_id: z for z, ann_id in enumerate(old_order)}
        c.executemany(
            "UPDATE annotations SET z = ? WHERE image_id = ? AND ann_id = ?",
            [(z, image_id, ann_id) for z, ann_id in enumerate(order) if ann_id in written or old_z.get(ann_id) != z],
        )

    def _step(self, image_id: int, forward: bool, base_rev: int | None) -> list[dict] | None:
        self._remember(image_id, None)
        with self._write() as c:
            _, _, head = self._image_row(c, image_id)
            _check_base(image_id, head, base_rev)
            rev = head + 1 if forward else head
            row = c.execute(
                "SELECT order_before, order_after FROM revisions WHERE image_id = ? AND rev = ?", (image_id, rev)
            ).fetchone()
            if row is None:
                return None
            changes = c.execute(
                "SELECT ann_id, other FROM revision_changes WHERE image_id = ? AND rev = ?", (image_id, rev)
            ).fetchall()
            changed = {i for i, _ in changes}
            current = {
                i: (counts, rec)
                for i, counts, rec in c.execute(
                    "SELECT ann_id, counts, record FROM annotations WHERE image_id = ?", (image_id,)
                )
                if i in changed
            }
            # swap: the log's version goes into the table and the table's into the log
            c.executemany(
                "UPDATE revision_changes SET other = ? WHERE image_id = ? AND rev = ? AND ann_id = ?",
                [(full_record(current.get(i)), image_id, rev, i) for i, _ in changes],
            )
            before_order, after_order = json.loads(row[0]), json.loads(row[1])
            self._apply(
                c,
                image_id,
                [(i, split_full_record(other)) for i, other in changes],
                before_order if forward else after_order,
                after_order if forward else before_order,
            )
            c.execute("UPDATE images SET rev = ? WHERE id = ?", (rev if forward else head - 1, image_id))
            return self._records(c, image_id)

    def undo(self, image_id: int, *, base_rev: int | None = None) -> list[dict] | None:
        """Step the image back one saved edit (even one saved before a restart); returns the
        records now current, or None when there is nothing to undo. Committed on return.
        ``base_rev``, as for ``save``: the revision the caller shows; if another session
        saved or stepped since, ``ConflictError`` is raised and nothing changes (an undo
        must never take back an edit its caller has not seen)."""
        return self._step(image_id, False, base_rev)

    def redo(self, image_id: int, *, base_rev: int | None = None) -> list[dict] | None:
        return self._step(image_id, True, base_rev)

    def undo_state(self, image_id: int) -> UndoState:
        with self._read() as c:
            _, _, head = self._image_row(c, image_id)
            actions = dict(
                c.execute(
                    "SELECT rev, action FROM revisions WHERE image_id = ? AND rev IN (?, ?)", (image_id, head, head + 1)
                )
            )
        return UndoState(head, actions.get(head), actions.get(head + 1))

    def history(self, image_id: int) -> list[Revision]:
        """The image's stored edits, oldest first (those past the head were undone)."""
        with self._read() as c:
            self._image_row(c, image_id)
            return [
                Revision(*r)
                for r in c.execute(
                    "SELECT rev, action, created_at FROM revisions WHERE image_id = ? ORDER BY rev", (image_id,)
                )
            ]

    # -- export ------------------------------------------------------------------------------
    def export_coco(
        self,
        path: str | os.PathLike,
        *,
        image_ids: Sequence[int] | None = None,
        include_rejected: bool = False,
        model: str | None = None,
        parameters: Mapping | None = None,
    ) -> Path:
        """Write the project (or the images ``image_ids``, in that order) as one COCO instances
        file with RLE masks, atomically. Category ids are the project's; image ids too."""
        from annotator.formats import coco

        return coco.save(self._dataset(image_ids, include_rejected, model, parameters), path)

    def export(
        self,
        path: str | os.PathLike,
        fmt: str = "coco-rle",
        *,
        tolerance: float = 0.0,
        image_ids: Sequence[int] | None = None,
        include_rejected: bool = False,
        model: str | None = None,
        parameters: Mapping | None = None,
    ):
        """Write the project (or the images ``image_ids``) as ``fmt`` (``formats.convert.FORMATS``:
        COCO RLE or polygons, YOLO, labelme, VOC) to ``path`` (a JSON file for COCO, a new folder or
        a ``.zip`` for the others, with the images), read it back and check it; returns the
        ``ExportReport`` (``report.line()``: what the export cost). Class ids are the project's
        categories in id order, so a class keeps its id, YOLO index and VOC value in every export;
        unlabeled masks get the category ``object``, stored in the project the first time."""
        from annotator.formats import convert

        dataset = self._dataset(image_ids, include_rejected, model, parameters, store_default_category=True)
        return convert.export(dataset, path, fmt, tolerance=tolerance, images=self._image_source)

    def _dataset(
        self,
        image_ids: Sequence[int] | None,
        include_rejected: bool,
        model: str | None,
        parameters: Mapping | None,
        *,
        store_default_category: bool = False,
    ):
        """The project (or the images ``image_ids``, in that order) as a COCO dataset with the
        project's category ids; ``store_default_category`` first gives unlabeled masks'
        category its id in the project, so every export of it keeps that id."""
        from annotator.formats import coco

        with self._read() as c:
            infos = {i.id: i for i in self.images()}
            ids = [i for i in infos] if image_ids is None else list(image_ids)
            missing = [i for i in ids if i not in infos]
            if missing:
                raise KeyError(f"no image with id {missing[0]} in {self.path.name}")
            unlabeled = (
                c.execute(
                    f"SELECT count(*) FROM annotations WHERE label IS NULL AND image_id IN "
                    f"({','.join('?' * len(ids))})" + ("" if include_rejected else " AND review != 'rejected'"),
                    ids,
                ).fetchone()[0]
                if ids and store_default_category
                else 0
            )
        if unlabeled:
            self.add_category(coco.DEFAULT_CATEGORY)  # gets its id once, like any label
        with self._read() as c:
            cats = [{"id": k.id, "name": k.name, "supercategory": k.supercategory or ""} for k in self.categories()]
            records = {i: self._records(c, i) for i in ids}
        items = (
            (self._document(infos[i], records.pop(i)), {"id": i, "file_name": infos[i].name, "sha256": infos[i].sha256})
            for i in ids
        )
        dataset = coco.from_documents(
            items,
            categories=cats,
            model=model,
            parameters=parameters,
            include_rejected=include_rejected,
            description=f"annotator project {self.path.name}",
        )
        return dataset

    def _image_source(self, image: Mapping):
        """The bytes of a project image (uploaded, or its server file if unchanged); None when
        the file is gone or changed (its masks would not match it)."""
        info = self.image(image["id"])
        if info.path is None:
            with self._lock:
                row = self._conn.execute("SELECT bytes FROM image_data WHERE sha256 = ?", (info.sha256,)).fetchone()
            return None if row is None else row[0]
        try:
            data = Path(info.path).read_bytes()
        except OSError:
            return None
        return data if hashlib.sha256(data).hexdigest() == info.sha256 else None

    @staticmethod
    def _document(info: ImageInfo, records: list[dict]):
        from annotator.annotations.document import AnnotationDocument

        return AnnotationDocument.from_records(info.height, info.width, records, image_id=info.id)

    # -- categories --------------------------------------------------------------------------
    def categories(self) -> list[Category]:
        with self._lock:
            return [
                Category(*r)
                for r in self._conn.execute(
                    "SELECT id, name, supercategory, color, shortcut FROM categories ORDER BY id"
                )
            ]

    def add_category(self, name: str, *, supercategory: str | None = None, color: str | None = None) -> Category:
        """Add a category (labels used in saved annotations are added automatically); an
        existing name keeps its id and gets the given supercategory/color."""
        name = str(name).strip()
        if not name:
            raise ValueError("a category needs a name")
        with self._write() as c:
            c.execute(
                "INSERT INTO categories (name, supercategory, color) VALUES (?, ?, ?) "
                "ON CONFLICT (name) DO UPDATE SET supercategory = coalesce(excluded.supercategory, "
                "supercategory), color = coalesce(excluded.color, color)",
                (name, supercategory, color),
            )
            return Category(
                *c.execute(
                    "SELECT id, name, supercategory, color, shortcut FROM categories WHERE name = ?", (name,)
                ).fetchone()
            )

    def classes(self):
        """The categories as the annotation class list (ids are the COCO category ids)."""
        return ClassList.from_records(
            {"id": k.id, "name": k.name, "color": k.color, "shortcut": k.shortcut} for k in self.categories()
        )

    def save_classes(self, classes) -> None:
        """Store a ``ClassList`` as the categories, in one transaction: names, colours and keys
        of existing ids change in place, new ids are added. Categories the list lacks are kept
        (saved masks may use them), but lose their shortcut."""
        rows = [(c.id, c.name, c.color, c.shortcut) for c in classes]
        with self._write() as c:
            c.execute("UPDATE categories SET shortcut = NULL")
            # free the names first, so two classes can swap names in one save
            c.executemany("UPDATE categories SET name = '#renaming ' || id WHERE id = ?", [(r[0],) for r in rows])
            c.executemany(
                "INSERT INTO categories (id, name, color, shortcut) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (id) DO UPDATE SET name = excluded.name, color = excluded.color, "
                "shortcut = excluded.shortcut",
                rows,
            )

    @staticmethod
    def _register_labels(c: sqlite3.Connection, labels: Iterable) -> None:
        # in order of first use (by mask id), not set order: string hashes differ from run to
        # run, and a class's id must not depend on that
        c.executemany(
            "INSERT OR IGNORE INTO categories (name) VALUES (?)",
            [(str(lb),) for lb in dict.fromkeys(labels) if lb is not None and str(lb).strip()],
        )

    # -- key/value state ---------------------------------------------------------------------
    def get_state(self, key: str, default=None):
        """A value saved with ``set_state`` (e.g. ``"current_image"``, UI preferences)."""
        with self._lock:
            row = self._conn.execute("SELECT value FROM state WHERE key = ?", (key,)).fetchone()
        return default if row is None else json.loads(row[0])

    def set_state(self, key: str, value) -> None:
        """Save a JSON-serialisable value under ``key`` (None deletes it); committed on return."""
        with self._write() as c:
            if value is None:
                c.execute("DELETE FROM state WHERE key = ?", (key,))
            else:
                c.execute("INSERT OR REPLACE INTO state (key, value) VALUES (?, ?)", (key, canonical_json(value)))


def _check_base(image_id: int, head: int, base_rev: int | None) -> None:
    if base_rev is not None and base_rev != head:
        raise ConflictError(
            f"image {image_id} was changed by another session (revision {head}, you had "
            f"{base_rev}); reload it before editing"
        )
