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


# Kept by hand: the attacks of the 1.1 hardening, each a test in the suite.
HARDENING = """
## Shelf 1.1: what real deployments broke, and what holds now

Shelf 1.0 was tried as admins and users would: many sessions at once, files planted in the
library folder by other accounts, a master killed with SIGKILL, a burst of clients, a real
systemd. Each attack below is a test that failed on 1.0 and passes on 1.1
(`tests/test_hardening.py`, `tests/test_cli_hardening.py`, `tests/test_logrotate.py`,
`tests/system/test_systemd.py` under `make test-systemd`).

| attack | 1.0 | 1.1 |
|---|---|---|
| 8 sessions × 300 LISTs of a 50-file library, fork and `--prefork` | 474–1,015 of 1,800 wrong (one shared directory read position) | 2,400 of 2,400 exact in both modes (each LIST opens the folder anew) |
| `.shelf-cache` planted as a symlink to a folder outside the root | HASH wrote there and returned a forged digest | the link is never followed: no cache, true digest, nothing written outside |
| cache entry planted as a FIFO / folder / non-UTF-8 / garbage | hang past the idle timeout / session crash | a cache miss: the true digest at once |
| HASH on a full disk | zero-byte cache temporaries left for good | none left |
| a folder planted at `.shelf-upload.<pid>` | the session crashed with no reply | the upload takes another temporary name and succeeds |
| a second shelfd started on the same root | deleted the first one's in-flight temporary | temporaries are `flock`-ed; clean-up removes only unlocked ones; the upload completes |
| master killed with SIGKILL while a session lives (fork and prefork) | restart said `already running` as long as the orphan lived; orphaned workers kept the port | restart succeeds at once on the same port and PID file; orphans finish their session; ready workers leave (PR_SET_PDEATHSIG) |
| SIGHUP with the log folder removed; `max_upload = inf` in the config; a session killed by signal 40 | the master died | logged, the master goes on serving (`reload ignored`, `killed by SIGRTMIN+6`) |
| master out of descriptors | spun at up to 81% CPU writing 2 MB/s of log | accept paused 0.5 s at a time, one log line per 10 s, the waiting client is served when descriptors come back |
| `--max-upload inf`, `1e999`, `--idle-timeout inf`, `--log-file` in a missing folder or naming a folder, `--pidfile` naming a folder or a FIFO | tracebacks, or a start that hung forever | one line, non-zero exit |
| 8 daemons started at once on one PID file | 4 kept running | exactly 1 (the lock is taken before anything else) |
| 300 clients connecting at once | 21–39 never greeted (backlog 128) | every one gets `READY` or `BUSY` (backlog 1024, `--backlog`) |
| one address holding every session slot | possible | `--max-per-ip` (default a quarter of `--max-clients`, at least 4), also across `--prefork` processes (a shared table) |
| 200 KB of empty lines; ESC/BEL/CR in a verb | the log grew by 24.6 MB; control characters written raw | under 100 KB (a per-session budget of 200 lines, then 20 a second, with a count of what was left out); control characters escaped |
| a 5.3 MB LIST read steadily at 1.5 MB/s with a 1 s idle timeout | cut off at the idle timeout | served whole: idle means no progress (the unacknowledged bytes are asked of the kernel) |
| `GET f 00000000000000000005` | "not a decimal" | served from byte 5 |
| packaged shelfd under a real systemd 252 (booted with systemd-nspawn) | never became active; restarted every 92 s | active in 0.3 s; reload applies the ini; a bad ini is refused by `--check-config` and the daemon keeps serving; stop lets a 2 s download finish, no SIGKILL; warnings under `journalctl -p warning`; `systemd-analyze security` 5.6 → 1.2 |
| `--daemon` with relative paths (venv and packaged) | served the system's `/lib`; reloads failed | paths resolved before detaching; reloads clean |
| `--daemon` without `--log-file` | every line thrown away | logs to syslog (`/dev/log`), or refuses to start with one line where there is none |
| shelf-cli: Ctrl+C in the shell during `get` / `put` | the session out of step / a 30 s hang | the session is closed and the next command reconnects |
| shelf-cli: `get --continue` after the library file was replaced by a same-size file | a spliced file, exit 0 | refused (the part file records name, size and mtime of its origin) |
| shelf-cli: `get --verify` with a HASH slower than the reply timeout | the complete download was deleted | the wait scales with the size; on a timeout the complete part file is kept |
| shelf-cli: two `get`s to one DEST | shared one part file | the second is refused (`flock`), the first completes byte-exact |
"""


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
    out += HARDENING
    with open(target, "w") as handle:
        handle.write(out)
    print("wrote", target)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
