"""A policy as JSON, in the form Swift's ``CompressionPolicy`` encodes and decodes (and ``sparkv
policy`` prints): keys are the C field names, enums are lower-case words, eviction and selection
are objects with a ``mode``, and ``null`` means "off" or "the default" (no eviction, OpenMP's thread
count, 1/sqrt(D)). Missing keys decode to their defaults, so a file may list only what it changes.
One table (Tests/policy-grammar.json) tests both languages."""

from __future__ import annotations

import json
from typing import Any, Dict, Union

from .errors import InvalidPolicyError, Status

_KEYS = {"eviction", "key_pruning", "key_prune_ratio", "selection", "recovery", "sign_bits", "value_prune_ratio",
         "key_precision", "value_precision", "window", "seed", "threads", "attention_scale", "quant_group",
         "compress_decode", "decode_recent"}


def _f32(x: float) -> float:
    """The float32 value as the shortest decimal that reads back to it (what Swift writes)."""
    import numpy as np

    return float(str(np.float32(x)))


def _fail(message: str) -> InvalidPolicyError:
    return InvalidPolicyError(Status.INVALID_POLICY, f"policy JSON: {message}")


def to_json_dict(p) -> Dict[str, Any]:
    ev = p.eviction.name.lower()
    if ev == "snapkv":
        eviction: Any = {"mode": "snapkv", "budget": p.evict_budget, "pool_kernel": p.pool_kernel}
    elif ev == "pyramidkv":
        eviction = {"mode": "pyramidkv", "mean_budget": p.evict_budget, "ratio": _f32(p.pyramid_ratio),
                    "pool_kernel": p.pool_kernel}
    elif ev == "streaming":
        eviction = {"mode": "streaming", "sink_tokens": p.sink_tokens, "recent_tokens": p.recent_tokens}
    else:
        eviction = None
    if p.selection.name.lower() == "cumulative":
        selection: Dict[str, Any] = {"mode": "cumulative", "p": _f32(p.cumulative_p), "min_keep": p.cumulative_min_keep,
                                     "max_keep": p.cumulative_max_keep or None}
    else:
        selection = {"mode": "topk"}
    return {
        "attention_scale": _f32(p.attention_scale) if p.attention_scale != 0 else None,
        "eviction": eviction,
        "key_precision": p.key_precision.name.lower(),
        "key_prune_ratio": _f32(p.key_prune_ratio),
        "key_pruning": p.key_pruning.name.lower(),
        "quant_group": p.quant_group,
        "recovery": p.recovery.name.lower(),
        "seed": p.seed,
        "selection": selection,
        "sign_bits": bool(p.sign_bits),
        "threads": p.threads if p.threads != 0 else None,
        "value_precision": p.value_precision.name.lower(),
        "value_prune_ratio": _f32(p.value_prune_ratio),
        "window": p.window,
        "compress_decode": bool(p.compress_decode),
        "decode_recent": p.decode_recent,
    }


def _get(obj: Dict[str, Any], key: str, kind: type, default: Any) -> Any:
    value = obj.get(key)
    if value is None:
        return default
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise _fail(f'"{key}" must be a {kind.__name__}, not {json.dumps(value)[:40]}')
    return value


def from_json_obj(obj: Union[str, bytes, Dict[str, Any]]) -> Dict[str, Any]:
    """The policy fields (C names) of a JSON document or an already-parsed dict."""
    if isinstance(obj, (str, bytes)):
        try:
            obj = json.loads(obj)
        except ValueError as e:
            raise _fail(f"not JSON ({e})") from None
    if not isinstance(obj, dict):
        raise _fail("the document must be an object")
    unknown = set(obj) - _KEYS
    if unknown:
        raise _fail(f"unknown keys {sorted(unknown)}; known: {sorted(_KEYS)}")
    fields: Dict[str, Any] = {}
    for key, kind in [("key_pruning", str), ("recovery", str), ("key_precision", str), ("value_precision", str)]:
        if obj.get(key) is not None:
            fields[key] = _get(obj, key, kind, None)
    for key, kind in [("key_prune_ratio", float), ("value_prune_ratio", float), ("window", int), ("seed", int),
                      ("threads", int), ("attention_scale", float), ("quant_group", int), ("sign_bits", bool),
                      ("compress_decode", bool), ("decode_recent", int)]:
        if obj.get(key) is not None:
            fields[key] = _get(obj, key, kind, None)
    ev = obj.get("eviction")
    if ev is not None:
        if not isinstance(ev, dict) or not isinstance(ev.get("mode"), str):
            raise _fail('"eviction" must be null or an object with a "mode"')
        mode = ev["mode"]
        if mode == "snapkv":
            fields.update(eviction="snapkv", evict_budget=_get(ev, "budget", int, 512),
                          pool_kernel=_get(ev, "pool_kernel", int, 5))
        elif mode == "pyramidkv":
            fields.update(eviction="pyramidkv", evict_budget=_get(ev, "mean_budget", int, 512),
                          pyramid_ratio=_get(ev, "ratio", float, 4.0), pool_kernel=_get(ev, "pool_kernel", int, 5))
        elif mode == "streaming":
            fields.update(eviction="streaming", sink_tokens=_get(ev, "sink_tokens", int, 4),
                          recent_tokens=_get(ev, "recent_tokens", int, 508))
        else:
            raise _fail(f'eviction mode "{mode}" is not "snapkv", "pyramidkv" or "streaming" (no eviction is null)')
    sel = obj.get("selection")
    if sel is not None:
        if not isinstance(sel, dict) or sel.get("mode") not in ("topk", "cumulative"):
            raise _fail('"selection" must be {"mode": "topk"} or {"mode": "cumulative", ...}')
        if sel["mode"] == "cumulative":
            fields.update(selection="cumulative", cumulative_p=_get(sel, "p", float, 0.9),
                          cumulative_min_keep=_get(sel, "min_keep", int, 1), cumulative_max_keep=_get(sel, "max_keep", int, 0))
    return fields
