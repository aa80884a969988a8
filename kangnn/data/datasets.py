"""Old home of the dataset names, kept for a while so that old imports keep working.

They now live in :mod:`~kangnn.data.registry`, :mod:`~kangnn.data.dataset` and
:mod:`~kangnn.data.loader`; import them from :mod:`kangnn.data`.
"""

from typing import Any

import kangnn.data as _data


def __getattr__(name: str) -> Any:
    return getattr(_data, name)
