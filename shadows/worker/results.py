"""Keeping a task's return value in its run record (see :mod:`shadows.core.state`)."""

from __future__ import annotations

import logging
from typing import Any

from shadows.core.execution import Execution
from shadows.core.functions import RESULTS_ATTRIBUTE
from shadows.producer.shadow import Shadow

logger = logging.getLogger("shadows.worker")


def result_record(shadow: Shadow, execution: Execution, result: Any) -> list[str | bytes]:
    """The run record fields holding ``result`` (none when results are not kept). A
    result that cannot be encoded, or is above ``result_max_bytes``, is refused: the run
    still completed (its work is done), and ``get_result`` raises the reason."""
    if not shadow.results or getattr(execution.function, RESULTS_ATTRIBUTE, True) is False:
        return []
    try:
        fields = shadow.payloads.seal_result(execution.key, result)
    except Exception as error:
        reason = (
            f"the result of {execution.function_name} cannot be encoded with the "
            f"{shadow.codec.name} codec: {type(error).__name__}: {error}"
        )
        logger.warning("%s [key=%s]", reason, execution.key)
        return ["result_error", reason, "result_refused", "unencodable"]
    size = len(fields[1])
    if size > shadow.result_max_bytes:
        reason = (
            f"{execution.function_name} returned {size} bytes encoded, above "
            f"result_max_bytes ({shadow.result_max_bytes}): return less (a reference to "
            "where the data is), raise result_max_bytes, or declare results=False"
        )
        logger.warning("Result refused: %s [key=%s]", reason, execution.key)
        return ["result_error", reason, "result_refused", "too-large"]
    return fields
