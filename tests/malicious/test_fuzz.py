"""Fuzzing stage 1: any bytes give acceptance or a clean ValidationError, never a crash."""

from __future__ import annotations

import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from malicious import generator as g
from quantgrid.adapter import CheckedSubmission, check_submission
from quantgrid.errors import ValidationError

GOOD = g.good_submission()
GOOD_WEIGHTS = g.st_bytes(g.good_tensors())
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _stage1(data: bytes) -> CheckedSubmission | ValidationError:
    try:
        return check_submission(data, g.RECIPE, g.BASE)
    except ValidationError as e:
        assert e.check and e.message
        return e


@FUZZ
@given(st.binary(max_size=4096))
def test_arbitrary_bytes(data):
    assert isinstance(_stage1(data), ValidationError)


@FUZZ
@given(st.lists(st.tuples(st.integers(0, len(GOOD) - 1), st.integers(0, 255)), min_size=1, max_size=8))
def test_byte_flips_of_a_good_zip(flips):
    data = bytearray(GOOD)
    for pos, val in flips:
        data[pos] = val
    _stage1(bytes(data))


@FUZZ
@given(st.integers(0, len(GOOD)), st.binary(max_size=64))
def test_truncations_and_insertions(cut, junk):
    _stage1(GOOD[:cut])
    _stage1(GOOD[:cut] + junk + GOOD[cut:])


@FUZZ
@given(st.lists(st.tuples(st.integers(0, 4095), st.integers(0, 255)), min_size=1, max_size=6),
       st.one_of(st.none(), st.integers(0, 2 ** 64 - 1)))
def test_mutated_safetensors_inside_a_valid_zip(flips, header_len):
    """The weights are mutated and re-packed with a matching manifest, so the fuzzing reaches the
    safetensors parser and the value checks rather than stopping at the archive's CRC."""
    w = bytearray(GOOD_WEIGHTS)
    if header_len is not None:
        w[:8] = struct.pack("<Q", header_len)
    for pos, val in flips:
        w[pos % len(w)] = val
    _stage1(g.with_weights(bytes(w)))


@FUZZ
@given(st.dictionaries(st.sampled_from(["r", "lora_alpha", "use_dora", "peft_type", "target_modules", "bias",
                                        "modules_to_save", "rank_pattern", "auto_mapping"]),
                       st.one_of(st.none(), st.booleans(), st.integers(-5, 64), st.floats(allow_nan=True),
                                 st.text(max_size=8), st.lists(st.text(max_size=6), max_size=3))))
def test_fuzzed_adapter_config(overrides):
    _stage1(g.zip_bytes(g.good_files(config=g.good_config(**overrides))))
