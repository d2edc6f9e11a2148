"""Import every table definition so that ``Base.metadata`` is complete (for Alembic and tests)."""

from __future__ import annotations

from sqlalchemy import MetaData


def all_metadata() -> MetaData:
    from tianfu.core.audit import models as _audit  # noqa: F401
    from tianfu.core.bus import models as _bus  # noqa: F401
    from tianfu.core.db import Base
    from tianfu.core.deadletter import models as _deadletter  # noqa: F401
    from tianfu.core.identity import models as _identity  # noqa: F401
    from tianfu.core.model_outputs import models as _outputs  # noqa: F401
    from tianfu.core.model_registry import models as _registry  # noqa: F401
    from tianfu.core.patients import models as _patients  # noqa: F401
    from tianfu.core.plugins import installed_modules

    for module in installed_modules():
        module.import_models()
    return Base.metadata
