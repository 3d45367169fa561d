"""Policy.parse and Policy.compact against the language-neutral grammar table
(Tests/policy-grammar.json, also read by Tests/SparKVTests/PolicyGrammarTests.swift): every text
parses to exactly the table's C sparkv_policy and writes back in its canonical form; every rejected
text fails with the table's message."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import sparkv
from sparkv import Policy
from test_presets import as_dict, expected

GRAMMAR = json.loads((Path(__file__).resolve().parents[2] / "Tests" / "policy-grammar.json").read_text())


def test_table_is_readable():
    assert len(GRAMMAR["parse"]) >= 20 and len(GRAMMAR["reject"]) >= 20


@pytest.mark.parametrize("row", GRAMMAR["parse"], ids=lambda r: r["text"])
def test_text_parses_to_the_table_policy(row):
    policy = Policy.parse(row["text"])
    got, want = as_dict(policy.to_c()), expected({"preset": "parse", "args": {}, "fields": row["fields"]})
    diff = {k: (got[k], want[k]) for k in want if got[k] != want[k]}
    assert not diff, f"{row['text']!r}: field (got, table) {diff}"
    assert policy.compact() == row["compact"]
    assert str(policy) == row["compact"]
    assert Policy.parse(policy.compact()) == policy


@pytest.mark.parametrize("row", GRAMMAR["reject"], ids=lambda r: r["text"] or "<empty>")
def test_text_is_rejected(row):
    with pytest.raises(sparkv.InvalidPolicyError) as info:
        Policy.parse(row["text"])
    assert row["error"] in str(info.value)
    assert info.value.status == sparkv.Status.INVALID_POLICY


def test_presets_round_trip_through_the_compact_form():
    for policy in [Policy.spark(0.8), Policy.snap_spark(256, 0.5, recovery="gaussian"), Policy.think(0.5),
                   Policy.cumulative(0.9), Policy.pyramidkv(128, ratio=2.5, pool_kernel=7),
                   Policy.streaming(4, 1020).with_precision("i8", "i4", 64), Policy.dense(threads=2, seed=3)]:
        assert Policy.parse(policy.compact()) == policy, policy.compact()


def test_parse_refuses_non_strings():
    with pytest.raises(TypeError):
        Policy.parse(b"spark(0.8)")


@pytest.mark.parametrize("row", GRAMMAR["json"], ids=lambda r: r["compact"])
def test_json_is_swifts(row):
    """Policy.to_json writes exactly what Swift's Codable writes; from_json reads it back."""
    policy = Policy.parse(row["compact"])
    assert policy.to_json() == row["json"]
    assert Policy.from_json(row["json"]) == policy
    assert Policy.from_json(json.dumps(row["json"])) == policy


@pytest.mark.parametrize("row", GRAMMAR["partial_json"], ids=lambda r: r["compact"])
def test_partial_json_takes_the_defaults(row):
    assert Policy.from_json(row["json"]).compact() == row["compact"]


@pytest.mark.parametrize("doc", ["[1]", "{", '{"eviction": {"mode": "h2o"}}', '{"window": "32"}', '{"windows": 3}',
                                 '{"sign_bits": 1}', '{"selection": {"mode": "random"}}'])
def test_malformed_json_is_an_invalid_policy(doc):
    with pytest.raises(sparkv.InvalidPolicyError, match="policy JSON"):
        Policy.from_json(doc)
