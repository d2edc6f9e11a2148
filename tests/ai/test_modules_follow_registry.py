"""The modules run whichever version the AI platform has active, and nothing when a model is switched off."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from sqlalchemy.orm import Session

from tests.conftest import Demo
from tests.core.test_access import principal
from tests.imaging.test_analyser import radiograph, stored
from tianfu.core.audit.service import Actor
from tianfu.core.errors import Invalid
from tianfu.core.kernel import Kernel
from tianfu.core.model_registry import service as registry
from tianfu.core.plugins import installed_modules
from tianfu.imaging import findings
from tianfu.imaging.dicom.store import dicom_store
from tianfu.imaging.tables import ImagingInstance
from tianfu.monitoring.module import active_sepsis_model
from tianfu.triage import service as triage

ADMIN = Actor(user_id=None, username="cli:test", role="system")


def import_copy(kernel: Kernel, tmp_path: Path, module_key: str, name: str, version: str) -> None:
    """Register the shipped files of NAME again under VERSION, as an imported (retrained) version."""
    shipped = next(m for (n, _), m in registry.shipped_manifests().items() if n == name)
    target = tmp_path / "incoming" / name
    target.mkdir(parents=True)
    for path in shipped.files:
        shutil.copy2(path, target / path.name)
    metadata = target / shipped.files[-1].name
    meta = json.loads(metadata.read_text())
    meta["version"] = version
    metadata.write_text(json.dumps(meta))
    module = next(m for m in installed_modules() if m.key == module_key)
    assert module.read_model_manifest is not None
    with kernel.sessions() as session, session.begin():
        registry.versions(session)
        registry.register(
            session,
            kernel.audit,
            actor=ADMIN,
            manifest=module.read_model_manifest(metadata),
            var_dir=tmp_path / "var",
        )
        registry.activate(session, kernel.audit, actor=ADMIN, name=name, version=version, reason="test")


def switch_off(kernel: Kernel, name: str) -> None:
    with kernel.sessions() as session, session.begin():
        registry.deactivate(session, kernel.audit, actor=ADMIN, name=name, reason="test")


def analyse(kernel: Kernel, demo: Demo) -> list[findings.ImagingFinding]:
    uid = stored(kernel, demo, radiograph())
    with kernel.sessions() as session, session.begin():
        instance = session.query(ImagingInstance).filter_by(sop_instance_uid=uid).one()
        return findings.analyse_instance(session, kernel.audit, dicom_store(kernel).root, instance.id)


def test_imaging_reads_with_the_active_version_and_not_at_all_when_off(
    kernel: Kernel, demo: Demo, tmp_path: Path
) -> None:
    import_copy(kernel, tmp_path, "imaging", "tianfu-imaging-pneumonia", "1.0.1")
    read = analyse(kernel, demo)
    assert [(f.task, f.model_version) for f in read] == [("pneumonia", "1.0.1")]
    switch_off(kernel, "tianfu-imaging-pneumonia")
    assert analyse(kernel, demo) == []


def test_triage_interviews_use_the_active_version_and_stop_when_off(
    kernel: Kernel, db: Session, demo: Demo, tmp_path: Path
) -> None:
    nurse = principal(db, "nurse.wang")
    db.commit()
    import_copy(kernel, tmp_path, "triage", "triage-dxy", "2")
    with kernel.sessions() as session, session.begin():
        row = triage.start(session, kernel.audit, nurse, text="咳嗽三天", visitor_label="A", model="dxy")
        assert row.state["model_path"].endswith("triage-dxy/2/dxy")
    switch_off(kernel, "triage-dxy")
    with kernel.sessions() as session, session.begin(), pytest.raises(Invalid, match="switched off"):
        triage.start(session, kernel.audit, nurse, text="咳嗽三天", visitor_label="B", model="dxy")


def test_the_sepsis_pipeline_loads_the_active_version(kernel: Kernel, tmp_path: Path) -> None:
    model, version = active_sepsis_model(kernel)
    assert model is not None
    assert version == "1.0.0"
    import_copy(kernel, tmp_path, "monitoring", "sepsis", "1.0.1")
    assert active_sepsis_model(kernel)[1] == "1.0.1"
    switch_off(kernel, "sepsis")
    assert active_sepsis_model(kernel) == (None, "")
