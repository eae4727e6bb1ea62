import pytest

from jinaloc.embedder import length_sorted_batches
from jinaloc.errors import JinalocError
from jinaloc.inputs import batched, records


def test_plain_lines_skip_blank():
    recs = list(records(["a\n", "\n", "  \n", "b"]))
    assert [r.text for r in recs] == ["a", "b"]
    assert not any(r.has_id for r in recs)


def test_jsonl_auto_detected_with_ids():
    recs = list(records(['{"id": 7, "text": "x"}', '{"text": "y"}']))
    assert [(r.id, r.text, r.has_id) for r in recs] == [(7, "x", True), (None, "y", False)]


@pytest.mark.parametrize(
    "line, message",
    [
        ("{not json", "line 2: invalid JSON"),
        ("[1, 2]", "line 2: expected a JSON object"),
        ('{"id": 1}', 'line 2: missing or non-string "text"'),
    ],
)
def test_bad_json_lines_name_the_line(line, message):
    with pytest.raises(JinalocError, match=message):
        list(records(['{"text": "ok"}', line]))


def test_batched():
    assert list(batched(range(5), 2)) == [[0, 1], [2, 3], [4]]


def test_length_sorted_batches_respect_both_budgets():
    lengths = [5, 100, 7, 90, 3, 50]
    batches = length_sorted_batches(lengths, batch_size=2, max_tokens=150)
    assert sorted(i for b in batches for i in b) == list(range(6))
    for b in batches:
        assert len(b) <= 2
        assert max(lengths[i] for i in b) * len(b) <= 150 or len(b) == 1
    assert batches[0] == [1]  # 100 and 90 together would pad to 200 > 150
