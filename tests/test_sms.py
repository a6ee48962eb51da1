"""SMS encoding and segmentation (campaignctl.sms): known answers from GSM
03.38 / 3GPP TS 23.040 and properties over generated texts."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from campaignctl import sms

GSM_BASIC = "".join(char for code, char in enumerate(sms.GSM7_BASIC) if code != sms.ESCAPE)
GSM_EXTENSION = "".join(sms.GSM7_EXTENSION)
CYRILLIC = "абвгдеёжзийклмнопрстуфхцчшщъыьэюяАБВГДЕЁЖЗИЙКЛМНОПРСТУФХЦЧШЩЪЫЬЭЮЯ"
EMOJI = "😀🎁🛒👍🏠"


# --------------------------------------------------------------------------- known answers


@pytest.mark.parametrize(("text", "coding", "count"), [
    ("a" * 160, sms.GSM7, 1),
    ("a" * 161, sms.GSM7, 2),
    ("a" * 306, sms.GSM7, 2),  # 153 * 2
    ("a" * 307, sms.GSM7, 3),
    ("€" * 80, sms.GSM7, 1),  # 160 septets
    ("€" * 81, sms.GSM7, 2),
    ("я" * 70, sms.UCS2, 1),
    ("я" * 71, sms.UCS2, 2),
    ("я" * 134, sms.UCS2, 2),
    ("я" * 135, sms.UCS2, 3),
    ("a" * 159 + "я", sms.UCS2, 3),  # one Cyrillic letter turns the whole text into UCS-2: 160 units
    ("😀" * 35, sms.UCS2, 1),  # 70 code units
    ("😀" * 36, sms.UCS2, 2),
    ("", sms.GSM7, 1),
    ("Скидка 15% до воскресенья", sms.UCS2, 1),
    ("Hello {name} [50%] ~ €5 | \\ ^", sms.GSM7, 1),
    ("Ça coûte 5€", sms.UCS2, 1),  # û is not in GSM 03.38 (ù is)
    ("Ça cùte ÄÖÑÜ§¿¡", sms.GSM7, 1),
])
def test_encoding_and_part_count(text, coding, count):
    assert sms.encoding(text) == coding
    assert sms.part_count(text) == count == len(sms.parts(text))


def test_an_escape_sequence_at_the_boundary_moves_whole_to_the_next_part():
    text = "a" * 152 + "€" + "b" * 153  # the euro would take septets 153 and 154
    split = sms.parts(text)
    assert split == ["a" * 152, "€" + "b" * 151, "bb"]
    assert [sms.length(part) for part in split] == [152, 153, 2]


def test_an_escape_sequence_that_fits_exactly_stays():
    split = sms.parts("a" * 151 + "€" + "b" * 153)
    assert split == ["a" * 151 + "€", "b" * 153]


def test_a_surrogate_pair_at_the_boundary_moves_whole_to_the_next_part():
    text = "я" * 66 + "😀" + "я" * 10
    split = sms.parts(text)
    assert split == ["я" * 66, "😀" + "я" * 10]
    assert [sms.length(part) for part in split] == [66, 12]


def test_gsm7_bytes_round_trip_with_escapes():
    text = "Hi [you] {€} ~ ^|\\ \f @£$¥ ΔΩ"
    septets = sms.encode_gsm7(text)
    assert len(septets) == sms.length(text) == len(text) + 10
    assert septets[:3] == b"Hi " and b"\x1b\x65" in septets  # the euro sign is ESC 0x65
    assert septets[-2:] == bytes([0x10, 0x15])  # Δ Ω
    assert sms.decode_gsm7(septets) == text


def test_encoding_a_non_gsm_character_names_it():
    with pytest.raises(ValueError, match=r"'я' at 3 is not in the GSM 03.38 alphabet"):
        sms.encode_gsm7("abcя")


def test_the_check_refuses_an_sms_over_the_limit_and_says_how_to_fix_it():
    assert sms.check_sms_template("a" * 306, 2) is None
    problem = sms.check_sms_template("a" * 307, 2)
    assert (problem.parts, problem.max_parts, problem.encoding) == (3, 2, sms.GSM7)
    assert "3 parts (307 septets, gsm7), over the limit of 2" in problem.message
    assert "at most 306 septets" in problem.message
    cyrillic = sms.check_sms_template("Привет! " * 10, 1)
    assert cyrillic.parts == 2 and "UCS-2" in cyrillic.message and "at most 70 UTF-16 code units" in cyrillic.message
    assert sms.check_sms_template("a" * 153 * 255, None) is None
    assert sms.check_sms_template("a" * (153 * 255 + 1), None).parts == 256


def test_the_check_refuses_an_empty_text():
    assert "empty" in sms.check_sms_template("  \n", 3).message


def test_a_template_is_estimated_by_its_longest_sample():
    estimate = sms.estimate_sms_template("reminder", ["Hi Ann, " + "a" * 100, "Привет, Анна! " * 6], max_parts=2)
    assert estimate == sms.SmsEstimate("reminder", 2, sms.UCS2, 2, None)
    over = sms.estimate_sms_template("reminder", ["short", "я" * 200], max_parts=2)
    assert over.parts == 3 and "3 parts" in over.problem
    with pytest.raises(ValueError, match="no rendered sample"):
        sms.estimate_sms_template("reminder", [], max_parts=None)


# --------------------------------------------------------------------------- properties

gsm_text = st.text(alphabet=GSM_BASIC + GSM_EXTENSION, max_size=700)
any_text = st.text(alphabet=st.one_of(st.sampled_from(GSM_BASIC + GSM_EXTENSION + CYRILLIC + EMOJI), st.characters(exclude_categories=("Cs",))), max_size=400)


def _check_parts(text: str) -> None:
    coding = sms.encoding(text)
    split = sms.parts(text)
    limits = sms.LIMITS[coding]
    assert "".join(split) == text
    assert sms.part_count(text) == len(split)
    if len(split) == 1:
        assert sms.length(text, coding) <= limits.single
    else:
        assert sms.length(text, coding) > limits.single
        assert all(0 < sms.length(part, coding) <= limits.per_part for part in split)
        # greedy: a part ends only when the next character would not fit
        for part, following in zip(split, split[1:]):
            assert sms.length(part, coding) + sms.units(following[0], coding) > limits.per_part
    for part in split:
        if coding == sms.GSM7:  # the part's own septets hold no dangling escape
            septets = sms.encode_gsm7(part)
            assert sms.decode_gsm7(septets) == part
        else:  # every part is valid UTF-16 on its own: no lone surrogate
            assert part.encode("utf-16-be").decode("utf-16-be") == part


@settings(max_examples=300, deadline=None)
@given(gsm_text)
def test_gsm7_parts_rejoin_fit_and_never_split_an_escape(text):
    assert sms.encoding(text) == sms.GSM7
    _check_parts(text)


@settings(max_examples=300, deadline=None)
@given(any_text)
def test_any_text_parts_rejoin_fit_and_never_split_a_surrogate_pair(text):
    _check_parts(text)


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=CYRILLIC, min_size=1, max_size=20), gsm_text)
def test_any_cyrillic_makes_the_text_ucs2(cyrillic, gsm):
    middle = len(gsm) // 2
    assert sms.encoding(gsm[:middle] + cyrillic + gsm[middle:]) == sms.UCS2
