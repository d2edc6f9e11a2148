"""The model registry: which versions exist, which one is active, and the audited switches between them.

Shipped versions come from the installed modules (each builds its manifests from the model's
metadata file in the repo) and are registered on first use, the first version of a model active.
An admin may import another version (``tianfu ai register``); its files are copied under
``<var_dir>/models/<name>/<version>/``. Activating a version checks that its files still hash to
what was registered, deactivates the others of that name and announces the change on the bus as
``tianfu.ai.model_changed``. Modules ask :func:`active_model` each time they load a model, so a
switch takes effect on their next prediction.
"""

from __future__ import annotations

import logging
import re
import shutil
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from tianfu.core.audit.service import Actor, AuditLog
from tianfu.core.bus.outbox import enqueue
from tianfu.core.db import utcnow
from tianfu.core.errors import Conflict, Invalid, NotFound
from tianfu.core.model_registry.manifest import (
    ActiveModel,
    ModelManifest,
    manifest_from_json,
    manifest_to_json,
    sha256_of,
)
from tianfu.core.model_registry.models import ModelVersion
from tianfu.core.plugins import installed_modules

log = logging.getLogger(__name__)
SAFE_LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")  # names and versions become directory names


@lru_cache
def shipped_manifests() -> dict[tuple[str, str], ModelManifest]:
    found: dict[tuple[str, str], ModelManifest] = {}
    for module in installed_modules():
        if module.shipped_models is None:
            continue
        for manifest in module.shipped_models():
            found[(manifest.name, manifest.version)] = manifest
    return found


@lru_cache(maxsize=256)
def _hash_files(paths: tuple[Path, ...], stamps: tuple[tuple[int, int], ...]) -> str:
    del stamps  # part of the cache key only: a changed file is hashed again
    return sha256_of(paths)


def files_sha256(paths: Sequence[Path]) -> str:
    files = tuple(paths)
    return _hash_files(files, tuple((p.stat().st_mtime_ns, p.stat().st_size) for p in files))


def sync_shipped(session: Session) -> list[ModelVersion]:
    """Register shipped versions not yet in the table; a model seen for the first time becomes active,
    unless its module ships it switched off."""
    known = {(r.name, r.version): r for r in session.scalars(select(ModelVersion))}
    names_known = {name for name, _ in known}
    added = []
    for key, manifest in sorted(shipped_manifests().items()):
        row = known.get(key)
        if row is not None:
            if row.source == "shipped" and row.sha256 != (digest := files_sha256(manifest.files)):
                # An upgrade shipped new files under the same version number: record them, and say so.
                log.warning("shipped model %s %s has new files (sha256 %s)", row.name, row.version, digest)
                row.sha256, row.manifest = digest, manifest_to_json(manifest)
            continue
        row = ModelVersion(
            name=manifest.name,
            version=manifest.version,
            module=manifest.module,
            task=manifest.task,
            sha256=files_sha256(manifest.files),
            source="shipped",
            manifest=manifest_to_json(manifest),
            active=manifest.name not in names_known and manifest.active_on_install,
        )
        names_known.add(manifest.name)
        session.add(row)
        added.append(row)
    # An upgrade that replaced the active shipped version carries its successor: that one runs now.
    for row in known.values():
        if row.source == "shipped" and row.active and (row.name, row.version) not in shipped_manifests():
            successor = next((r for r in reversed(added) if r.name == row.name), None)
            row.active = False
            if successor is not None:
                successor.active = True
            log.warning(
                "shipped model %s %s is gone; now active: %s",
                row.name,
                row.version,
                successor.version if successor else "none",
            )
    session.flush()
    return added


def versions(session: Session, name: str | None = None) -> list[ModelVersion]:
    """Registered versions (of one model), oldest first; shipped ones not yet registered are added."""
    query = select(ModelVersion).order_by(ModelVersion.name, ModelVersion.registered_at, ModelVersion.version)
    if name is not None:
        query = query.where(ModelVersion.name == name)
    rows = list(session.scalars(query))
    known = {(r.name, r.version) for r in rows}
    if any(key not in known for key in shipped_manifests() if name is None or key[0] == name):
        try:
            with session.begin_nested():
                sync_shipped(session)
        except IntegrityError:  # another process registered them first
            pass
        rows = list(session.scalars(query))
    return rows


def manifest_of(row: ModelVersion) -> ModelManifest:
    if row.source == "shipped":
        shipped = shipped_manifests().get((row.name, row.version))
        if shipped is None:
            raise NotFound(f"model {row.name} {row.version} is registered but no longer shipped")
        return shipped
    return manifest_from_json(row.manifest, Path(row.directory))


def active_model(session: Session, name: str) -> ActiveModel | None:
    """The active version of a model, or None when an admin has switched the model off."""
    rows = versions(session, name)
    row = next((r for r in rows if r.active), None)
    if row is None:
        return None
    return model_of(row)


def model_of(row: ModelVersion) -> ActiveModel:
    """A registered version as a module loads it (whether active or not: validation runs any version)."""
    manifest = manifest_of(row)
    return ActiveModel(manifest=manifest, directory=manifest.directory)


def _lock(session: Session, name: str) -> None:
    """Serialise switches of one model: two at once must not leave two versions active (PostgreSQL; SQLite's
    BEGIN IMMEDIATE already serialises writers)."""
    session.execute(select(ModelVersion.id).where(ModelVersion.name == name).with_for_update())


def find_version(session: Session, name: str, version: str) -> ModelVersion:
    row = next((r for r in versions(session, name) if r.version == version), None)
    if row is None:
        raise NotFound(f"no model {name} version {version}")
    return row


def activate(
    session: Session, audit: AuditLog, *, actor: Actor, name: str, version: str, reason: str
) -> ModelVersion:
    """Make one version the active one (a rollback is activating an earlier version)."""
    if not reason.strip():
        raise Invalid("say why the model version changes")
    _lock(session, name)
    row = find_version(session, name, version)
    manifest = manifest_of(row)
    if files_sha256(manifest.files) != row.sha256:
        raise Conflict(f"the files of {name} {version} changed since it was registered; refusing to activate")
    previous = [r for r in versions(session, name) if r.active and r.id != row.id]
    now = utcnow()
    for other in previous:
        other.active, other.changed_at, other.changed_by_id = False, now, actor.user_id
    row.active, row.changed_at, row.changed_by_id = True, now, actor.user_id
    _announce(session, audit, actor, row, "ai_model.activate", reason, [p.version for p in previous])
    return row


def deactivate(session: Session, audit: AuditLog, *, actor: Actor, name: str, reason: str) -> None:
    """Switch a model off: the module stops running it until a version is activated again."""
    if not reason.strip():
        raise Invalid("say why the model is switched off")
    _lock(session, name)
    rows = [r for r in versions(session, name) if r.active]
    if not rows:
        raise Conflict(f"model {name} has no active version")
    now = utcnow()
    for row in rows:
        row.active, row.changed_at, row.changed_by_id = False, now, actor.user_id
    _announce(session, audit, actor, rows[0], "ai_model.deactivate", reason, [r.version for r in rows])


def register(
    session: Session, audit: AuditLog, *, actor: Actor, manifest: ModelManifest, var_dir: Path
) -> ModelVersion:
    """Import a version from a directory: copy its files into the registry's store, inactive."""
    for label, value in (("name", manifest.name), ("version", manifest.version)):
        if not SAFE_LABEL.fullmatch(value):
            raise Invalid(f"model {label} {value!r} must be letters, digits, '.', '_' or '-' (at most 64)")
    if session.scalar(
        select(ModelVersion.id).where(
            ModelVersion.name == manifest.name, ModelVersion.version == manifest.version
        )
    ):
        raise Conflict(f"model {manifest.name} version {manifest.version} is already registered")
    missing = [str(p) for p in manifest.files if not p.is_file()]
    if missing:
        raise Invalid(f"model files missing: {', '.join(missing)}")
    target = (var_dir / "models" / manifest.name / manifest.version).resolve()
    target.mkdir(parents=True, exist_ok=True)
    for path in manifest.files:
        shutil.copy2(path, target / path.name)
    stored = manifest_from_json(manifest_to_json(manifest), target)
    row = ModelVersion(
        name=manifest.name,
        version=manifest.version,
        module=manifest.module,
        task=manifest.task,
        sha256=files_sha256(stored.files),
        source="imported",
        directory=str(target),
        manifest=manifest_to_json(stored),
        active=False,
        changed_by_id=actor.user_id,
    )
    session.add(row)
    session.flush()
    _announce(session, audit, actor, row, "ai_model.register", "", [])
    return row


def _announce(
    session: Session,
    audit: AuditLog,
    actor: Actor,
    row: ModelVersion,
    action: str,
    reason: str,
    previous: list[str],
) -> None:
    audit.record(
        session,
        actor=actor,
        action=action,
        action_type="U" if action != "ai_model.register" else "C",
        resource_type="ModelVersion",
        resource_id=row.id,
        purpose="HOPERAT",
        detail={
            "model": row.name,
            "version": row.version,
            "previous": previous,
            "reason": reason,
            "sha256": row.sha256,
        },
    )
    enqueue(
        session,
        "tianfu.ai.model_changed",
        {"model": row.name, "version": row.version, "action": action, "active": row.active},
    )
