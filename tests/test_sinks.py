"""Results and sinks (edge/runtime/sinks.py): label groups, the minimum probability, smoothing, JSON lines to a
file and over UDP, and a file that cannot be written."""

from __future__ import annotations

import json
import os
import socket

import pytest

from edge.errors import EdgeError
from edge.runtime.sinks import Results, load_groups, open_sink

from runtime_support import CLASSES, frame, probabilities


def test_groups_sum_their_classes_and_respect_the_minimum(model, tmp_path):
    path = tmp_path / "groups.toml"
    path.write_text('[groups]\nlow = ["0-2"]\nhigh = [7, "class8"]\n')
    groups = load_groups(path, model.labels, CLASSES)
    assert groups["low"].tolist() == [0, 1, 2] and groups["high"].tolist() == [7, 8]
    results = Results(model, top=3, groups=groups, min_probability=0.15)
    result = results.make(frame(0), probabilities((0, 0.05), (1, 0.05), (7, 0.5), (8, 0.2), (9, 0.2)))
    assert result["groups"] == [{"name": "high", "probability": pytest.approx(0.7)}]  # low is 0.1 < 0.15
    assert [t["class_id"] for t in result["top"]] == [7, 8, 9]


@pytest.mark.parametrize("minimum", [-0.1, 1.5])
def test_a_minimum_probability_outside_0_to_1_is_refused(model, minimum):
    with pytest.raises(EdgeError, match=f"min_probability must be between 0 and 1, not {minimum}"):
        Results(model, min_probability=minimum)


@pytest.mark.parametrize("text, message", [
    ('[groups]\nx = [10]\n', "outside"),
    ('[groups]\nx = ["no such label"]\n', "not a class id"),
    ('[groups]\nx = []\n', "non-empty"),
    ('groups = 1\n', "expected a \\[groups\\] table"),
    ('[groups\n', "not valid TOML"),
])
def test_bad_groups_files_are_one_line_errors(model, tmp_path, text, message):
    path = tmp_path / "groups.toml"
    path.write_text(text)
    with pytest.raises(EdgeError, match=message):
        load_groups(path, model.labels, CLASSES)


def test_smoothing_is_a_moving_mean_over_the_last_n_frames(model):
    results = Results(model, top=1, smoothing=3)
    outputs = [results.make(frame(i), probabilities((i % 2, 1.0)))["top"][0] for i in range(4)]
    # frames: class0, class1, class0, class1 -> means over the last 3: c0 1.0 | 0.5/0.5 | c0 2/3 | c1 2/3
    assert outputs[0] == {"class_id": 0, "label": "class0", "probability": 1.0}
    assert outputs[2]["class_id"] == 0 and outputs[2]["probability"] == pytest.approx(2 / 3, abs=1e-5)
    assert outputs[3]["class_id"] == 1 and outputs[3]["probability"] == pytest.approx(2 / 3, abs=1e-5)


def test_file_and_udp_sinks_carry_json_lines(tmp_path):
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    receiver.settimeout(2)
    udp = open_sink(f"udp://127.0.0.1:{receiver.getsockname()[1]}")
    path = tmp_path / "results.jsonl"
    file_sink = open_sink(str(path))
    for sink in (udp, file_sink):
        sink.write('{"frame":0}')
        sink.write('{"frame":1}')
        sink.close()
    assert [json.loads(receiver.recv(65536))["frame"] for _ in range(2)] == [0, 1]
    assert path.read_text() == '{"frame":0}\n{"frame":1}\n'
    with pytest.raises(EdgeError, match="expected udp://HOST:PORT"):
        open_sink("udp://nowhere")


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_a_results_file_that_cannot_be_written_is_a_one_line_error():
    sink = open_sink("/dev/full")  # every write: ENOSPC, as on a full disk
    with pytest.raises(EdgeError, match="/dev/full: cannot write results: No space left on device"):
        sink.write('{"frame":0}')
    with pytest.raises(EdgeError, match="/dev/full: cannot write results"):
        sink.close()


@pytest.mark.parametrize("uri, message", [
    ("display://0", "display://0: unknown output scheme display:// (outputs are JSON lines: -, a file, file://PATH or "
     "udp://HOST:PORT)"),
    ("RTP://10.0.0.2:5000", "RTP://10.0.0.2:5000: unknown output scheme rtp:// (outputs are JSON lines: -, a file, "
     "file://PATH or udp://HOST:PORT)"),
    ("out.mp4", "out.mp4: --output writes JSON lines, not video; for the frames with their labels drawn, use "
     "--annotate out.mp4"),
    ("file://clip.AVI", "clip.AVI: --output writes JSON lines, not video; for the frames with their labels drawn, use "
     "--annotate clip.AVI"),
])
def test_outputs_that_are_not_json_lines_are_refused_by_name(tmp_path, monkeypatch, uri, message):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(EdgeError) as refused:
        open_sink(uri)
    assert str(refused.value) == message
    assert list(tmp_path.iterdir()) == []  # nothing written: no display:/0 folder, no out.mp4 of JSON
