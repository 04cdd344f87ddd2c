"""Imports every module that declares tables, so ``Base.metadata`` knows the whole schema."""

from strongroom.crypto import models as _crypto  # noqa: F401
from strongroom.identity import models as _identity  # noqa: F401
from strongroom.store import heads as _heads  # noqa: F401
from strongroom.store import models as _store  # noqa: F401
from strongroom.store import vault as _vault  # noqa: F401
from strongroom.store import model_tables as _model_tables  # noqa: F401
from strongroom.evaluation import tables as _evaluation_tables  # noqa: F401
from strongroom.compliance import tables as _compliance_tables  # noqa: F401
