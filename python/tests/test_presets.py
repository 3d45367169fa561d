"""The Python presets against the language-neutral preset table (Tests/presets.json, also read by
Tests/SparKVTests/PresetTableTests.swift): every preset builds exactly the table's C sparkv_policy,
the table's defaults are sparkv_default_policy(), and every preset is a valid policy."""

from __future__ import annotations

import ctypes
import json
from pathlib import Path

import numpy as np
import pytest

import sparkv
from sparkv import Eviction, KeyPruning, Policy, Precision, Recovery, Selection, _lib

TABLE_PATH = Path(__file__).resolve().parents[2] / "Tests" / "presets.json"
TABLE = json.loads(TABLE_PATH.read_text())
ENTRIES = TABLE["presets"]
PRESETS = {
    "dense": Policy.dense,
    "spark": Policy.spark,
    "cumulative": Policy.cumulative,
    "snapkv": Policy.snapkv,
    "pyramidkv": Policy.pyramidkv,
    "streaming": Policy.streaming,
    "think": Policy.think,
    "snap_spark": Policy.snap_spark,
    "quantized": Policy.quantized,
}
C_FIELDS = [name for name, _ in _lib.CPolicy._fields_ if name != "struct_size"]


def entry_id(e: dict) -> str:
    args = ",".join(f"{k}={v}" for k, v in e["args"].items())
    mods = "".join(f"+{k}({','.join(f'{a}={b}' for a, b in v.items())})" for k, v in e.items() if k == "with_precision")
    return f"{e['preset']}({args}){mods}"


def c_value(field: str, value):
    """A table value as the number the C field holds (enum names through the table's enums)."""
    if field in TABLE["enums"]:
        return TABLE["enums"][field][value]
    if dict(_lib.CPolicy._fields_)[field] is ctypes.c_float:
        return float(np.float32(value))
    return int(value)


def expected(entry: dict) -> dict:
    fields = dict(TABLE["defaults"])
    unknown = set(entry["fields"]) - set(fields)
    assert not unknown, f"{entry_id(entry)}: unknown fields {unknown}"
    fields.update(entry["fields"])
    return {name: c_value(name, value) for name, value in fields.items()}


def as_dict(c: _lib.CPolicy) -> dict:
    return {name: getattr(c, name) for name in C_FIELDS}


def build(entry: dict) -> Policy:
    preset = PRESETS[entry["preset"]]  # a preset missing here is a Python preset missing
    policy = preset(**entry["args"])
    if "with_precision" in entry:
        policy = policy.with_precision(**entry["with_precision"])
    return policy


def test_table_covers_every_c_field():
    assert list(TABLE["defaults"]) == C_FIELDS


def test_table_defaults_are_the_c_default_policy():
    assert as_dict(_lib.load().sparkv_default_policy()) == {k: c_value(k, v) for k, v in TABLE["defaults"].items()}


def test_table_enums_are_the_binding_enums():
    for field, cls in [
        ("selection", Selection),
        ("recovery", Recovery),
        ("key_precision", Precision),
        ("value_precision", Precision),
        ("eviction", Eviction),
        ("key_pruning", KeyPruning),
    ]:
        assert TABLE["enums"][field] == {m.name.lower(): int(m) for m in cls}, field


def test_policy_defaults_are_the_table_defaults():
    assert as_dict(Policy().to_c()) == expected({"preset": "dense", "args": {}, "fields": {}})


def test_every_python_preset_is_in_the_table():
    assert {e["preset"] for e in ENTRIES} == set(PRESETS)
    assert all(e.get("only", "python") == "python" or e["only"] == "swift" for e in ENTRIES)


@pytest.mark.parametrize("entry", ENTRIES, ids=entry_id)
def test_preset_builds_the_table_policy(entry):
    if entry.get("only", "python") != "python":
        pytest.skip(f"only in {entry['only']}")
    policy = build(entry)
    got, want = as_dict(policy.to_c()), expected(entry)
    diff = {k: (got[k], want[k]) for k in want if got[k] != want[k]}
    assert not diff, f"{entry_id(entry)}: field (got, table) {diff}"


@pytest.mark.parametrize("entry", ENTRIES, ids=entry_id)
def test_preset_is_a_valid_policy(entry):
    if entry.get("only", "python") != "python":
        pytest.skip(f"only in {entry['only']}")
    policy = build(entry)
    policy.validate(128)
    with sparkv.KVCache(sparkv.Shape(1, 2, 1, 128, 16), policy) as cache:
        assert as_dict(cache.policy.to_c()) == as_dict(policy.to_c())


def test_recovery_none_drops_sign_bits_unless_asked_for():
    """The defect: Policy.spark(r, recovery="none") kept sign bits, an invalid policy (Swift's preset
    drops them). Asking for them explicitly still builds the policy C refuses."""
    assert Policy.spark(0.5, recovery="none").sign_bits is False
    assert Policy.cumulative(0.9, recovery="none").sign_bits is False
    assert Policy.snap_spark(64, 0.5, recovery="none").sign_bits is False
    assert Policy.spark(0.5).sign_bits is True
    with pytest.raises(sparkv.InvalidPolicyError, match="sign_bits"):
        Policy.spark(0.5, recovery="none", sign_bits=True).validate(128)
