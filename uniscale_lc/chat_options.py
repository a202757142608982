"""Where one `UniScaleChat` call's options and ids come from: config, kwargs, run manager, configured copy.

LangChain hands a call's settings over in several places (a `RunnableConfig`'s metadata and configurable
fields, call kwargs, a run manager, the fields of a configured copy); this module merges them into the
core's `RequestOptions` and the (run, request, parent run) ids, so chat_model.py keeps only LangChain's
faces. Rules: docs/chat_model.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from langchain_core.messages import AIMessage
from langchain_core.runnables import RunnableConfig

from .chat_convert import ROUTING_KWARGS, TAGS_KWARG, request_options
from .errors import ConfigError
from .feedback import REQUEST_ID_METADATA_KEY
from .router import RequestOptions

# Fields a configured copy (`configurable_fields`, `with_config`) may set apart from the router it shares:
# they apply per call. Any other difference would need a router, and so a learner, of its own.
PER_CALL_FIELDS = frozenset(
    {"cost_weight", "budget_usd_per_request", "temperature", "max_tokens", "stop", "slo_tpot_ms"}
)
# Fields of the adapter itself, not of the router (the router never sees LangChain messages).
ADAPTER_FIELDS = frozenset({"feedback_fn"})
# The sync faces run the async ones without a run manager; these kwargs carry its ids over.
_RUN_ID_KWARG = "_uniscale_run_id"
_PARENT_RUN_ID_KWARG = "_uniscale_parent_run_id"


def _same(left: Any, right: Any) -> bool:
    if left is right:
        return True
    try:
        return bool(left == right)
    except Exception:  # objects whose == is not a truth value
        return False


def per_call_overrides(chat: Any, configured: Sequence[str], config: Any) -> dict[str, Any]:
    """The fields `chat` sets apart from the shared router's `config`: per-call ones only, else it raises."""
    differing = [
        name
        for name in configured
        if name not in ADAPTER_FIELDS and not _same(getattr(chat, name), getattr(config, name))
    ]
    own_router = [name for name in differing if name not in PER_CALL_FIELDS]
    if own_router:
        raise ConfigError(
            f"UniScaleChat.router: give router=Router(...) or its configuration fields, not both "
            f"(got {own_router}); configure the Router itself (only {sorted(PER_CALL_FIELDS)} may "
            "differ: they apply per call)"
        )
    return {name: getattr(chat, name) for name in differing}


def from_config(config: RunnableConfig | None, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The request id and tags from config metadata (`uniscale_request_id`, `uniscale_tags`) and the
    routing controls from `config["configurable"]` (`cost_weight`, `budget_usd_per_request`) as call
    kwargs; explicit kwargs win."""
    if not config:
        return kwargs
    found: dict[str, Any] = {}
    metadata = config.get("metadata") or {}
    request_id = metadata.get(REQUEST_ID_METADATA_KEY)
    if request_id is not None:
        found[REQUEST_ID_METADATA_KEY] = str(request_id)
    if metadata.get(TAGS_KWARG) is not None:
        found[TAGS_KWARG] = metadata[TAGS_KWARG]  # checked with the other options (request_options)
    configurable = config.get("configurable") or {}
    for name in ROUTING_KWARGS:
        if configurable.get(name) is not None:
            found[name] = configurable[name]
    return {**found, **kwargs} if found else kwargs


def _tags_from_run(run_manager: Any, kwargs: dict[str, Any]) -> None:
    """Tags from the run's metadata when no kwarg gave them (`generate()` and callers that skip `invoke`)."""
    if kwargs.get(TAGS_KWARG) is None and run_manager is not None:
        tags = (getattr(run_manager, "metadata", None) or {}).get(TAGS_KWARG)
        if tags is not None:
            kwargs[TAGS_KWARG] = tags


def _run_keys(run_manager: Any, kwargs: dict[str, Any]) -> tuple[str | None, str | None, str | None]:
    """(run id, request id, parent run id) of this call; tags the run's metadata gives join `kwargs`."""
    _tags_from_run(run_manager, kwargs)
    run_id = str(run_manager.run_id) if run_manager is not None else None
    parent = getattr(run_manager, "parent_run_id", None) if run_manager is not None else None
    request_id = kwargs.pop(REQUEST_ID_METADATA_KEY, None)
    if request_id is None and run_manager is not None:
        request_id = (getattr(run_manager, "metadata", None) or {}).get(REQUEST_ID_METADATA_KEY)
    return (
        run_id,
        None if request_id is None else str(request_id),
        None if parent is None else str(parent),
    )


def call_keys(run_manager: Any, kwargs: dict[str, Any]) -> tuple[str | None, str | None, str | None]:
    """(run id, request id, parent run id) of an async call, taking the ids a sync face carried over."""
    run_id, request_id, parent_run_id = _run_keys(run_manager, kwargs)
    run_id = kwargs.pop(_RUN_ID_KWARG, run_id)
    parent_run_id = kwargs.pop(_PARENT_RUN_ID_KWARG, parent_run_id)
    return run_id, request_id, parent_run_id


def keys_as_kwargs(run_manager: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The sync faces run the async ones without a run manager: carry the run and request ids over."""
    run_id, request_id, parent_run_id = _run_keys(run_manager, kwargs)
    keys: dict[str, Any] = {_RUN_ID_KWARG: run_id, _PARENT_RUN_ID_KWARG: parent_run_id}
    if request_id is not None:
        keys[REQUEST_ID_METADATA_KEY] = request_id
    return {**kwargs, **keys}


def call_options(overrides: dict[str, Any], stop: list[str] | None, kwargs: dict[str, Any]) -> RequestOptions:
    """The core's options of one call: a copy's per-call fields (`overrides`), the call's kwargs over them."""
    for name, value in overrides.items():
        if name == "stop":
            stop = stop or value
        else:
            kwargs.setdefault(name, value)
    return request_options(stop, kwargs)


def feedback_key(key: Any) -> Any:
    """The key the core's feedback store knows: an AIMessage's decision id (else its id), other keys as is."""
    if isinstance(key, AIMessage):
        return ((key.response_metadata or {}).get("uniscale") or {}).get("decision_id") or key.id
    return key
