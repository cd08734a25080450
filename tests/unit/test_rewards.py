"""The math reward on real-looking responses, and the worker pool's timeout."""

import contextlib
import os
import signal
import time

import pytest

from tgpo_megatron.rewards import RewardScorer
from tgpo_megatron.rewards.choice import choice_score
from tgpo_megatron.rewards.math import boxed_grader, eval_score, score_response


def think(answer: str) -> str:
    return "Let me work through this carefully.\nFirst ... then ...\n</think>\n" + answer


# (response, ground truth, expected reward)
CASES = [
    (think("The answer is $\\boxed{42}$."), "42", 1),
    (think("So the answer is \\boxed{41}."), "42", 0),
    (think("\\boxed{\\frac{1}{2}}"), "\\frac{1}{2}", 1),
    (think("\\boxed{\\dfrac{1}{2}}"), "\\frac12", 1),
    (think("\\boxed{0.5}"), "\\frac{1}{2}", 1),
    (think("\\boxed{\\frac{2}{4}}"), "\\frac{1}{2}", 1),
    (think("\\boxed{\\frac{1}{3}}"), "\\frac{1}{2}", 0),
    (think("\\boxed{-\\frac{3}{4}}"), "-0.75", 1),
    (think("\\boxed{(2, 5]}"), "(2,5]", 1),
    (think("\\boxed{[2, 5)}"), "(2,5]", 0),
    (think("\\boxed{(-\\infty, 3)}"), "(-\\infty,3)", 1),
    (think("\\boxed{x \\in [0, 1]}"), "[0,1]", 1),
    (think("\\boxed{\\sqrt{2}}"), "\\sqrt{2}", 1),
    (think("\\boxed{2\\sqrt{2}}"), "\\sqrt{8}", 1),
    (think("\\boxed{\\sqrt{3}}"), "\\sqrt{2}", 0),
    (think("\\boxed{\\pi}"), "\\pi", 1),
    (think("\\boxed{2\\pi}"), "\\pi", 0),
    (think("\\boxed{x = 3}"), "3", 1),
    (think("\\boxed{3, 5}"), "3,5", 1),
    (think("\\boxed{5, 3}"), "3, 5", 1),
    (think("\\boxed{90^\\circ}"), "90", 1),
    (think("\\boxed{90^{\\circ}}"), "90", 1),
    (think("\\boxed{12\\text{ cm}}"), "12", 1),
    (think("\\boxed{15\\%}"), "15", 1),
    (think("\\boxed{\\$18.90}"), "18.90", 1),
    (think("\\boxed{12,345}"), "12345", 1),
    (think("\\boxed{1000}"), "10^3", 1),
    (think("\\boxed{2^{10}}"), "1024", 1),
    (think("\\boxed{\\left(1, 2\\right)}"), "(1,2)", 1),
    (think("\\boxed{\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}}"), "\\begin{pmatrix}1\\\\2\\end{pmatrix}", 1),
    (think("\\boxed{x^2 + 2x + 1}"), "(x+1)^2", 1),
    (think("\\boxed{x^2 + 1}"), "(x+1)^2", 0),
    (think("\\boxed{\\text{(C)}}"), "C", 1),
    (think("\\boxed{B}"), "C", 0),
    (think("\\boxed{\\infty}"), "\\infty", 1),
    (think("The final answer is 7."), "7", 1),  # no box: math_verify still reads the final number
    (think("I could not finish."), "7", 0),
    (think(""), "7", 0),
    (think("\\boxed{-7}"), "7", 0),
    (think("\\boxed{7.000}"), "7", 1),
    (think("\\boxed{\\frac{\\sqrt{3}}{2}}"), "\\frac{\\sqrt3}{2}", 1),
    (think("\\boxed{\\frac{1}{\\sqrt{2}}}"), "\\frac{\\sqrt{2}}{2}", 1),
    ("I think \\boxed{42} but never closed my thoughts", "42", 0),  # no </think>: 0 by protocol
    ("<think>\\boxed{41}</think> \\boxed{42}", "42", 1),  # only the text after </think> counts
    ("</think> \\boxed{42} </think> \\boxed{41}", "42", 1),  # the answer ends at a second </think>
    ("</think> \\boxed{41} </think> \\boxed{42}", "42", 0),
]


@pytest.mark.parametrize("response, truth, expected", CASES, ids=[f"case{i}" for i in range(len(CASES))])
def test_reward_cases(response, truth, expected):
    """The training reward with both judges (``any_true``)."""
    assert score_response(response, truth, any_true=True)[0] == expected


@pytest.mark.parametrize("response, truth, expected", CASES, ids=[f"case{i}" for i in range(len(CASES))])
def test_evaluation_judge_agrees_when_thoughts_are_closed(response, truth, expected):
    """Where the response closes its thoughts, the evaluation judge is math_verify or the boxed grader on the
    same answer: the table's verdicts."""
    if "</think>" in response:
        assert eval_score(response, truth)[0] == expected


# (response, ground truth, training reward as the authors train (math_verify alone), evaluation verdict)
JUDGES = [
    ("I think \\boxed{42} but never closed my thoughts", "42", 0, 1),  # evaluation credits a correct box
    ("I think \\boxed{41} but never closed my thoughts", "42", 0, 0),
    ("never closed, and no box: 42", "42", 0, 0),
    (think("\\boxed{12\\text{ cm}}"), "12", 1, 1),
    (think("\\boxed{\\text{(C)}}"), "C", 1, 1),
    (think("\\boxed{50\\%}"), "50", 1, 1),
    (think("\\boxed{(1, 2)}"), "(1,2)", 1, 1),
    (think("\\boxed{[1, 2)}"), "(1,2)", 0, 0),
]


@pytest.mark.parametrize("response, truth, training, evaluation", JUDGES, ids=[f"judge{i}" for i in range(len(JUDGES))])
def test_training_and_evaluation_judges(response, truth, training, evaluation):
    assert score_response(response, truth)[0] == training
    assert eval_score(response, truth)[0] == evaluation


@pytest.mark.parametrize(
    "response, expected",
    [
        ("the sum is 42, so \\boxed{42}", 1),  # no </think> at all: the whole text is read
        ("a trace cut at the budget, after stating the answer: \\boxed{42} and more thoughts", 1),
        (think("\\boxed{41}"), 0),
        ("   ", 0),
    ],
)
def test_the_authors_filter_judge_reads_the_whole_text(response, expected):
    """prepare_data.py filter --judge whole-text: math_verify on the whole response (the authors' my_verify.py),
    where the training reward needs a closed thought."""
    from tgpo_megatron.rewards.math import whole_text_score

    assert whole_text_score(response, "42")[0] == expected
    if "</think>" not in response:
        assert score_response(response, "42")[0] == 0


def test_reasons():
    assert score_response("no end of thoughts", "1") == (0.0, "no_think_end")
    assert score_response("</think>   ", "1") == (0.0, "no_answer")
    assert score_response(think("\\boxed{2}"), "1") == (0.0, "wrong")
    assert score_response(think("\\boxed{1}"), "1") == (1.0, "correct")


@pytest.mark.parametrize(
    "text, truth, expected",
    [
        ("\\boxed{\\dfrac{3}{4}}", "0.75", True),
        ("\\boxed{12\\text{ cm}}", "12", True),
        ("\\boxed{13}", "12", False),
        ("12", "12", False),  # boxed answers only
        ("\\boxed{1} and then \\boxed{7}", "7", True),  # the last box
        ("\\boxed{7.000}", "7", True),
        ("\\boxed{7.5}", "7", False),
        ("\\boxed{1,000}", "1000", True),
        ("\\boxed{x = 5}", "5", True),
        ("\\boxed{\\$18.90}", "18.9", True),
        ("\\boxed{90^\\circ}", "90", True),
        ("\\boxed{(1, \\frac{1}{2})}", "(1,0.5)", True),  # element by element
        ("\\boxed{(1, 2, 3)}", "(1,2)", False),
        ("\\boxed{}", "7", False),
        ("\\boxed{7}", "\\boxed{7}", True),  # a boxed ground truth is unboxed first
    ],
)
def test_boxed_grader_on_its_own(text, truth, expected):
    assert boxed_grader(text, truth) is expected


def slow_when_asked(response, truth):
    if response == "hang":
        time.sleep(60)
    if response == "crash":
        raise RecursionError("parser blew up")
    return (1.0, "correct") if response == truth else (0.0, "wrong")


def test_pool_times_out_a_stuck_item_and_keeps_the_batch(fault_row):
    scorer = RewardScorer(workers=2, timeout_s=1.5, fn=slow_when_asked)
    try:
        start = time.monotonic()
        scores, reasons = scorer.score(["a", "hang", "b", "crash", "c"], ["a", "x", "x", "x", "c"])
        assert scores == [1.0, 0.0, 0.0, 0.0, 1.0]
        assert reasons == {"correct": 2, "wrong": 1, "timeout": 1, "error": 1}
        assert time.monotonic() - start < 15
        assert scorer.score(["d"], ["d"]) == ([1.0], {"correct": 1})  # a fresh pool: the stuck worker was killed
    finally:
        scorer.close()
    fault_row(
        "a reward judge that hangs on one answer, or raises on one",
        "that answer scores 0 (reason `timeout` or `error` in `reward/`); the batch keeps every other score, the "
        "stuck worker is replaced",
        "that answer's reward",
        None,
    )


def killed_once(response, truth):
    """The worker scoring "die" is killed (SIGKILL) the first time, as by the OOM killer."""
    flag = os.environ["TGPO_TEST_KILLED_ONCE"]
    if response == "die" and not os.path.exists(flag):
        open(flag, "w").close()
        os.kill(os.getpid(), signal.SIGKILL)
    return (1.0, "correct") if response == truth else (0.0, "wrong")


def test_a_reward_worker_killed_mid_batch_costs_time_not_scores(tmp_path, monkeypatch, fault_row):
    monkeypatch.setenv("TGPO_TEST_KILLED_ONCE", str(tmp_path / "killed"))
    scorer = RewardScorer(workers=2, timeout_s=1.5, fn=killed_once)
    try:
        scores, reasons = scorer.score(["a", "die", "b", "c"], ["a", "die", "x", "c"])
        assert (tmp_path / "killed").exists() and scores == [1.0, 1.0, 0.0, 1.0], reasons
    finally:
        scorer.close()
    fault_row(
        "a reward worker killed (SIGKILL) in the middle of a batch",
        "its chunk times out and is scored again, item by item, on a fresh pool: every score comes back right",
        "a timeout's worth of time",
        None,
    )


def test_a_stuck_item_in_a_large_batch_zeroes_only_itself():
    """Items travel in chunks; the chunk holding the stuck item is rescored item by item."""
    scorer = RewardScorer(workers=2, timeout_s=1.5, fn=slow_when_asked)
    responses = ["a"] * 20 + ["hang"] + ["b"] * 19
    try:
        start = time.monotonic()
        scores, reasons = scorer.score(responses, ["a"] * 20 + ["x"] + ["b"] * 19)
        assert scores == [1.0] * 20 + [0.0] + [1.0] * 19
        assert reasons == {"correct": 39, "timeout": 1}
        assert time.monotonic() - start < 2 * 1.5 + 10  # the chunk's timeout, then the item's
    finally:
        scorer.close()


# Answers that cost the real judges seconds each (measured: deep nesting and a power tower ~5 s, until
# math_verify's own timeouts; huge boxes ~1 s before the length cap); plain repetition is cheap.
PATHOLOGICAL = [
    "</think>\\boxed{" + "\\frac{1}{" * 60 + "2" + "}" * 60 + "}",
    "</think>\\boxed{" + "^".join(["2"] * 40) + "}",
    "</think>\\boxed{" + "1" * 200_000 + "}",
    "</think>" + "\\boxed{1}" * 20_000,
] * 2


def test_a_batch_of_pathological_answers_is_bounded_by_its_deadline(fault_row):
    """With 2 workers and a 2 s item limit, 8 pathological answers would take minutes one after the other;
    the deadline ends the batch, the ordinary answers keep their scores, and the pool is usable after."""
    scorer = RewardScorer(workers=2, timeout_s=2.0)
    ordinary = ["</think>\\boxed{7}", "</think>\\boxed{8}"] * 4
    try:
        start = time.monotonic()
        scores, reasons = scorer.score(ordinary + PATHOLOGICAL, ["7"] * 16, deadline_s=4.0)
        elapsed = time.monotonic() - start
        assert scores[:8] == [1.0, 0.0] * 4 and scores[8:] == [0.0] * 8
        assert reasons["correct"] == 4 and reasons["wrong"] >= 4 and reasons["deadline"] >= 1
        assert set(reasons) <= {"correct", "wrong", "timeout", "deadline"}
        assert elapsed < 4.0 + 3.0  # the deadline, and tearing the stuck pool down
        assert scorer.score(["</think>\\boxed{7}"], ["7"]) == ([1.0], {"correct": 1})
    finally:
        scorer.close()
    fault_row(
        "a batch with pathological answers (deep nesting, power towers, 200k-character boxes)",
        "scoring ends at the batch's deadline: the ordinary answers keep their scores, the unfinished ones score 0",
        "the unfinished answers' rewards",
        None,
    )


def test_the_judges_read_the_end_of_a_long_answer():
    padding = "x " * 20_000
    assert score_response(f"</think>{padding}\\boxed{{7}}", "7") == (1.0, "correct")
    assert not boxed_grader(f"\\boxed{{7}}{padding}", "7")  # beyond the last MAX_JUDGED_CHARS characters


def test_workers_die_with_a_killed_trainer():
    """A trainer killed by SIGKILL (preemption) must not leave scoring workers behind."""
    import os
    import signal
    import subprocess
    import sys
    import time

    code = (
        "import os, time\nfrom tgpo_megatron.rewards import RewardScorer\n"
        "s = RewardScorer(workers=2)\nprint(s.score(['</think>\\\\boxed{2}'], ['2'])[0], os.getpid(), flush=True)\n"
        "time.sleep(120)\n"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    line = parent.stdout.readline().split()
    assert line[0] == "[1.0]"
    pid = int(line[1])
    workers = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    assert len(workers) >= 2
    os.kill(pid, signal.SIGKILL)
    parent.wait()
    deadline = time.time() + 10
    while time.time() < deadline:
        alive = [
            w for w in workers if os.path.exists(f"/proc/{w}") and open(f"/proc/{w}/stat").read().split()[2] != "Z"
        ]
        if not alive:
            break
        time.sleep(0.1)
    assert not alive


# (response, ground-truth letter, expected): the multiple-choice judge of the OOD sets
CHOICE_CASES = [
    (think("The answer is \\boxed{C}."), "C", 1),
    (think("\\boxed{(C)}"), "C", 1),
    (think("\\boxed{\\text{C}}"), "(C)", 1),
    (think("\\boxed{C) 42 joules}"), "C", 1),
    (think("\\boxed{c}"), "C", 1),
    (think("\\boxed{B}"), "C", 0),
    (think("\\boxed{42}"), "C", 0),  # a number is not a choice
    (think("So the answer is (J)."), "J", 1),  # MMLU-Pro has ten options
    (think("Answer: D"), "D", 1),
    (think("A is tempting, B too; the answer is C."), "C", 1),  # the stated answer, not the first letter
    (think("I am not sure."), "C", 0),
    ("never closed the thoughts but \\boxed{C}", "C", 1),  # as the evaluation judge reads boxes
    ("<think>\\boxed{A}</think> \\boxed{C}", "C", 1),  # the answer after </think>
]


@pytest.mark.parametrize(
    "response, truth, expected", CHOICE_CASES, ids=[f"choice{i}" for i in range(len(CHOICE_CASES))]
)
def test_multiple_choice_judge(response, truth, expected):
    assert choice_score(response, truth)[0] == expected


def test_multiple_choice_reasons():
    assert choice_score(think("I am not sure."), "C") == (0.0, "no_answer")
    assert choice_score(think("\\boxed{B}"), "C") == (0.0, "wrong")


def test_a_stop_signal_to_the_trainers_process_group_leaves_the_workers_to_the_trainer():
    """torchrun stops a rank by signalling its whole process group (``killpg``). Workers in that group died of
    it, one of them holding the pool's queue lock, and the trainer's ``close`` then waited on that lock forever:
    after a lost rank the surviving ranks hung until torchrun's SIGKILL, 30 s later. The trainer (which handles
    SIGTERM itself) must close its workers and exit."""
    import subprocess
    import sys

    code = (
        "import signal, time\nfrom tgpo_megatron.rewards import RewardScorer\n"
        "signal.signal(signal.SIGTERM, lambda *_: print('stop requested', flush=True))\n"
        "s = RewardScorer(workers=2)\nprint(s.score(['</think>\\\\boxed{2}'], ['2'])[0], flush=True)\n"
        "time.sleep(2)\ns.close()\nprint('closed', flush=True)\n"
    )
    trainer = subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    try:
        assert trainer.stdout.readline().strip() == "[1.0]"
        os.killpg(trainer.pid, signal.SIGTERM)  # as torchrun signals a rank
        out, _ = trainer.communicate(timeout=30)
        assert out.split() == ["stop", "requested", "closed"], out
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(trainer.pid, signal.SIGKILL)


def test_closing_a_pool_whose_workers_died_waiting_for_work_returns():
    """An idle worker holds the task queue's read lock while it waits; workers SIGKILLed then (by the OOM
    killer, or torn down mid-read) left that lock held for good, and ``Pool.terminate`` waited on it forever:
    the flaky hang of the killed-worker test under load. ``close`` must return."""
    import multiprocessing
    import threading

    scorer = RewardScorer(workers=2, timeout_s=5.0)
    assert scorer.score(["</think>\\boxed{2}"], ["2"])[0] == [1.0]  # the workers are up and idle
    for worker in multiprocessing.active_children():
        os.kill(worker.pid, signal.SIGKILL)
    closing = threading.Thread(target=scorer.close, daemon=True)
    closing.start()
    closing.join(timeout=30)
    assert not closing.is_alive(), "close() hung on a lock a dead worker held"
