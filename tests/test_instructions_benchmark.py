"""``benchmarks.instructions`` reads callgrind's per-thread files right (running it takes valgrind minutes: by hand).

Its child part runs here without valgrind, to show which names it writes down for the thread numbers.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path

from benchmarks import instructions
from benchmarks.overhead import OURS


def write(out: Path, name: str, text: str) -> None:
    (out / name).write_text(text)


def test_threads_are_named_in_the_order_they_started_and_the_extra_invokes_counted(tmp_path: Path) -> None:
    runs = []
    for invokes, totals in ((10, (700, 40, 90)), (210, (1_700, 240, 490))):
        out = tmp_path / str(invokes)
        out.mkdir()
        write(out, "cg.41", "# callgrind format\nevents: Ir\n")  # the process's own file, no totals
        for number, total in enumerate(totals, 1):
            write(out, f"cg.41-{number:02d}", f"# callgrind format\nevents: Ir\nfn=x\n1 {total}\nsummary: {total}\n")
        write(out, "cg.99-01", f"summary: {5 * invokes}\n")  # a sink's process: its threads summed
        write(out, "cg.99-02", "summary: 1\n")
        (out / "names.json").write_text(json.dumps({"pid": 41, "names": ["vital-dispatch", "vital-sink-sql"],
                                                    "reused": False}))
        runs.append(instructions.read_run(out, out / "names.json"))
    assert instructions.per_invoke(runs[0], runs[1], 200) == {"caller": 5.0, "vital-dispatch": 1.0,
                                                              "vital-sink-sql": 2.0, "other processes": 5.0}


def test_a_reused_thread_number_is_not_given_a_name(tmp_path: Path) -> None:
    write(tmp_path, "cg.7-01", "totals: 10\n")
    write(tmp_path, "cg.7-02", "totals: 3\n")
    (tmp_path / "names.json").write_text(json.dumps({"pid": 7, "names": ["short-lived", "vital-dispatch"],
                                                     "reused": True}))
    assert instructions.read_run(tmp_path, tmp_path / "names.json").threads == {"caller": 10, "thread 2": 3}


def test_a_thread_started_outside_threading_leaves_the_numbers_unnamed(tmp_path: Path) -> None:
    for number in (1, 2, 3):
        write(tmp_path, f"cg.7-{number:02d}", f"totals: {number}\n")
    (tmp_path / "names.json").write_text(json.dumps({"pid": 7, "names": ["vital-dispatch"], "reused": False}))
    assert instructions.read_run(tmp_path, tmp_path / "names.json").threads == {"caller": 1, "thread 2": 2,
                                                                                 "thread 3": 3}


def test_the_child_writes_down_our_threads_in_the_order_they_start(tmp_path: Path) -> None:
    names = tmp_path / "names.json"
    start, handlers = threading.Thread.start, list(logging.getLogger("vital_callbacks").handlers)
    instructions.child(OURS, 1, None, names)
    assert threading.Thread.start is start  # put back as it was, and the logger too
    assert logging.getLogger("vital_callbacks").handlers == handlers
    assert json.loads(names.read_text()) == {"pid": os.getpid(),
                                             "names": ["vital-dispatch", "vital-sink-sql", "vital-sink-prometheus"],
                                             "reused": False, "problems": []}
