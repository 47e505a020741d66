"""`hitl eval`: labelled rows through the judge, figures, the review/escaped table and the diagram."""

from __future__ import annotations

import json
import math
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from gateway.cli import app as cli
from gateway.learning import evaluation
from tests import factories
from tests.factories import UPSTREAM, judge_reply

runner = CliRunner()
DATA = Path(__file__).parents[2] / "benchmarks" / "data" / "nq_rated.jsonl"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"question": "q", "candidate": "c", "label": 1}\nnot json\n', "line 2: not a JSON object"),
        ('{"question": "q", "label": 1}\n', "line 1: `candidate` must be a string"),
        ('{"question": "q", "candidate": "c", "label": 2}\n', "line 1: `label` must be 0 or 1"),
        ('{"question": "q", "candidate": "c", "label": true}\n', "line 1: `label` must be 0 or 1"),
        ("[1, 2]\n", "line 1: not a JSON object"),
        ("\n\n", "no rows"),
    ],
)
def test_bad_rows_files_name_the_line(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_text(content)
    with pytest.raises(evaluation.EvalFileError, match=message):
        evaluation.read_rows(path)


def test_limit_takes_the_same_sample_for_the_same_seed() -> None:
    first = evaluation.read_rows(DATA, limit=25, seed=3)
    assert len(first) == 25 and first == evaluation.read_rows(DATA, limit=25, seed=3)
    assert first != evaluation.read_rows(DATA, limit=25, seed=4)


def judge_by_label(rows: dict[str, int]) -> object:
    """A judge that says yes more often to right answers: P(yes) 0.8 or 0.3, with a little spread."""

    def respond(request: httpx.Request) -> httpx.Response:
        prompt = json.loads(request.content)["messages"][0]["content"]
        answer = prompt.split("Proposed answer: ")[1].split("\n")[0]
        if answer == "UNREADABLE":
            reply = judge_reply(yes=None, text="hmm")
            reply["choices"][0]["logprobs"] = {"content": [{"token": "The", "logprob": -0.1, "top_logprobs": []}]}
            return httpx.Response(200, json=reply)
        base = 0.8 if rows[answer] == 1 else 0.3
        return httpx.Response(200, json=judge_reply(yes=base + (len(answer) % 7) / 50))

    return respond


def test_eval_prints_figures_table_and_writes_the_diagram(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, upstream: factories.UpstreamMock
) -> None:
    rows = [{"question": f"q{i}", "candidate": f"answer {i}", "label": int(i % 3 == 0)} for i in range(40)]
    rows.append({"question": "q-x", "candidate": "UNREADABLE", "label": 1})
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    monkeypatch.setenv("HITL_UPSTREAMS", json.dumps([{"name": "judge", "api_base": UPSTREAM}]))
    monkeypatch.delenv("HITL_CONFIG", raising=False)
    diagram, scores = tmp_path / "reliability.png", tmp_path / "scores.jsonl"
    upstream.respond(judge_by_label({r["candidate"]: r["label"] for r in rows}))
    result = runner.invoke(
        cli, ["eval", str(path), "--diagram", str(diagram), "--scores", str(scores), "--concurrency", "3"]
    )
    assert result.exit_code == 0, result.output
    out = result.output
    assert "41 rows judged by judge; 1 verdicts missing (left out)" in out
    assert "labelled correct: 14, wrong: 26" in out
    line = out.split("AUROC  ECE    Brier  PRR\n")[1].splitlines()[0]
    auroc, ece, brier, prr = (float(cell) for cell in line.split()[-4:])
    assert auroc == 1.0 and prr == pytest.approx(1.0)  # the mocked judge separates the classes perfectly
    assert 0 < ece < 0.5 and 0 < brier < 0.5
    assert "threshold  review rate  escaped-error rate" in out
    assert diagram.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    written = [json.loads(line) for line in scores.read_text().splitlines()]
    assert len(written) == 41 and written[-1]["p_yes"] is None and written[-1]["missing"] == "selfcheck:no_yes_no_token"
    assert not math.isnan(written[0]["p_yes"])


def test_eval_rejects_an_unknown_judge(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HITL_UPSTREAMS", json.dumps([{"name": "judge", "api_base": UPSTREAM}]))
    result = runner.invoke(cli, ["eval", str(DATA), "--judge", "gpt-judge", "--limit", "2"])
    assert result.exit_code == 1 and "judge 'gpt-judge' is not one of the models offered" in result.output


def test_eval_reports_a_bad_file(tmp_path: Path) -> None:
    result = runner.invoke(cli, ["eval", str(tmp_path / "missing.jsonl")])
    assert result.exit_code == 1 and "cannot read" in result.output
