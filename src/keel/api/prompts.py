"""GET /v1/prompts/{name}: the version a label (or an exact version) serves, for SDKs.

Any valid key may read prompts: they are the application's own templates,
not tenant data. The answer comes from the gateway's catalog, so it is what
this replica renders for the same reference.
"""

from __future__ import annotations

import orjson
from starlette.requests import Request
from starlette.responses import Response

from keel.api.state import caller
from keel.errors import InvalidRequest
from keel.pipeline.prompting import DEFAULT_LABEL
from keel.pipeline.schema import PromptRef


async def get_prompt(request: Request) -> Response:
    state, _ = await caller(request)
    label = request.query_params.get("label")
    version = request.query_params.get("version")
    if label is not None and version is not None:
        raise InvalidRequest("give a label or a version, not both", param="version")
    if version is None and label is None:
        label = DEFAULT_LABEL
    ref = PromptRef(name=request.path_params["name"], label=label, version=version)
    served = await state.prompts.get(ref)
    payload = {
        "name": served.name,
        "version": served.version,
        "content_hash": served.content_hash,
        "label": label,
        "prompt": served.file.model_dump(mode="json"),
    }
    return Response(orjson.dumps(payload), media_type="application/json")
