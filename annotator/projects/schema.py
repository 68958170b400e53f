"""The project file's schema: tables, and the migrations that made each version.

A project file carries its schema version (``PRAGMA user_version``) and an application id
that marks it as ours; ``migrate`` brings an older file up to ``SCHEMA_VERSION`` inside the
caller's transaction.
"""

from __future__ import annotations

import sqlite3

# "ANNO" as a big-endian int: marks the file as an annotator project (PRAGMA application_id).
APPLICATION_ID = 0x414E4E4F

# Each entry upgrades the file from version ``i`` to ``i + 1`` (PRAGMA user_version); append
# new entries, never edit old ones: files in the wild were made by them.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    # 1: images, their annotations, categories, key/value state
    (
        """CREATE TABLE images (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL,
            path TEXT,  -- absolute path of a file on the server; NULL when the bytes are stored
            sha256 TEXT NOT NULL UNIQUE,
            width INTEGER NOT NULL CHECK (width > 0),
            height INTEGER NOT NULL CHECK (height > 0),
            status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'done')),
            position INTEGER NOT NULL,  -- the order images were added in
            added_at REAL NOT NULL,
            prelabel TEXT  -- JSON: settings and time of the batch segment-everything run
        )""",
        "CREATE INDEX images_position ON images (position)",
        """CREATE TABLE image_data (
            sha256 TEXT PRIMARY KEY,
            bytes BLOB NOT NULL
        ) WITHOUT ROWID""",
        """CREATE TABLE categories (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL UNIQUE,
            supercategory TEXT,
            color TEXT
        )""",
        """CREATE TABLE annotations (
            image_id INTEGER NOT NULL REFERENCES images (id) ON DELETE CASCADE,
            ann_id INTEGER NOT NULL,
            z INTEGER NOT NULL,
            counts TEXT NOT NULL,  -- COCO compressed RLE
            record TEXT NOT NULL,  -- JSON: every other field of the document's record
            review TEXT GENERATED ALWAYS AS (json_extract(record, '$.review')) VIRTUAL,
            label TEXT GENERATED ALWAYS AS (json_extract(record, '$.label')) VIRTUAL,
            PRIMARY KEY (image_id, ann_id)
        ) WITHOUT ROWID""",
        """CREATE TABLE state (
            key TEXT PRIMARY KEY,
            value TEXT NOT NULL  -- JSON
        ) WITHOUT ROWID""",
    ),
    # 2: the undo log, so undo/redo survive a restart
    (
        "ALTER TABLE images ADD COLUMN rev INTEGER NOT NULL DEFAULT 0",
        """CREATE TABLE revisions (
            image_id INTEGER NOT NULL REFERENCES images (id) ON DELETE CASCADE,
            rev INTEGER NOT NULL,
            action TEXT NOT NULL,
            created_at REAL NOT NULL,
            order_before TEXT NOT NULL,  -- JSON list of ids, bottom first
            order_after TEXT NOT NULL,
            PRIMARY KEY (image_id, rev)
        ) WITHOUT ROWID""",
        # For each mask a revision changed, the version of it that the annotations table does
        # not hold: before the revision while it is applied, after it once it is undone.
        # Undo and redo swap the two, so every version of a mask is stored once.
        """CREATE TABLE revision_changes (
            image_id INTEGER NOT NULL,
            rev INTEGER NOT NULL,
            ann_id INTEGER NOT NULL,
            other TEXT,  -- JSON record with counts, without z; NULL: the mask did not exist
            PRIMARY KEY (image_id, rev, ann_id),
            FOREIGN KEY (image_id, rev) REFERENCES revisions (image_id, rev) ON DELETE CASCADE
        ) WITHOUT ROWID""",
    ),
    # 3: the categories are the project's class list: a shortcut key 1-9 each (colour exists)
    (
        "ALTER TABLE categories ADD COLUMN shortcut INTEGER CHECK (shortcut BETWEEN 1 AND 9)",
        "CREATE UNIQUE INDEX categories_shortcut ON categories (shortcut) WHERE shortcut IS NOT NULL",
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)


def migrate(conn: sqlite3.Connection, version: int) -> int:
    """Apply the migrations after ``version`` inside the caller's transaction."""
    for target in range(version + 1, SCHEMA_VERSION + 1):
        for statement in MIGRATIONS[target - 1]:
            conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {target}")
    return SCHEMA_VERSION
