"""The model registry: shipped versions registered on first use, imports, audited activation and rollback."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from tianfu.core.audit.models import AuditRecord
from tianfu.core.audit.service import Actor
from tianfu.core.bus.models import OutboxEvent
from tianfu.core.errors import Conflict, Invalid, NotFound
from tianfu.core.kernel import Kernel
from tianfu.core.model_registry import service as registry
from tianfu.core.model_registry.manifest import (
    FeatureReference,
    ModelManifest,
    manifest_from_json,
    manifest_to_json,
)

ADMIN = Actor(user_id=None, username="cli:test", role="system")


def _manifest(directory: Path, version: str, weights: bytes = b"weights") -> ModelManifest:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "toy.bin").write_bytes(weights)
    (directory / "toy.json").write_text(json.dumps({"version": version}))
    return ModelManifest(
        name="toy-model",
        version=version,
        module="toy",
        task="toy-task",
        title="Toy",
        intended_use="tests only",
        training_data="none",
        data_licence="CC0",
        metrics={"auc": 0.9},
        trained_on="2026-11-30",
        files=(directory / "toy.bin", directory / "toy.json"),
        limits=("a toy",),
        reference=(FeatureReference("mean", (0.5, 0.5), edges=(0.0, 0.5, 1.0)),),
    )


@pytest.fixture
def shipped(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> ModelManifest:
    manifest = _manifest(tmp_path / "shipped", "1.0.0")
    monkeypatch.setattr(registry, "shipped_manifests", lambda: {(manifest.name, manifest.version): manifest})
    return manifest


def test_manifest_round_trips_through_json(tmp_path: Path) -> None:
    manifest = _manifest(tmp_path, "1.0.0")
    assert manifest_from_json(manifest_to_json(manifest), tmp_path) == manifest


def test_first_shipped_version_is_registered_active(db: Session, shipped: ModelManifest) -> None:
    active = registry.active_model(db, "toy-model")
    assert active is not None
    assert (active.version, active.directory) == ("1.0.0", shipped.directory)
    assert [r.sha256 for r in registry.versions(db, "toy-model")] == [shipped.sha256()]


def test_import_activate_and_roll_back_are_audited(
    kernel: Kernel, db: Session, shipped: ModelManifest, tmp_path: Path
) -> None:
    assert registry.active_model(db, "toy-model") is not None
    candidate = _manifest(tmp_path / "candidate", "1.1.0", weights=b"better weights")
    row = registry.register(db, kernel.audit, actor=ADMIN, manifest=candidate, var_dir=tmp_path / "var")
    assert (row.active, row.source) == (False, "imported")
    assert Path(row.directory) == (tmp_path / "var" / "models" / "toy-model" / "1.1.0").resolve()
    with pytest.raises(Conflict):
        registry.register(db, kernel.audit, actor=ADMIN, manifest=candidate, var_dir=tmp_path / "var")

    registry.activate(
        db, kernel.audit, actor=ADMIN, name="toy-model", version="1.1.0", reason="validated locally"
    )
    active = registry.active_model(db, "toy-model")
    assert active is not None
    assert active.version == "1.1.0"
    assert active.path("toy.bin").read_bytes() == b"better weights"  # the registry's copy, not the source

    registry.activate(db, kernel.audit, actor=ADMIN, name="toy-model", version="1.0.0", reason="roll back")
    assert [r.version for r in registry.versions(db, "toy-model") if r.active] == ["1.0.0"]
    db.commit()

    audit = db.scalars(
        select(AuditRecord).where(AuditRecord.action.like("ai_model.%")).order_by(AuditRecord.seq)
    )
    trail = [(a.action, a.detail["version"], a.detail["previous"]) for a in audit]
    assert trail == [
        ("ai_model.register", "1.1.0", []),
        ("ai_model.activate", "1.1.0", ["1.0.0"]),
        ("ai_model.activate", "1.0.0", ["1.1.0"]),
    ]
    events = db.scalars(select(OutboxEvent).where(OutboxEvent.subject == "tianfu.ai.model_changed")).all()
    assert len(events) == 3


def test_switching_off_leaves_no_active_version(kernel: Kernel, db: Session, shipped: ModelManifest) -> None:
    with pytest.raises(Invalid):
        registry.deactivate(db, kernel.audit, actor=ADMIN, name="toy-model", reason=" ")
    registry.deactivate(db, kernel.audit, actor=ADMIN, name="toy-model", reason="under review")
    assert registry.active_model(db, "toy-model") is None
    with pytest.raises(Conflict):
        registry.deactivate(db, kernel.audit, actor=ADMIN, name="toy-model", reason="again")


def test_a_version_whose_files_changed_is_not_activated(
    kernel: Kernel, db: Session, shipped: ModelManifest, tmp_path: Path
) -> None:
    row = registry.register(
        db, kernel.audit, actor=ADMIN, manifest=_manifest(tmp_path / "c", "2.0.0"), var_dir=tmp_path / "var"
    )
    (Path(row.directory) / "toy.bin").write_bytes(b"tampered")
    with pytest.raises(Conflict, match="changed"):
        registry.activate(db, kernel.audit, actor=ADMIN, name="toy-model", version="2.0.0", reason="try")
    with pytest.raises(NotFound):
        registry.activate(db, kernel.audit, actor=ADMIN, name="toy-model", version="9.9.9", reason="try")


def test_an_upgrade_that_replaces_the_active_shipped_version_activates_its_successor(
    db: Session, shipped: ModelManifest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert registry.active_model(db, "toy-model") is not None
    upgraded = _manifest(tmp_path / "upgraded", "1.1.0", weights=b"retrained")
    monkeypatch.setattr(registry, "shipped_manifests", lambda: {(upgraded.name, upgraded.version): upgraded})
    active = registry.active_model(db, "toy-model")
    assert active is not None
    assert active.version == "1.1.0"
    assert [r.version for r in registry.versions(db, "toy-model") if r.active] == ["1.1.0"]


@pytest.mark.parametrize(
    ("name", "version"), [("../../escape", "1.0"), ("toy-model", "/etc/x"), ("模型", "1")]
)
def test_an_import_whose_name_or_version_is_not_a_plain_label_is_refused(
    kernel: Kernel, db: Session, shipped: ModelManifest, tmp_path: Path, name: str, version: str
) -> None:
    bad = dataclasses.replace(_manifest(tmp_path / "bad", "1.0"), name=name, version=version)
    with pytest.raises(Invalid, match="letters, digits"):
        registry.register(db, kernel.audit, actor=ADMIN, manifest=bad, var_dir=tmp_path / "var")
    assert not (tmp_path / "var").exists()
