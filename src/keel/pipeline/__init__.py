"""The request pipeline: ordered stages over one ``RequestContext``.

Owns what happens to a data-plane request between the HTTP edge and the
upstream, in the order written in ``stages.build_stages``. Imports the
domain packages (routing, providers, store); never ``api`` or ``cli``.
"""

from keel.pipeline.context import RequestContext
from keel.pipeline.stages import Pipeline, authenticate, build_pipeline

__all__ = ["Pipeline", "RequestContext", "authenticate", "build_pipeline"]
