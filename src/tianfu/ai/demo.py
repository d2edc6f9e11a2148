"""The demo hospital's AI governance: a radiologist reads 200 chest images through the inference API.

Her verdict on each answer is simulated from the dataset's label (agree when the AI's answer matches it,
otherwise a correction to it), and recorded through the kernel, so the field-performance dashboard
shows real outputs and verdicts from the first start. See ``demo_data/README.md``.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
from PIL import Image
from sqlalchemy import select

from tianfu.ai import service
from tianfu.core.audit.service import Actor
from tianfu.core.identity.models import User
from tianfu.core.kernel import Kernel
from tianfu.core.model_outputs import service as outputs
from tianfu.core.model_outputs.models import ModelOutput

IMAGES = Path(__file__).parent / "demo_data" / "pneumonia_val200.npz"
TASK = "imaging-pneumonia"
CLASSES = ("normal", "pneumonia")  # the PneumoniaMNIST labels, in order


def _png(image: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def seed(kernel: Kernel) -> None:
    task = service.tasks().get(TASK)
    if task is None:  # the imaging module is not installed
        return
    with kernel.sessions() as session, session.begin():
        if session.scalar(select(ModelOutput.id).where(ModelOutput.task == TASK).limit(1)) is not None:
            return
        user = session.scalars(select(User).where(User.username == "rad.liu")).one()
        reader = Actor(user_id=user.id, username=user.username, role=user.role)
        with np.load(IMAGES) as data:
            images, labels = data["val_images"], data["val_labels"].reshape(-1)
        for image, label in zip(images, labels, strict=True):
            request = task.request_model(image=_png(image))
            _, result, output_id = service.infer(
                session,
                kernel.audit,
                actor=reader,
                task_key=TASK,
                request=request,
                patient_id=None,
                caller="demo",
            )
            truth = CLASSES[int(label)]
            output = session.get(ModelOutput, output_id)
            assert output is not None
            outputs.record_feedback(
                session,
                kernel.audit,
                actor=reader,
                output=output,
                verdict="agree" if result.label == truth else "disagree",
                corrected_label="" if result.label == truth else truth,
                comment="demo: verdict simulated from the dataset label",
            )
