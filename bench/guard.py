"""Guard benchmark: what the checks of a message to the citizen cost, per message.

What it measures
    The two checks every message to a citizen passes before it is stored (the API and
    polling alike, ``updates.reply`` then ``updates.guard``), called in this process on
    messages built in memory (no HTTP, no database):

    - the content check, ``rules.check_care_message``: count, size and type of the files,
      and each file whole (a PDF parsed by pypdf and searched for JavaScript, launch
      actions and embedded files; issue 17, item 5);
    - the wrong-patient guard, ``rules.wrong_patient_guard``: the subject, the body and
      the text of every page of every PDF searched for personnummer (issue 17, item 1).

    For each message shape, several rounds: the wall time of each check and of both
    (median, and min–max as the spread), and in one more round under tracemalloc the peak
    of Python memory both take beyond the message itself (pypdf is pure Python, so its
    allocations are all counted). The ratio is the median of both checks against the
    message without a file, in the same run.

    Shapes (each PDF is real, with a correct xref, written by tests/sample_files.py; its
    pages carry text that the guard reads, with the citizen's own number, so nothing is held):
    - no file: a 2 KB body;
    - a 20 MiB PDF of one page with a 20 MiB picture (what a scanner writes);
    - a 20 MiB PDF of 100 pages of text and a picture filling it to 20 MiB;
    - a PDF of 500 pages of text (0.5 MB): the cost grows with pages, not bytes.

    And the content check of two pictures (the guard reads no pictures), each in a child
    process of its own, because Pillow's pixels are not Python allocations: a 24-megapixel
    JPEG photo and a 12-megapixel PNG, their time and the rise of the child's peak resident
    memory (``VmHWM``) while it checks them.

How to run (from the project folder)
    .venv/bin/python bench/guard.py [--rounds N] [--pages N]

    Defaults: --rounds 7 --pages 500 (about a minute on 2 cores).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import rules  # noqa: E402
import sample_files  # noqa: E402 - real PDFs, as the tests build them
from clock import SYSTEM  # noqa: E402
from model import Attachment, Message  # noqa: E402

MIB = 1024 * 1024
PNR = "191212121212"  # the citizen's own number: the guard finds it and holds nothing
WORDS = ("patienten har inkommit med synpunkter om bemötandet vid besöket och vi har gått igenom journalen "
         "provsvaren läkemedel remiss återbesök mottagningen").split()


def page_text(rng: random.Random) -> str:
    return f"Journalkopia för {PNR}. " + " ".join(rng.choice(WORDS) for _ in range(80))


def message(files: tuple[Attachment, ...]) -> Message:
    body = ("Hej! Här kommer beslutet i ditt ärende. " * 50)[:2000]
    return Message(case_id="1177-C-0001", message_id="BENCH-1", created_time=SYSTEM.instant(), text=body,
                   direction="out", kind="FINAL_REPLY", subject="Beslut", attachments=files,
                   sender_hsa_id="SE5566778899-KLIN1", sender_name="Klinik 1")


def shapes(pages: int) -> list[tuple[str, Message]]:
    rng = random.Random(17)
    scan = sample_files.pdf(page_text(rng), size=20 * MIB, seed=os.urandom(1 << 16))
    mixed = sample_files.pdf(*[page_text(rng) for _ in range(100)], size=20 * MIB, seed=os.urandom(1 << 16))
    text = sample_files.pdf(*[page_text(rng) for _ in range(pages)])
    return [
        ("no file (2 KB body)", message(())),
        ("20 MiB PDF: 1 page, a 20 MiB picture (a scan)", message((Attachment("skannad.pdf", "application/pdf", scan),))),
        ("20 MiB PDF: 100 pages of text and a picture", message((Attachment("journal.pdf", "application/pdf", mixed),))),
        (f"{len(text) / MIB:.1f} MiB PDF: {pages} pages of text", message((Attachment("journal.pdf", "application/pdf", text),))),
    ]


def content_check(m: Message) -> None:
    rules.check_care_message(m)


def guard(m: Message) -> None:
    outcome = rules.wrong_patient_guard(m, [PNR])
    if outcome.held or outcome.not_checked:
        raise SystemExit(f"the guard should pass the benchmark's message: {outcome}")


def both(m: Message) -> None:
    content_check(m)
    guard(m)


def timed(fn: Callable[[Message], None], m: Message) -> float:
    started = time.perf_counter()
    fn(m)
    return (time.perf_counter() - started) * 1000


def peak_mib(m: Message) -> float:
    tracemalloc.start()
    try:
        both(m)
        return tracemalloc.get_traced_memory()[1] / MIB
    finally:
        tracemalloc.stop()


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} ({min(values):.2f}–{max(values):.2f})"


PICTURES = (("JPEG", 6000, 4000), ("PNG", 4000, 3000))


def picture(kind: str, width: int, height: int) -> bytes:
    """A photo-like picture: smooth colour with a little noise (compresses as photos do)."""
    from PIL import Image

    noise = Image.frombytes("L", (width, height), os.urandom(width * height)).point(lambda v: v // 16)
    base = Image.radial_gradient("L").resize((width, height))
    image = Image.merge("RGB", (base, Image.blend(base, noise, 0.5), noise))
    out = io.BytesIO()
    image.save(out, format=kind, **({"quality": 90} if kind == "JPEG" else {"compress_level": 6}))
    return out.getvalue()


def picture_child(spec: str) -> None:
    """In a child process: check the picture in a file ``rounds`` times; print JSON figures
    (the file is made by the parent, so that making it does not set the child's peak)."""
    kind, path, rounds = spec.split(":")
    data = Path(path).read_bytes()
    mime = "image/jpeg" if kind == "JPEG" else "image/png"
    files = (Attachment(f"bild.{kind.lower()}", mime, data),)
    before = peak_rss_kib()
    times = [timed(content_check, message(files)) for _ in range(int(rounds))]
    print(json.dumps({"bytes": len(data), "times": times, "rss_rise_mib": (peak_rss_kib() - before) / 1024}))


def peak_rss_kib() -> int:
    """This process's peak resident memory (VmHWM; unlike ru_maxrss, not inherited from the
    parent across exec)."""
    status = Path("/proc/self/status").read_text()
    return int(status.split("VmHWM:")[1].split()[0])


def pictures(rounds: int) -> list[tuple[str, dict]]:
    found = []
    with tempfile.TemporaryDirectory(prefix="bench-guard-") as folder:
        for kind, width, height in PICTURES:
            path = Path(folder) / f"picture.{kind.lower()}"
            path.write_bytes(picture(kind, width, height))
            out = subprocess.run([sys.executable, __file__, "--picture-child", f"{kind}:{path}:{rounds}"],
                                 capture_output=True, text=True, check=True).stdout
            found.append((f"{kind} {width} × {height} ({width * height / 1e6:.0f} MP)", json.loads(out)))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--pages", type=int, default=500)
    parser.add_argument("--picture-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.picture_child:
        picture_child(args.picture_child)
        return
    cores = len(os.sched_getaffinity(0))
    print(f"machine  {cores} cores (nproc), {platform.processor() or platform.machine()}, Python "
          f"{sys.version.split()[0]}, {platform.system()} {platform.release()}; pypdf {rules.pypdf.__version__}")
    print(f"date     {SYSTEM.local_time():%Y-%m-%d %H:%M} (Sweden); rounds {args.rounds}")
    print(f"command  .venv/bin/python bench/guard.py --rounds {args.rounds} --pages {args.pages}")
    built = shapes(args.pages)
    results = []
    for name, m in built:
        both(m)  # warm up: imports, caches
        checks, guards, totals = [], [], []
        for _ in range(args.rounds):
            checks.append(timed(content_check, m))
            guards.append(timed(guard, m))
            totals.append(timed(both, m))
        results.append((name, m, checks, guards, totals, peak_mib(m)))
    base = statistics.median(results[0][4])
    print()
    print("| message | file bytes | content check, ms | guard, ms | both, ms | × no file | peak memory of both, MiB |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, m, checks, guards, totals, peak in results:
        size = sum(a.size for a in m.attachments)
        ratio = statistics.median(totals) / base if base else float("nan")
        print(f"| {name} | {size} | {spread(checks)} | {spread(guards)} | {spread(totals)} | {ratio:.0f} | {peak:.1f} |")
    print("\nms: median (min–max) of the rounds; memory: the peak of Python allocations during both checks, "
          "beyond the message itself (tracemalloc).")
    print()
    print("| picture (content check only) | file bytes | content check, ms | × no file | peak RSS rise, MiB |")
    print("|---|---:|---:|---:|---:|")
    for name, figures in pictures(args.rounds):
        ratio = statistics.median(figures["times"]) / base if base else float("nan")
        print(f"| {name} | {figures['bytes']} | {spread(figures['times'])} | {ratio:.0f} | "
              f"{figures['rss_rise_mib']:.0f} |")


if __name__ == "__main__":
    main()
